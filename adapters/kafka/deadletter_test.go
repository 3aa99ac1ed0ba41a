package kafka

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/reliable-go/reliable"
)

// The dead-letter record keeps a foreign key byte for byte (here Java's
// LongSerializer's 8 bytes), replaces the dlt_ headers of an earlier
// dead-lettering instead of duplicating them, keeps the environment header as
// received, and bounds the cause.
func TestDeadLetterRecord(t *testing.T) {
	s := &Subscriber{prefix: "prod.", group: "prod.kitchen", dltTopic: "prod.orders.dlt"}
	key := string([]byte{0, 0, 0, 0, 0, 0, 0x12, 0x67})
	msg := &reliable.Message{
		ID: "kafka:prod.orders/1/7", Topic: "orders", Key: key,
		Headers:  map[string]string{HeaderDeadLetterCause: "old", reliable.HeaderEnvironment: "staging"},
		Payload:  []byte("p"),
		Delivery: reliable.DeliveryInfo{Partition: 1, Offset: 7, Attempt: 3},
	}
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	rec := s.deadLetterRecord(msg, errors.New(strings.Repeat("x", 10000)), maxCauseBytes, now)
	if k, _ := rec.Key.Encode(); string(k) != key {
		t.Fatalf("record key %x, want %x", k, key)
	}
	if rec.Topic != "prod.orders.dlt" {
		t.Fatalf("topic %q", rec.Topic)
	}
	count := map[string]int{}
	hs := map[string]string{}
	for _, h := range rec.Headers {
		count[string(h.Key)]++
		hs[string(h.Key)] = string(h.Value)
	}
	for k, n := range count {
		if n > 1 {
			t.Errorf("header %s appears %d times", k, n)
		}
	}
	want := map[string]string{
		reliable.HeaderID: msg.ID, reliable.HeaderEnvironment: "staging",
		HeaderDeadLetterTopic: "prod.orders", HeaderDeadLetterPartition: "1", HeaderDeadLetterOffset: "7",
		HeaderDeadLetterAttempts: "3", HeaderDeadLetterGroup: "prod.kitchen", HeaderDeadLetterTime: "2026-01-02T03:04:05Z",
	}
	for k, v := range want {
		if hs[k] != v {
			t.Errorf("header %s = %q, want %q", k, hs[k], v)
		}
	}
	if c := hs[HeaderDeadLetterCause]; len(c) > maxCauseBytes+len("…") || !strings.HasPrefix(c, "xxx") {
		t.Errorf("cause header of %d bytes", len(c))
	}
	if msg.Headers[HeaderDeadLetterCause] != "old" || len(msg.Headers) != 2 {
		t.Errorf("the message's own headers changed: %v", msg.Headers)
	}
}

// A message close to Producer.MaxMessageBytes is dead-lettered whole, with
// its cause cut short, instead of being refused as too large.
func TestDeadLetterCutsCauseNearLimit(t *testing.T) {
	cfg := Config{Brokers: []string{"127.0.0.1:1"}, Producer: ProducerConfig{MaxMessageBytes: 2000}}.withDefaults()
	pub := &Publisher{cfg: cfg, topics: newTopicChecker(nil, cfg.Audit, AuditOff, cfg.Logger)}
	pub.closed.Store(true) // nothing may be sent; the size check comes first
	s := &Subscriber{cfg: cfg, log: testLogger(), dlt: pub, dltTopic: "orders.dlt"}
	msg := &reliable.Message{ID: "m", Topic: "orders", Payload: make([]byte, 1400)}
	cause := errors.New(strings.Repeat("c", 3000))
	if size := recordSize(s.deadLetterRecord(msg, cause, maxCauseBytes, time.Now())); size <= 2000 {
		t.Fatalf("the full cause fits (%d bytes): the test needs a larger one", size)
	}
	if size := recordSize(s.deadLetterRecord(msg, cause, minCauseBytes, time.Now())); size > 2000 {
		t.Fatalf("with the cause cut the record is %d bytes", size)
	}
	// Through DeadLetter: it gets past the size check to the closed producer.
	err := s.DeadLetter(context.Background(), msg, cause)
	if !errors.Is(err, reliable.ErrClosed) {
		t.Fatalf("DeadLetter: %v, want ErrClosed from the producer (not MessageTooLarge)", err)
	}
}
