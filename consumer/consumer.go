package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
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
	sub         reliable.Subscriber
	handler     reliable.Handler
	cfg         Config
	lanes       atomic.Pointer[ordering.Lanes]
	slots       *ordering.Slots // handler calls at once: Concurrency
	concurrency atomic.Int64    // the latest SetConcurrency, or cfg.Concurrency
	running     atomic.Bool
	stopping    atomic.Bool  // Run's context ended: held keys give up
	keyless     atomic.Int64 // spreads keyless messages over lanes
	retrier     atomic.Pointer[retry.Retrier]

	// keys caches the retry table's blocked keys (see keys.go); nil when
	// the table or the subscriber cannot support it, and then every
	// message asks the table.
	keys        *retry.KeyCache
	loadReq     chan struct{}
	loadStarted atomic.Uint64                 // loads of keys started
	loadDone    atomic.Uint64                 // the latest load of keys that succeeded
	loaded      atomic.Pointer[chan struct{}] // closed when a load succeeds

	blockedMu sync.Mutex
	blocked   map[*job]*BlockedKey
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
	c := &Consumer{sub: sub, handler: h, cfg: cfg.withDefaults(), blocked: make(map[*job]*BlockedKey)}
	c.concurrency.Store(int64(c.cfg.Concurrency))
	c.slots = ordering.NewSlots(c.cfg.Concurrency)
	c.keys = keyCache(sub, c.cfg.RetryTable)
	c.loadReq = make(chan struct{}, 1)
	loaded := make(chan struct{})
	c.loaded.Store(&loaded)
	return c, nil
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
	// Lanes keep each key in sequence; the slots bound the handler calls.
	// A key's store steps (dedupe, retry table, ack) run outside the slots,
	// in its lane, so a key waiting for a round trip keeps its order
	// without taking handler concurrency from the others.
	lanes := ordering.NewLanes(workCtx, ordering.LanesConfig{
		Concurrency: c.cfg.MaxInFlight,
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
	keysDone := c.startKeyCache(workCtx)
	c.cfg.Logger.InfoContext(ctx, "consumer started", slog.String("topic", c.cfg.Topic),
		slog.Int("concurrency", int(c.concurrency.Load())))

	var runErr error
	owned := make(map[string]anchor)
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
			j := &job{d: d, start: time.Now(), keysLoad: c.ownership(owned, d)}
			if err := lanes.Submit(ctx, c.laneOf(d.Message), func(taskCtx context.Context) time.Duration { return c.process(taskCtx, j) }); err != nil {
				break loop // ctx ended while waiting for room; d stays unsettled
			}
		}
	}
	c.stopping.Store(true)
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
	<-keysDone
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
		c.retrier.Store(r)
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

// laneOf returns the lane of msg: its key, so one key runs in sequence. A
// message without a key promises no order, so each gets a lane of its own
// instead of all of them queueing in one.
func (c *Consumer) laneOf(msg *reliable.Message) string {
	if msg.Key != "" {
		return msg.Key
	}
	return "\x00keyless/" + strconv.FormatInt(c.keyless.Add(1), 10)
}

// SetConcurrency changes how many keys are handled at once, while running
// (L16). It takes effect as running handlers return. It is safe to call
// concurrently with Run and from several goroutines.
func (c *Consumer) SetConcurrency(n int) {
	if n < 1 {
		n = 1
	}
	c.concurrency.Store(int64(n))
	c.slots.SetLimit(n)
}

// SetRate changes the handler start rate limit per second; 0 removes it.
func (c *Consumer) SetRate(perSecond float64) {
	if l := c.lanes.Load(); l != nil {
		l.SetRate(perSecond)
	}
}

// stepHook, when set (by the benchmarks), is told how long each store step
// of a delivery took: "begin", "check" and "done".
var stepHook atomic.Pointer[func(step string, d time.Duration)]

// timeStep reports the time since start of step to stepHook, if set.
func timeStep(step string, start time.Time) {
	if f := stepHook.Load(); f != nil {
		(*f)(step, time.Since(start))
	}
}

// settleTimeout bounds the steps that record an outcome after the handler
// ran (done, park, dead-letter, ack). They run on a context that shutdown
// does not cut: a handled message left without its done record would be
// handled a second time after redelivery.
const settleTimeout = 10 * time.Second

