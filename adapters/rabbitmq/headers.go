package rabbitmq

import (
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/reliable-go/reliable"
)

// specVersion is the CloudEvents version the headers follow.
const specVersion = "1.0"

// headerDeliveryCount is the header quorum queues set on a redelivered
// message: how many times it was delivered and returned before.
const headerDeliveryCount = "x-delivery-count"

// maxDeliveryCount caps the x-delivery-count read from a delivery.
const maxDeliveryCount = 1 << 30

// routingKey is the key a message is published with: its Key, so a
// consistent-hash exchange keeps a key on one shard queue.
func routingKey(m *reliable.Message) string { return m.Key }

// toPublishing maps m to an AMQP message: persistent (L02), the ID as the
// message-id property (returns are correlated by it), and the SDK's fields
// as CloudEvents headers so consumers in any language can read them.
func toPublishing(m *reliable.Message) amqp.Publishing {
	h := make(amqp.Table, len(m.Headers)+5)
	for k, v := range m.Headers {
		h[k] = v
	}
	h[reliable.HeaderID] = m.ID
	h[reliable.HeaderSpecVersion] = specVersion
	h[reliable.HeaderTime] = m.Time.UTC().Format(time.RFC3339Nano)
	if m.Key != "" {
		h[reliable.HeaderKey] = m.Key
	}
	if m.Type != "" {
		h[reliable.HeaderType] = m.Type
	}
	return amqp.Publishing{
		Headers:      h,
		DeliveryMode: amqp.Persistent,
		MessageId:    m.ID,
		Type:         m.Type,
		Timestamp:    m.Time,
		Body:         m.Payload,
	}
}

// fromDelivery maps an AMQP delivery back to a message. Headers keep every
// string-valued header except the ones mapped to fields; broker headers with
// other types (x-death, x-delivery-count) are read into DeliveryInfo or
// dropped.
//
// Messages of other clients: without the key header, Key is the routing
// key; without a message-id property or ce_id header, ID stays empty (the
// consumer then handles the message without deduplication).
func fromDelivery(d *amqp.Delivery, topic, queue string) *reliable.Message {
	m := &reliable.Message{
		ID:      d.MessageId,
		Topic:   topic,
		Type:    d.Type,
		Payload: d.Body,
		Time:    d.Timestamp,
	}
	if d.Exchange != "" {
		m.Topic = d.Exchange
	}
	deliveries := int64(0)
	keyed := false
	for k, v := range d.Headers {
		switch k {
		case reliable.HeaderID:
			if s, ok := v.(string); ok && m.ID == "" {
				m.ID = s
			}
			continue
		case reliable.HeaderType:
			if s, ok := v.(string); ok && m.Type == "" {
				m.Type = s
			}
			continue
		case reliable.HeaderKey:
			if s, ok := v.(string); ok {
				m.Key = s
				keyed = true
			}
			continue
		case reliable.HeaderTime:
			if s, ok := v.(string); ok {
				if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
					m.Time = t
				}
			}
			continue
		case reliable.HeaderSpecVersion:
			continue
		case headerDeliveryCount:
			// Any client can set it: keep Attempt at least 1 and clear of
			// overflow.
			deliveries = min(max(toInt64(v), 0), maxDeliveryCount)
			continue
		}
		s, ok := v.(string)
		if !ok {
			continue
		}
		if m.Headers == nil {
			m.Headers = make(map[string]string, len(d.Headers))
		}
		m.Headers[k] = s
	}
	if !keyed {
		// Another client's message: its routing key is its key, as the SDK
		// publishes a message's key as its routing key.
		m.Key = d.RoutingKey
	}
	m.Delivery = reliable.DeliveryInfo{
		Offset:      int64(d.DeliveryTag),
		Queue:       queue,
		Attempt:     int(deliveries) + 1,
		Redelivered: d.Redelivered || deliveries > 0,
		ReceivedAt:  time.Now(),
	}
	return m
}

