package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/idempotency"
	"github.com/reliable-go/reliable/ordering"
	"github.com/reliable-go/reliable/retry"
)

// Consumer consumes one topic through the pipeline described in the package
// documentation.
type Consumer struct {
	sub     reliable.Subscriber
	handler reliable.Handler
	cfg     Config
	lanes   atomic.Pointer[ordering.Lanes]
	running atomic.Bool
}

// New returns a consumer that handles cfg.Topic's messages from sub with h.
// It refuses an invalid config with a *reliable.ConfigError listing every
// problem.
func New(sub reliable.Subscriber, h reliable.Handler, cfg Config) (*Consumer, error) {
	var p reliable.Problems
	p.Addf(sub == nil, "subscriber is nil")
	p.Addf(h == nil, "handler is nil")
	if err := cfg.Validate(); err != nil {
		var ce *reliable.ConfigError
		errors.As(err, &ce)
		for _, s := range ce.Problems {
			p.Addf(true, "%s", s)
		}
	}
	if err := p.Err("consumer"); err != nil {
		return nil, err
	}
	return &Consumer{sub: sub, handler: h, cfg: cfg.withDefaults()}, nil
}

// Run consumes until ctx ends, then stops taking deliveries, waits up to
// ShutdownTimeout for in-flight ones, and closes the subscriber (which
// commits what was acked). It returns nil after a shutdown caused by ctx, or
// the error that stopped it. Run may be called once.
func (c *Consumer) Run(ctx context.Context) error {
	if !c.running.CompareAndSwap(false, true) {
		return errors.New("consumer: Run called twice")
	}
	// In-flight work and the subscription outlive ctx by up to
	// ShutdownTimeout, so that finished work is acked and committed.
	workCtx, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	deliveries, err := c.sub.Subscribe(workCtx, c.cfg.Topic)
	if err != nil {
		return fmt.Errorf("consumer: subscribe to %s: %w", c.cfg.Topic, err)
	}
	lanes := ordering.NewLanes(workCtx, ordering.LanesConfig{
		Concurrency: c.cfg.Concurrency,
		MaxInFlight: c.cfg.MaxInFlight,
		Rate:        c.cfg.Rate,
	})
	c.lanes.Store(lanes)
	retrierDone, err := c.startRetrier(ctx)
	if err != nil {
		cancelWork()
		_ = c.sub.Close()
		return err
	}
	c.cfg.Logger.InfoContext(ctx, "consumer started", slog.String("topic", c.cfg.Topic),
		slog.Int("concurrency", c.cfg.Concurrency))

	var runErr error
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case d, ok := <-deliveries:
			if !ok {
				if ctx.Err() == nil {
					runErr = fmt.Errorf("consumer: subscription to %s ended", c.cfg.Topic)
				}
				break loop
			}
			if err := lanes.Submit(ctx, d.Message.Key, func(taskCtx context.Context) { c.process(taskCtx, d) }); err != nil {
				break loop // ctx ended while waiting for room; d stays unsettled
			}
		}
	}
	lanes.Close()
	drainCtx, cancelDrain := context.WithTimeout(workCtx, c.cfg.ShutdownTimeout)
	if err := lanes.Wait(drainCtx); err != nil {
		c.cfg.Logger.Warn("consumer: shutdown timeout, unfinished deliveries will be redelivered",
			slog.String("topic", c.cfg.Topic), slog.Int("in_flight", lanes.InFlight()))
	}
	cancelDrain()
	cancelWork()
	if err := c.sub.Close(); err != nil && runErr == nil {
		runErr = fmt.Errorf("consumer: close subscriber: %w", err)
	}
	<-retrierDone
	return runErr
}

