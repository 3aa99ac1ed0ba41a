package outbox_test

import (
	"testing"
	"time"

	"github.com/reliable-go/reliable/internal/testenv"
)

// L03, L08: on the real Kafka, rows whose key (an 8-byte binary long,
// invalid UTF-8, 3 KB), ID, type and header values are arbitrary bytes go
// through Add, the relay and the Kafka producer, and a Kafka subscriber
// reads every byte back, in order per key.
func TestRealKafkaForeignBytesArriveExactly(t *testing.T) {
	t.Parallel()
	k := kafkaKit(t, testenv.Kafka(t))
	db := newTestDB(t, 8)
	ctx := testenv.Context(t, 90*time.Second)
	c := k.consume(t)
	startRelay(t, db.pool, k.publisher(t), testConfig())
	want := map[string][]string{}
	sent := 0
	for name, key := range foreignKeys() {
		a, b := foreignMsg(key, "1"), foreignMsg(key, "2")
		a.Topic, b.Topic = k.topic, k.topic
		if err := addTx(ctx, db.pool, a, b); err != nil {
			t.Fatalf("%s: add: %v", name, err)
		}
		want[key] = []string{a.ID, b.ID}
		sent += 2
	}
	waitFor(t, 60*time.Second, "every message consumed", func() bool { return c.distinct() >= sent })
	c.check(t, want)
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, m := range c.all {
		n := string(m.Payload)
		exp := foreignMsg(m.Key, n)
		if m.ID != exp.ID || m.Type != exp.Type {
			t.Fatalf("key %q: ID %q type %q, want %q %q", trunc(m.Key), m.ID, m.Type, exp.ID, exp.Type)
		}
		for hk, hv := range exp.Headers {
			if m.Headers[hk] != hv {
				t.Fatalf("key %q: header %q = %q, want %q", trunc(m.Key), hk, m.Headers[hk], hv)
			}
		}
	}
}
