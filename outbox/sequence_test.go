package outbox_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/reliable-go/reliable/outbox"
	"github.com/reliable-go/reliable/reliabletest"
)

// Issue 15 item 7 (L09): a row ID sequence with CACHE > 1 breaks the
// per-key commit-order argument (each session draws IDs from its own
// block), so Run refuses to start with a clear error. Before, the relay ran.
func TestRelayRefusesACachedRowIDSequence(t *testing.T) {
	t.Parallel()
	db := newTestDB(t, 4)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := db.pool.Exec(ctx, `ALTER TABLE reliable_outbox ALTER COLUMN id SET CACHE 20`); err != nil {
		t.Fatal(err)
	}
	r, err := outbox.NewRelay(db.pool, reliabletest.NewBroker(reliabletest.BrokerOptions{}).Publisher(), testConfig())
	must(t, err)
	rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
	defer rcancel()
	err = r.Run(rctx)
	if !errors.Is(err, outbox.ErrSequenceCached) || !strings.Contains(err.Error(), "CACHE 20") {
		t.Fatalf("Run with CACHE 20: %v, want ErrSequenceCached naming the cache", err)
	}
	t.Logf("Run: %v", err)
	if _, err := db.pool.Exec(ctx, `ALTER TABLE reliable_outbox ALTER COLUMN id SET CACHE 1`); err != nil {
		t.Fatal(err)
	}
	r, err = outbox.NewRelay(db.pool, reliabletest.NewBroker(reliabletest.BrokerOptions{}).Publisher(), testConfig())
	must(t, err)
	rctx, rcancel = context.WithTimeout(ctx, time.Second)
	defer rcancel()
	if err := r.Run(rctx); err != nil {
		t.Fatalf("Run with CACHE 1: %v", err)
	}
}
