package kafka

import (
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
	rec := s.deadLetterRecord(msg, errors.New(strings.Repeat("x", 10000)), now)
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
