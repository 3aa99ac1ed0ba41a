package kafka

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/IBM/sarama"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/ordering"
)

// unconnected returns a Publisher that can prepare records but not send.
func unconnected(cfg Config) *Publisher {
	cfg.Brokers = []string{"127.0.0.1:1"}
	cfg = cfg.withDefaults()
	return &Publisher{cfg: cfg, prefix: cfg.prefix(), topics: newTopicChecker(nil, cfg.Audit, AuditOff, cfg.Logger)}
}

// L13: the size is checked on the record as sarama will encode it (payload,
// key and headers), before anything is handed to sarama.
func TestPrepareRefusesOversizedRecord(t *testing.T) {
	p := unconnected(Config{Producer: ProducerConfig{MaxMessageBytes: 1000}})
	small := &reliable.Message{Topic: "t", Payload: []byte("ok")}
	// The payload alone fits; the headers push the record over the limit.
	big := &reliable.Message{Topic: "t", Payload: bytes.Repeat([]byte("x"), 900),
		Headers: map[string]string{"x-note": string(bytes.Repeat([]byte("n"), 100))}}
	_, err := p.prepare(context.Background(), []*reliable.Message{small, big})
	var tooLarge *reliable.MessageTooLargeError
	if !errors.As(err, &tooLarge) || tooLarge.MessageID != big.ID || tooLarge.Max != 1000 || tooLarge.Size <= 1000 {
		t.Fatalf("prepare: %v, want *reliable.MessageTooLargeError for %s", err, big.ID)
	}
}

func TestPrepareStampsAndPrefixes(t *testing.T) {
	p := unconnected(Config{Environment: "prod"})
	p.topics.ok.Store("prod.orders", struct{}{}) // known: no metadata lookup
	m := &reliable.Message{Topic: "orders", Key: "order-1"}
	recs, err := p.prepare(context.Background(), []*reliable.Message{m})
	if err != nil {
		t.Fatal(err)
	}
	if m.ID == "" || m.Time.IsZero() {
		t.Fatalf("ID %q, time %v not stamped", m.ID, m.Time)
	}
	if recs[0].Topic != "prod.orders" || m.Topic != "orders" {
		t.Fatalf("record topic %q, message topic %q", recs[0].Topic, m.Topic)
	}
	if _, err := p.prepare(context.Background(), []*reliable.Message{{}}); !errors.Is(err, reliable.ErrInvalidMessage) {
		t.Fatalf("message without a topic: %v", err)
	}
	if _, err := p.prepare(context.Background(), []*reliable.Message{nil}); !errors.Is(err, reliable.ErrInvalidMessage) {
		t.Fatalf("nil message: %v", err)
	}
}

// A delivery of a revoked partition must not move any commit position: the
// partition now belongs to another session (or member), which delivers the
// message again.
func TestStaleAckIgnored(t *testing.T) {
	c := &claim{tracker: ordering.NewTracker(10), space: make(chan struct{}, 1)}
	for off := int64(10); off < 13; off++ {
		if err := c.tracker.Track(off); err != nil {
			t.Fatal(err)
		}
		c.outstanding++
	}
	d := reliable.NewDelivery(&reliable.Message{ID: "a"}, &acker{c: c, rec: &sarama.ConsumerMessage{Offset: 10}})
	c.revoked = true
	if err := d.Ack(context.Background()); err != nil {
		t.Fatal(err)
	}
	if pos := c.tracker.CommitPosition(); pos != 10 {
		t.Fatalf("a stale ack moved the commit position to %d", pos)
	}

	c.revoked = false
	live := reliable.NewDelivery(&reliable.Message{ID: "b"}, &acker{c: c, rec: &sarama.ConsumerMessage{Offset: 11}})
	_ = live.Ack(context.Background())
	if pos := c.tracker.CommitPosition(); pos != 10 {
		t.Fatalf("ack of offset 11 passed the incomplete offset 10: %d", pos)
	}
	first := reliable.NewDelivery(&reliable.Message{ID: "c"}, &acker{c: c, rec: &sarama.ConsumerMessage{Offset: 10}})
	_ = first.Ack(context.Background())
	if pos := c.tracker.CommitPosition(); pos != 12 {
		t.Fatalf("commit position %d, want 12", pos)
	}
}

func TestClosedIsPermanent(t *testing.T) {
	if !errors.Is(errClosed, reliable.ErrClosed) || !reliable.IsPermanent(errClosed) {
		t.Fatalf("errClosed = %v: must match ErrClosed and be permanent", errClosed)
	}
}