// staleCheck is how often a held delivery looks whether it went stale (its
// partition moved to another instance) while it waits for its next try, so
// that a rebalance does not wait out a long backoff.
const staleCheck = 500 * time.Millisecond

// job is one delivery on its way through the pipeline. It outlives the runs
// of a delivery that holds its key.
type job struct {
	d       *reliable.Delivery
	start   time.Time
	attempt int       // handler calls so far
	held    bool      // holds its key, waiting to be tried again
	nextTry time.Time // when a held job is tried again
	blocked bool      // reported as a blocked key
	// keysLoad is the load of the blocked-key cache that must have
	// succeeded before the cache may answer for this delivery's key.
	keysLoad uint64
}

// process runs the pipeline for one delivery and settles it. It returns a
// positive delay when the delivery holds its key and must run again, or
// ordering.Abandon when it is left for the broker to deliver again.
func (c *Consumer) process(ctx context.Context, j *job) time.Duration {
	msg := j.d.Message
	stopping := c.stopping.Load()
	if ctx.Err() != nil || j.d.Stale() || (j.held && stopping) || (ordering.AfterAbandon(ctx) && stopping) {
		// The consumer stops with the key held or given up, or another
		// member owns the delivery now: leave it, and the key's queued
		// deliveries, to be delivered again, so nothing of the key is
		// applied out of order. (A delivery queued behind a stale one that is
		// not stale itself came after the partition or channel changed
		// hands: it is the redelivered copy, and goes on in order.)
		c.leave(j)
		return ordering.Abandon
	}
	if j.held {
		if wait := time.Until(j.nextTry); wait > 0 {
			return min(wait, staleCheck)
		}
	}
	outcome, again, herr := c.outcome(ctx, j)
	switch outcome {
	case OutcomeHeld:
	case OutcomeUnsettled:
		c.leave(j)
	default:
		c.unblock(j)
		settle, cancel := context.WithTimeout(context.WithoutCancel(ctx), settleTimeout)
		if err := j.d.Ack(settle); err != nil {
			// The broker will deliver it again; dedupe absorbs the repeat.
			c.cfg.Logger.Warn("consumer: ack failed", slog.String("message_id", msg.ID), slog.String("error", err.Error()))
		}
		cancel()
	}
	if c.cfg.Observe != nil {
		c.cfg.Observe(Event{Message: msg, Outcome: outcome, Err: herr, Duration: time.Since(j.start),
			NotDeduplicated: c.cfg.Dedupe != nil && msg.ID == ""})
	}
	switch outcome {
	case OutcomeHeld:
		j.held = true
		j.nextTry = time.Now().Add(again)
		return min(again, staleCheck)
	case OutcomeUnsettled:
		return ordering.Abandon
	}
	return 0
}

// leave gives up on a delivery without settling it: the broker delivers it
// again. A stale delivery is released (nacked, which for a revoked Kafka
// partition only stops the drain waiting for it); otherwise it stays
// unacked until the subscription closes, so that RabbitMQ requeues it with
// the key's later deliveries.
func (c *Consumer) leave(j *job) {
	c.unblock(j)
	if j.d.Stale() {
		_ = j.d.Nack(context.Background())
	}
}

