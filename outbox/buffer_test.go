package outbox_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/outbox"
	"github.com/reliable-go/reliable/reliabletest"
)

// slowPublisher delays every Publish, so lanes fill their read-ahead while
// the relay waits on the broker.
type slowPublisher struct {
	reliable.Publisher
	delay time.Duration
}

func (p *slowPublisher) Publish(ctx context.Context, msgs ...*reliable.Message) error {
	time.Sleep(p.delay)
	return p.Publisher.Publish(ctx, msgs...)
}

// L05, L23: a relay draining a backlog over many keys holds at most
// MaxBufferedRows rows in memory, although MaxKeys x Window would allow far
// more, and still delivers every row once in order per key.
func TestRelayHoldsAtMostMaxBufferedRows(t *testing.T) {
	t.Parallel()
	db := newTestDB(t, 8)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	const keys, perKey = 100, 30
	var msgs []*reliable.Message
	for n := range perKey {
		for k := range keys {
			msgs = append(msgs, msg("orders", fmt.Sprintf("order-%d", k), fmt.Sprint(n)))
		}
	}
	if err := addTx(ctx, db.pool, msgs...); err != nil {
		t.Fatal(err)
	}

	broker := reliabletest.NewBroker(reliabletest.BrokerOptions{})
	broker.CreateTopic("orders")
	cfg := testConfig()
	cfg.MaxKeys = 64 // 64 x 32 = 2048 rows of read-ahead without a budget
	cfg.MaxBufferedRows = 100
	relay := startRelay(t, db.pool, &slowPublisher{Publisher: broker.Publisher(), delay: 5 * time.Millisecond}, cfg)

	var peak int
	var mu sync.Mutex
	waitFor(t, 80*time.Second, "every row published", func() bool {
		s := relay.Stats()
		mu.Lock()
		peak = max(peak, s.Buffered)
		mu.Unlock()
		if s.Buffered > cfg.MaxBufferedRows {
			t.Fatalf("relay holds %d rows, budget %d", s.Buffered, cfg.MaxBufferedRows)
		}
		return s.Marked >= keys*perKey
	})
	if peak == 0 {
		t.Fatal("never saw a buffered row: the sampling proves nothing")
	}
	got, dups := firstSeen(broker.Messages("orders"))
	want, _ := firstSeen(msgs)
	for k, ids := range want {
		if fmt.Sprint(got[k]) != fmt.Sprint(ids) {
			t.Fatalf("key %s published as %v, want %v", k, got[k], ids)
		}
	}
	st, err := outbox.ReadStatus(ctx, db.pool)
	if err != nil || st.Pending != 0 {
		t.Fatalf("status %+v, %v: want nothing pending", st, err)
	}
	t.Logf("%d rows over %d keys: peak %d rows buffered (budget %d), %d repeats", keys*perKey, keys, peak, cfg.MaxBufferedRows, dups)
}