// startRetrier runs the retry table's retrier until ctx ends, replaying
// through the same handler and dedupe store as first deliveries. The
// returned channel closes when it has stopped.
func (c *Consumer) startRetrier(ctx context.Context) (<-chan struct{}, error) {
	done := make(chan struct{})
	h := Deduplicated(c.cfg.Dedupe, reliable.HandlerFunc(c.handle))
	var run func() error
	switch t := c.cfg.RetryTable.(type) {
	case nil:
	case *retry.Table:
		if c.cfg.DisableRetrier {
			break
		}
		r, err := retry.NewRetrier(t, h, c.cfg.Retrier)
		if err != nil {
			return nil, fmt.Errorf("consumer: %w", err)
		}
		run = func() error { return r.Run(ctx) }
	case Replayer:
		if !c.cfg.DisableRetrier {
			run = func() error { return t.Replay(ctx, h) }
		}
	}
	if run == nil {
		close(done)
		return done, nil
	}
	go func() {
		defer close(done)
		if err := run(); err != nil && ctx.Err() == nil {
			c.cfg.Logger.Error("consumer: retrier stopped", slog.String("error", err.Error()))
		}
	}()
	return done, nil
}

// SetConcurrency changes how many keys are handled at once, while running
// (L16). It takes effect as running handlers return.
func (c *Consumer) SetConcurrency(n int) {
	if l := c.lanes.Load(); l != nil {
		l.SetConcurrency(n)
	}
	c.cfg.Concurrency = n
}

// SetRate changes the handler start rate limit per second; 0 removes it.
func (c *Consumer) SetRate(perSecond float64) {
	if l := c.lanes.Load(); l != nil {
		l.SetRate(perSecond)
	}
}

// process runs the pipeline for one delivery and settles it.
func (c *Consumer) process(ctx context.Context, d *reliable.Delivery) {
	start := time.Now()
	msg := d.Message
	outcome, herr := c.outcome(ctx, msg)
	switch outcome {
	case OutcomeUnsettled:
		if ctx.Err() == nil {
			if err := d.Nack(ctx); err != nil {
				c.cfg.Logger.Warn("consumer: nack failed", slog.String("message_id", msg.ID), slog.String("error", err.Error()))
			}
		}
	default:
		if err := d.Ack(ctx); err != nil {
			// The broker will deliver it again; dedupe absorbs the repeat.
			c.cfg.Logger.Warn("consumer: ack failed", slog.String("message_id", msg.ID), slog.String("error", err.Error()))
		}
	}
	if c.cfg.Observe != nil {
		c.cfg.Observe(Event{Message: msg, Outcome: outcome, Err: herr, Duration: time.Since(start)})
	}
}

// outcome decides and makes durable what becomes of msg. It returns
// OutcomeUnsettled when ctx ended before an outcome was durable.
func (c *Consumer) outcome(ctx context.Context, msg *reliable.Message) (Outcome, error) {
	log := c.cfg.Logger.With(slog.String("message_id", msg.ID), slog.String("key", msg.Key),
		slog.String("topic", msg.Topic), slog.Int("attempt", msg.Delivery.Attempt))

	if err := reliable.CheckEnvironment(msg, c.cfg.Environment); err != nil {
		return c.deadLetter(ctx, log, msg, err), err
	}

	claimed := false
	if c.cfg.Dedupe != nil {
		var status idempotency.Status
		if err := c.until(ctx, log, "dedupe begin", func() (err error) {
			status, err = c.cfg.Dedupe.Begin(ctx, msg.ID)
			return err
		}); err != nil {
			return OutcomeUnsettled, nil
		}
		switch status {
		case idempotency.StatusDone:
			log.Debug("duplicate skipped")
			return OutcomeDuplicate, nil
		case idempotency.StatusInProgress:
			// Another instance is handling it right now (a rebalance moved the
			// partition). Let it finish: park or redeliver later.
			return c.retryLater(ctx, log, msg, errors.New("consumer: message is being handled by another instance")), nil
		}
		claimed = true
	}
	release := func() {
		if claimed {
			if err := c.cfg.Dedupe.Abort(context.WithoutCancel(ctx), msg.ID); err != nil {
				log.Warn("dedupe abort failed; the claim will expire", slog.String("error", err.Error()))
			}
		}
	}

	if c.cfg.RetryTable != nil {
		var blocked bool
		if err := c.until(ctx, log, "retry table check", func() (err error) {
			blocked, err = c.cfg.RetryTable.Blocked(ctx, msg.Key)
			return err
		}); err != nil {
			release()
			return OutcomeUnsettled, nil
		}
		if blocked {
			release()
			// A nil cause: the message did not fail, it waits its turn. If the
			// retrier emptied the key meanwhile, it is due at once.
			return c.park(ctx, log, msg, nil), nil
		}
	}

	attempts := 1
	if c.cfg.RetryTable == nil {
		attempts = c.cfg.InlineAttempts
	}
	var herr error
	for attempt := 1; attempt <= attempts; attempt++ {
		if msg.Delivery.Attempt < attempt {
			msg.Delivery.Attempt = attempt
		}
		herr = c.handle(ctx, msg)
		if herr == nil || reliable.IsPermanent(herr) || attempt == attempts {
			break
		}
		delay := max(c.cfg.Backoff.Delay(attempt), reliable.RetryDelay(herr))
		log.Warn("handler failed, retrying inline", slog.String("error", herr.Error()), slog.Duration("backoff", delay))
		if reliable.Sleep(ctx, delay) != nil {
			release()
			return OutcomeUnsettled, herr
		}
	}
	if herr == nil {
		if claimed {
			if err := c.until(ctx, log, "dedupe done", func() error { return c.cfg.Dedupe.Done(ctx, msg.ID) }); err != nil {
				return OutcomeUnsettled, nil
			}
		}
		return OutcomeHandled, nil
	}
	release()
	if ctx.Err() != nil {
		return OutcomeUnsettled, herr
	}
	if reliable.IsPermanent(herr) || c.cfg.RetryTable == nil {
		log.Error("handler failed permanently", slog.String("error", herr.Error()))
		return c.deadLetter(ctx, log, msg, herr), herr
	}
	log.Warn("handler failed, parking in the retry table", slog.String("error", herr.Error()))
	return c.park(ctx, log, msg, herr), herr
}