func toInt64(v any) int64 {
	switch n := v.(type) {
	case int64:
		return n
	case int32:
		return int64(n)
	case int16:
		return int64(n)
	case int8:
		return int64(n)
	case int:
		return int64(n)
	case uint8:
		return int64(n)
	case uint16:
		return int64(n)
	case uint32:
		return int64(n)
	case string:
		i, _ := strconv.ParseInt(n, 10, 64)
		return i
	}
	return 0
}

// Wire limits of AMQP 0-9-1 that a message must respect before it is
// written: amqp091-go shuts the whole connection down when it cannot encode
// a frame, and the broker closes the connection on a frame above frame_max,
// so one bad message would break every publish sharing the connection.
const (
	// maxShortString is the longest AMQP short string: exchange names,
	// routing keys, the message-id and type properties, header names.
	maxShortString = 255
	// defaultFrameMax is RabbitMQ's default frame_max, assumed until a
	// connection negotiated its own.
	defaultFrameMax = 131072
	// headerFrameOverhead is the size of a header frame around its property
	// table: frame header and end, class, weight, body size, flags, the
	// message-id and type length bytes, timestamp, delivery mode, table
	// length.
	headerFrameOverhead = 7 + 1 + 2 + 2 + 8 + 2 + 1 + 1 + 8 + 1 + 4
)

// sdkHeadersSize bounds the encoded size of the ce_ headers toPublishing
// adds to a message besides its own.
func sdkHeadersSize(m *reliable.Message) int {
	field := func(name string, value int) int { return 1 + len(name) + 1 + 4 + value }
	return field(reliable.HeaderID, len(m.ID)) + field(reliable.HeaderSpecVersion, len(specVersion)) +
		field(reliable.HeaderTime, len(time.RFC3339Nano)+6) + field(reliable.HeaderKey, len(m.Key)) +
		field(reliable.HeaderType, len(m.Type))
}

// checkWire returns a *reliable.InvalidMessageError naming each field of m
// that AMQP cannot carry: a short string over 255 bytes, or headers whose
// frame exceeds frameMax. Nothing about m is sent when it fails.
func checkWire(m *reliable.Message, frameMax int) error {
	var problems []string
	short := func(field string, v, as string) {
		if len(v) > maxShortString {
			problems = append(problems, fmt.Sprintf(
				"%s is %d bytes: RabbitMQ carries it as the %s, an AMQP short string of at most %d bytes",
				field, len(v), as, maxShortString))
		}
	}
	short("Topic", m.Topic, "exchange name")
	if !utf8.ValidString(m.Topic) {
		// Routing keys, properties and header names may be any bytes, but
		// the broker closes the whole connection (501 FRAME_ERROR) on an
		// exchange name that is not UTF-8.
		problems = append(problems, fmt.Sprintf("Topic %q is not valid UTF-8: RabbitMQ exchange names must be", m.Topic))
	}
	short("Key", m.Key, "routing key")
	short("ID", m.ID, "message-id property")
	short("Type", m.Type, "type property")
	size := headerFrameOverhead + len(m.ID) + len(m.Type) + sdkHeadersSize(m)
	for k, v := range m.Headers {
		if len(k) > maxShortString {
			problems = append(problems, fmt.Sprintf(
				"a header name is %d bytes (%.32q...): AMQP header names are short strings of at most %d bytes",
				len(k), k, maxShortString))
		}
		size += 1 + len(k) + 1 + 4 + len(v)
	}
	if frameMax <= 0 {
		frameMax = defaultFrameMax
	}
	if size > frameMax {
		problems = append(problems, fmt.Sprintf(
			"headers and properties take about %d bytes: AMQP sends them in one frame, and the connection's frame_max is %d bytes",
			size, frameMax))
	}
	if len(problems) == 0 {
		return nil
	}
	return &reliable.InvalidMessageError{MessageID: m.ID, Problems: problems}
}
