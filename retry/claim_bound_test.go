package retry_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/consumer"
	"github.com/reliable-go/reliable/idempotency"
	"github.com/reliable-go/reliable/retry"
)

// Issue 15 item 9 (L19, L20): a replay's handler cannot silently outlive its
// dedupe claim. With a 400 ms claim TTL, a handler that runs until its
// context ends is cancelled at 360 ms, before the claim expires, and the
// overrun is a failed attempt. Before, nothing bounded it (the test gave up
// after 3 s, the claim long expired and free for a second delivery).
func TestReplayHandlerIsCancelledBeforeItsClaimExpires(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	must(t, b.table.Park(ctx, orderMsg("order-1", "placed"), nil))
	store := idempotency.NewMemory()
	store.ClaimTTL = 400 * time.Millisecond
	ran := make(chan time.Duration, 10)
	h := reliable.HandlerFunc(func(hctx context.Context, _ *reliable.Message) error {
		start := time.Now()
		select {
		case <-hctx.Done():
			ran <- time.Since(start)
			return hctx.Err()
		case <-time.After(3 * time.Second):
			ran <- time.Since(start)
			return errors.New("not cancelled")
		}
	})
	startRetrier(t, b.table, consumer.Deduplicated(store, h), retry.RetrierConfig{})
	select {
	case d := <-ran:
		if d >= store.ClaimTTL {
			t.Fatalf("handler ran %s, past its %s claim", d, store.ClaimTTL)
		}
		t.Logf("handler cancelled after %s (claim TTL %s)", d.Round(time.Millisecond), store.ClaimTTL)
	case <-ctx.Done():
		t.Fatal("handler not called")
	}
	waitFor(t, 10*time.Second, "the overrun recorded as a failed attempt", func() bool {
		e, err := b.table.List(ctx, retry.ListFilter{})
		return err == nil && len(e) == 1 && e[0].Attempts >= 1
	})
}