// handle calls the handler, turning a panic into a retryable error so one
// bad message cannot take the consumer down.
func (c *Consumer) handle(ctx context.Context, msg *reliable.Message) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = reliable.Retryable(fmt.Errorf("consumer: handler panicked: %v", r))
		}
	}()
	return c.handler.Handle(ctx, msg)
}

func (c *Consumer) park(ctx context.Context, log *slog.Logger, msg *reliable.Message, cause error) Outcome {
	if err := c.until(ctx, log, "retry table park", func() error { return c.cfg.RetryTable.Park(ctx, msg, cause) }); err != nil {
		return OutcomeUnsettled
	}
	return OutcomeParked
}

// retryLater parks msg when there is a retry table, else leaves it for the
// broker to redeliver.
func (c *Consumer) retryLater(ctx context.Context, log *slog.Logger, msg *reliable.Message, cause error) Outcome {
	if c.cfg.RetryTable != nil {
		return c.park(ctx, log, msg, cause)
	}
	_ = reliable.Sleep(ctx, c.cfg.Backoff.Delay(1))
	return OutcomeUnsettled
}

func (c *Consumer) deadLetter(ctx context.Context, log *slog.Logger, msg *reliable.Message, cause error) Outcome {
	if c.cfg.DeadLetter == nil {
		if errors.Is(cause, reliable.ErrWrongEnvironment) {
			log.Error("message from another environment acked without handling", slog.String("reason", cause.Error()))
			return OutcomeDeadLettered
		}
		log.Error("no dead-letter path configured: nacking so the broker's policy applies", slog.String("reason", cause.Error()))
		return OutcomeUnsettled
	}
	if err := c.until(ctx, log, "dead letter", func() error { return c.cfg.DeadLetter.DeadLetter(ctx, msg, cause) }); err != nil {
		return OutcomeUnsettled
	}
	return OutcomeDeadLettered
}

// until retries op with backoff until it succeeds or ctx ends. Store
// outages hold up only this key's lane; the delivery stays unsettled.
func (c *Consumer) until(ctx context.Context, log *slog.Logger, what string, op func() error) error {
	for attempt := 1; ; attempt++ {
		err := op()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		delay := c.cfg.Backoff.Delay(attempt)
		log.Warn("consumer: "+what+" failed, retrying", slog.Int("try", attempt), slog.Duration("backoff", delay), slog.String("error", err.Error()))
		if err := reliable.Sleep(ctx, delay); err != nil {
			return err
		}
	}
}
