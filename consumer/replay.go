package consumer

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/idempotency"
	"github.com/reliable-go/reliable/retry"
)

// replayStoreBackoff spaces a replay's retries of dedupe store calls.
var replayStoreBackoff = reliable.Backoff{Initial: 50 * time.Millisecond, Max: 2 * time.Second}

// replayDoneTimeout bounds recording a successful replay as done; it runs on
// a context that neither shutdown nor a lost lease cancels, since the
// handler's effects are applied.
const replayDoneTimeout = 30 * time.Second

// Deduplicated wraps h so that a message already recorded as done in store is
// skipped, and a message is recorded done only after h succeeded (L20). It is
// the handler to give a retry.Retrier, so that replays from the retry table
// follow the same rules as first deliveries. A nil store returns h.
//
// As on the live path, a store failure is never charged to the message: Begin
// is retried in place with backoff until it answers or ctx ends (the retrier
// does not count an attempt whose context ended), a claim another instance
// holds is waited for in place, and Done is retried for up to 30 s on a
// context that ctx's end does not cut; if it still fails, the error is marked
// retry.StoreUnavailable, which the retrier reschedules without counting.
// A store error that is permanent (the store refuses the message ID) is
// returned as is. A message without an ID is handled without deduplication,
// as the consumer does.
//
// The handler cannot silently outlive its claim: when the store reports its
// claim TTL (idempotency.ClaimReporter, as the SDK's stores do), the
// handler's context ends at nine tenths of it, so a second delivery that
// takes the expired claim does not run beside it; the timeout counts as a
// failed attempt.
func Deduplicated(store idempotency.Store, h reliable.Handler) reliable.Handler {
	if store == nil {
		return h
	}
	return reliable.HandlerFunc(func(ctx context.Context, msg *reliable.Message) error {
		if msg.ID == "" {
			return h.Handle(ctx, msg)
		}
		var status idempotency.Status
		for wait := 1; ; wait++ {
			if err := storeUntil(ctx, func() (err error) { status, err = store.Begin(ctx, msg.ID); return err }); err != nil {
				return err
			}
			if status != idempotency.StatusInProgress {
				break
			}
			// Another instance is handling it: let it finish (or its claim
			// expire) without charging this entry an attempt.
			if err := reliable.Sleep(ctx, replayStoreBackoff.Delay(wait)); err != nil {
				return fmt.Errorf("consumer: message is being handled by another instance: %w", err)
			}
		}
		if status == idempotency.StatusDone {
			return nil
		}
		hctx, cancel := handlerContext(ctx, store)
		err := h.Handle(hctx, msg)
		cancel()
		if err != nil {
			if aerr := store.Abort(context.WithoutCancel(ctx), msg.ID); aerr != nil {
				return errors.Join(err, aerr)
			}
			return err
		}
		settle, cancel := context.WithTimeout(context.WithoutCancel(ctx), replayDoneTimeout)
		defer cancel()
		if err := storeUntil(settle, func() error { return store.Done(settle, msg.ID) }); err != nil {
			if reliable.IsPermanent(err) {
				return err
			}
			return retry.StoreUnavailable(fmt.Errorf("consumer: handled, but not recorded as done: %w", err))
		}
		return nil
	})
}

// handlerContext bounds the handler's run below the store's claim TTL.
func handlerContext(ctx context.Context, store idempotency.Store) (context.Context, context.CancelFunc) {
	cr, ok := store.(idempotency.ClaimReporter)
	if !ok || cr.ClaimDuration() <= 0 {
		return ctx, func() {}
	}
	d := cr.ClaimDuration()
	return context.WithTimeout(ctx, d-d/10)
}

// storeUntil retries op with backoff until it succeeds, fails permanently
// (returned as is) or ctx ends (ctx's error, joined with op's last one).
func storeUntil(ctx context.Context, op func() error) error {
	for attempt := 1; ; attempt++ {
		err := op()
		if err == nil {
			return nil
		}
		if reliable.IsPermanent(err) || errors.Is(err, idempotency.ErrEmptyID) {
			return err
		}
		if serr := reliable.Sleep(ctx, replayStoreBackoff.Delay(attempt)); serr != nil {
			return errors.Join(serr, err)
		}
	}
}
