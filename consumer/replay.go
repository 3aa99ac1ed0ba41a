package consumer

import (
	"context"
	"errors"
	"time"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/idempotency"
)

// Deduplicated wraps h so that a message already recorded as done in store is
// skipped, and a message is recorded done only after h succeeded (L20). It is
// the handler to give a retry.Retrier, so that replays from the retry table
// follow the same rules as first deliveries. A nil store returns h.
func Deduplicated(store idempotency.Store, h reliable.Handler) reliable.Handler {
	if store == nil {
		return h
	}
	return reliable.HandlerFunc(func(ctx context.Context, msg *reliable.Message) error {
		status, err := store.Begin(ctx, msg.ID)
		if err != nil {
			return reliable.Retryable(err)
		}
		switch status {
		case idempotency.StatusDone:
			return nil
		case idempotency.StatusInProgress:
			return reliable.RetryAfter(time.Second, errors.New("consumer: message is being handled by another instance"))
		}
		if err := h.Handle(ctx, msg); err != nil {
			if aerr := store.Abort(context.WithoutCancel(ctx), msg.ID); aerr != nil {
				return errors.Join(err, aerr)
			}
			return err
		}
		if err := store.Done(ctx, msg.ID); err != nil {
			return reliable.Retryable(err)
		}
		return nil
	})
}
