package reliable

import (
	"fmt"
	"maps"
	"strconv"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"
)

// Message is one event: what a producer publishes and what a consumer's
// handler receives.
//
// ID, Key and Type travel as broker headers (see [HeaderID]) so a consumer
// written in any language can read them.
type Message struct {
	// ID is globally unique and is the key consumers deduplicate on. When
	// empty, [Message.EnsureID] (called by every publisher) sets a UUIDv7, which
	// sorts by creation time.
	ID string
	// Topic is the Kafka topic or the RabbitMQ routing destination.
	Topic string
	// Key orders and partitions: messages of one key are applied in the order
	// they were published. Use the business entity's ID (the order ID), not a
	// coarse one such as a merchant ID, or one busy key makes a hot partition
	// (L14).
	Key string
	// Type names the event, e.g. "order.paid". Optional.
	Type string
	// Headers are application headers. Names starting with "ce_" and
	// "reliable_" are reserved for the SDK.
	Headers map[string]string
	// Payload is the body. Keep it small: send the ID and status and let the
	// consumer fetch the details (L13).
	Payload []byte
	// Time is when the event happened. Publishers set it to now when zero.
	Time time.Time

	// Delivery describes where the message came from. It is set on messages
	// handed to consumers and ignored when publishing.
	Delivery DeliveryInfo
}

// DeliveryInfo is the broker position and history of a delivered message.
type DeliveryInfo struct {
	// Partition and Offset locate a Kafka record. For RabbitMQ, Partition is 0
	// and Offset is the delivery tag of the channel that delivered it.
	Partition int32
	Offset    int64
	// Queue is the RabbitMQ queue the message was consumed from.
	Queue string
	// Attempt counts handler attempts, starting at 1. Retries from the retry
	// table raise it.
	Attempt int
	// Redelivered is true when the broker says the message may have been
	// delivered before (RabbitMQ's redelivered flag, a Kafka record at or before
	// the last committed offset of a previous session).
	Redelivered bool
	// ReceivedAt is when the subscriber received it.
	ReceivedAt time.Time
}

// EnsureID sets a UUIDv7 ID when m.ID is empty and returns the ID.
func (m *Message) EnsureID() string {
	if m.ID == "" {
		m.ID = NewID()
	}
	return m.ID
}

// NewID returns a new UUIDv7 string: globally unique and sortable by time.
func NewID() string {
	id, err := uuid.NewV7()
	if err != nil {
		// uuid.NewV7 fails only when the system's random source fails;
		// fall back to a v4 ID, which is still unique.
		return uuid.NewString()
	}
	return id.String()
}

// Size is the number of bytes the message occupies on the wire, roughly:
// payload, key, ID, type and headers. Producers compare it with their
// maximum message size before sending.
func (m *Message) Size() int {
	n := len(m.Payload) + len(m.Key) + len(m.ID) + len(m.Type) + len(m.Topic)
	for k, v := range m.Headers {
		n += len(k) + len(v)
	}
	return n
}

// Clone returns a deep copy of m, so a caller may keep or change its copy
// while the publisher retries the original.
func (m *Message) Clone() *Message {
	c := *m
	c.Headers = maps.Clone(m.Headers)
	if m.Payload != nil {
		c.Payload = append([]byte(nil), m.Payload...)
	}
	return &c
}

// Validate reports what makes m unpublishable, or nil. It never looks at the
// payload's content, only its presence in the required fields.
func (m *Message) Validate() error {
	var problems []string
	if m.Topic == "" {
		problems = append(problems, "Topic is empty")
	}
	for k := range m.Headers {
		if k == "" {
			problems = append(problems, "a header name is empty")
		}
	}
	if len(problems) == 0 {
		return nil
	}
	return &InvalidMessageError{MessageID: m.ID, Problems: problems}
}

// String describes the message for logs without its payload or header values,
// which may hold personal data or secrets.
// IDs and keys from other clients may be binary or kilobytes long: they are
// quoted when not printable and cut to 64 bytes.
func (m *Message) String() string {
	return fmt.Sprintf("message{id=%s topic=%s key=%s type=%s bytes=%d}", short(m.ID), m.Topic, short(m.Key), short(m.Type), len(m.Payload))
}

// short renders s for a log line: as is when printable, else quoted, and
// cut to 64 bytes with the full length noted.
func short(s string) string {
	const limit = 64
	cut := s
	if len(cut) > limit {
		cut = cut[:limit]
	}
	printable := utf8.ValidString(cut)
	for _, r := range cut {
		if !printable || !unicode.IsPrint(r) {
			printable = false
			break
		}
	}
	if !printable {
		cut = strconv.Quote(cut)
	}
	if len(s) > limit {
		cut += fmt.Sprintf("...(%d bytes)", len(s))
	}
	return cut
}