// outcome decides and makes durable what becomes of the delivery, and
// returns it with the handler's error, if any. It returns OutcomeUnsettled
// when the consumer stopped before an outcome was durable, and OutcomeHeld
// with the delay before the next attempt when the message must be tried
// again before its key's later messages.
func (c *Consumer) outcome(ctx context.Context, j *job) (Outcome, time.Duration, error) {
	msg := j.d.Message
	log := c.cfg.Logger.With(slog.String("message_id", msg.ID), slog.String("key", msg.Key),
		slog.String("topic", msg.Topic), slog.Int("attempt", msg.Delivery.Attempt))

	if err := reliable.CheckEnvironment(msg, c.cfg.Environment); err != nil {
		return c.deadLetter(ctx, log, j, err)
	}

	claimed := false
	if c.cfg.Dedupe != nil && msg.ID == "" {
		// A message from another client may carry no ID at all. It cannot be
		// deduplicated, so it is handled at least once (Event.NotDeduplicated).
		log.Warn("consumer: message without an ID handled without deduplication")
	} else if c.cfg.Dedupe != nil {
		var status idempotency.Status
		began := time.Now()
		err := c.until(ctx, log, "dedupe begin", func() (err error) {
			status, err = c.cfg.Dedupe.Begin(ctx, msg.ID)
			return err
		})
		timeStep("begin", began)
		if err != nil {
			if ctx.Err() != nil {
				return OutcomeUnsettled, 0, nil
			}
			return c.deadLetter(ctx, log, j, fmt.Errorf("consumer: the dedupe store refuses the message ID: %w", err))
		}
		switch status {
		case idempotency.StatusDone:
			log.Debug("duplicate skipped")
			return OutcomeDuplicate, 0, nil
		case idempotency.StatusInProgress:
			// Another instance is handling it right now (a rebalance moved the
			// partition). Let it finish: park, or hold the key and look again.
			return c.retryLater(ctx, log, j, errors.New("consumer: message is being handled by another instance"))
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
		checked := time.Now()
		err := c.until(ctx, log, "retry table check", func() (err error) {
			blocked, err = c.isBlocked(ctx, j)
			return err
		})
		timeStep("check", checked)
		if err != nil {
			release()
			if ctx.Err() != nil {
				return OutcomeUnsettled, 0, nil
			}
			// The table cannot look the key up, so it cannot hold the message
			// either: keep the key waiting, visibly.
			return c.hold(log, j, fmt.Errorf("consumer: the retry table refuses the key: %w", err), true)
		}
		if blocked {
			release()
			// A nil cause: the message did not fail, it waits its turn. If the
			// retrier emptied the key meanwhile, it is due at once.
			return c.park(ctx, log, j, nil)
		}
	}

	j.attempt++
	if msg.Delivery.Attempt < j.attempt {
		msg.Delivery.Attempt = j.attempt
	}
	if err := c.slots.Acquire(ctx); err != nil {
		release()
		return OutcomeUnsettled, 0, nil
	}
	herr := c.handle(ctx, msg)
	c.slots.Release()
	if herr == nil {
		if claimed {
			settle, cancel := context.WithTimeout(context.WithoutCancel(ctx), settleTimeout)
			defer cancel()
			doneAt := time.Now()
			err := c.until(settle, log, "dedupe done", func() error { return c.cfg.Dedupe.Done(settle, msg.ID) })
			timeStep("done", doneAt)
			if err != nil {
				log.Error("consumer: handled, but not recorded as done; a redelivery will be handled again", slog.String("error", err.Error()))
				return OutcomeUnsettled, 0, nil
			}
		}
		return OutcomeHandled, 0, nil
	}
	release()
	if ctx.Err() != nil {
		return OutcomeUnsettled, 0, herr
	}
	if isPoison(herr) {
		log.Error("handler failed permanently", slog.String("error", herr.Error()))
		return c.deadLetter(ctx, log, j, herr)
	}
	if c.cfg.RetryTable == nil {
		return c.hold(log, j, herr, false)
	}
	log.Warn("handler failed, parking in the retry table", slog.String("error", herr.Error()))
	return c.park(ctx, log, j, herr)
}

// isPoison reports whether err says the message itself can never be
// handled. A closed publisher (the application stopping its producer while
// a handler still publishes) is permanent for the call, not for the
// message.
func isPoison(err error) bool {
	return reliable.IsPermanent(err) && !errors.Is(err, reliable.ErrClosed)
}

// hold keeps the message in its key's lane to be tried again after a
// backoff, ahead of the key's later messages, which wait (L09). Other keys
// go on: a held key takes no concurrency slot while it waits. Once the
// message failed InlineAttempts times (at once when nothing can ever change
// without an operator, such as a poison message with no dead-letter path),
// its key is reported as blocked: an Error log and Consumer.Blocked.
func (c *Consumer) hold(log *slog.Logger, j *job, cause error, stuck bool) (Outcome, time.Duration, error) {
	delay := max(c.cfg.Backoff.Delay(j.attempt), reliable.RetryDelay(cause))
	if !j.blocked && (stuck || j.attempt >= c.cfg.InlineAttempts) {
		j.blocked = true
		c.block(j, cause)
		log.Error("consumer: key blocked until this message succeeds; its later messages wait",
			slog.String("error", cause.Error()), slog.Duration("next_try", delay))
	} else {
		log.Warn("consumer: message failed, its key waits for the next try",
			slog.String("error", cause.Error()), slog.Duration("next_try", delay))
	}
	if j.blocked {
		c.noteBlocked(j, cause)
	}
	return OutcomeHeld, delay, cause
}

// handle calls the handler, turning a panic into a retryable error so one
// bad message cannot take the consumer down.
func (c *Consumer) handle(ctx context.Context, msg *reliable.Message) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = reliable.Retryable(fmt.Errorf("consumer: handler panicked: %v", r))
		}
	}()
	if c.cfg.HandlerTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.cfg.HandlerTimeout)
		defer cancel()
	}
	return c.handler.Handle(ctx, msg)
}

