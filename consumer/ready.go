package consumer

import (
	"context"
	"errors"
	"fmt"
)

// ReadinessReporter is implemented by subscribers and stores that can tell
// whether they reach their broker or database. The Kafka and RabbitMQ
// subscribers and the SDK's stores implement it.
type ReadinessReporter interface {
	Ready(ctx context.Context) error
}

// Ready returns nil while the consumer consumes, else why not: not started,
// shutting down, or its subscriber, dedupe store, retry table or retrier
// cannot reach the broker or database (when they report it, see
// ReadinessReporter).
// Blocked keys do not make a consumer unready: restarting it would not
// unblock them (see Blocked). Use it for a readiness probe, for example
// through service.Group.
func (c *Consumer) Ready(ctx context.Context) error {
	switch {
	case !c.running.Load():
		return errors.New("consumer: not running")
	case c.stopping.Load():
		return errors.New("consumer: shutting down")
	}
	var errs []error
	check := func(what string, v any) {
		if r, ok := v.(ReadinessReporter); ok {
			if err := r.Ready(ctx); err != nil {
				errs = append(errs, fmt.Errorf("consumer: %s: %w", what, err))
			}
		}
	}
	check("subscriber", c.sub)
	check("dedupe store", c.cfg.Dedupe)
	check("retry table", c.cfg.RetryTable)
	if r := c.retrier.Load(); r != nil {
		check("retrier", r)
	}
	return errors.Join(errs...)
}