// park stores the message in the retry table. It runs after the handler
// may have had effects, so shutdown does not cut it short.
func (c *Consumer) park(ctx context.Context, log *slog.Logger, j *job, cause error) (Outcome, time.Duration, error) {
	settle, cancel := context.WithTimeout(context.WithoutCancel(ctx), settleTimeout)
	defer cancel()
	parkIn := c.cfg.RetryTable.Park
	if c.keys != nil {
		parkIn = c.keys.Park
	}
	if err := c.until(settle, log, "retry table park", func() error { return parkIn(settle, j.d.Message, cause) }); err != nil {
		if reliable.IsPermanent(err) {
			return c.hold(log, j, fmt.Errorf("consumer: the retry table refuses the message: %w", err), true)
		}
		return OutcomeUnsettled, 0, cause
	}
	return OutcomeParked, 0, cause
}

// retryLater parks the message when there is a retry table, else holds its
// key and tries again later.
func (c *Consumer) retryLater(ctx context.Context, log *slog.Logger, j *job, cause error) (Outcome, time.Duration, error) {
	if c.cfg.RetryTable != nil {
		return c.park(ctx, log, j, cause)
	}
	return c.hold(log, j, reliable.RetryAfter(time.Second, cause), false)
}

// deadLetter stores the message on the dead-letter path with its cause.
// Without one nothing is skipped: the message holds its key, visibly, until
// it succeeds or an operator acts. A message from another environment is
// held the same way, never acked unhandled: acking it would take it from the
// environment it belongs to, should the groups be shared by mistake (L07).
func (c *Consumer) deadLetter(ctx context.Context, log *slog.Logger, j *job, cause error) (Outcome, time.Duration, error) {
	if c.cfg.DeadLetter == nil {
		return c.hold(log, j, cause, true)
	}
	settle, cancel := context.WithTimeout(context.WithoutCancel(ctx), settleTimeout)
	defer cancel()
	deadLetterIn := func() error { return c.cfg.DeadLetter.DeadLetter(settle, j.d.Message, cause) }
	if c.keys != nil {
		// Whatever the dead-letter path is, it may block the key in the
		// table (a wrapper of it, another Table value): mark it around the
		// store so the key's next message asks the table.
		store := deadLetterIn
		deadLetterIn = func() error { return c.keys.Marking(j.d.Message, store) }
	}
	if err := c.until(settle, log, "dead letter", deadLetterIn); err != nil {
		if reliable.IsPermanent(err) {
			return c.hold(log, j, fmt.Errorf("consumer: the dead-letter path refuses the message: %w (cause: %w)", err, cause), true)
		}
		return OutcomeUnsettled, 0, cause
	}
	return OutcomeDeadLettered, 0, cause
}

// until retries op with backoff until it succeeds, fails permanently (a
// store refusing the message's bytes: that error is returned) or ctx ends.
// Store outages hold up only this key's lane; the delivery stays unsettled.
func (c *Consumer) until(ctx context.Context, log *slog.Logger, what string, op func() error) error {
	for attempt := 1; ; attempt++ {
		err := op()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if reliable.IsPermanent(err) || errors.Is(err, idempotency.ErrEmptyID) {
			log.Error("consumer: "+what+" failed permanently", slog.String("error", err.Error()))
			return err
		}
		delay := c.cfg.Backoff.Delay(attempt)
		log.Warn("consumer: "+what+" failed, retrying", slog.Int("try", attempt), slog.Duration("backoff", delay), slog.String("error", err.Error()))
		if err := reliable.Sleep(ctx, delay); err != nil {
			return err
		}
	}
}
