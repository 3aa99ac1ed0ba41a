package consumer

import (
	"context"
	"log/slog"
	"time"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/idempotency"
	"github.com/reliable-go/reliable/retry"
)

// RetryTable is the ordered per-key retry table the consumer parks messages
// in. *retry.Table implements it.
type RetryTable interface {
	// Blocked reports whether key has entries waiting, so a new message of
	// the key must queue behind them.
	Blocked(ctx context.Context, key string) (bool, error)
	// Park stores msg behind the key's entries. When it returns nil the entry
	// is committed and the delivery may be acked.
	Park(ctx context.Context, msg *reliable.Message, cause error) error
	// DeadLetter stores msg as dead with cause as the reason.
	DeadLetter(ctx context.Context, msg *reliable.Message, cause error) error
}

// Replayer is a retry table that replays its own entries; Run starts Replay
// with the consumer's deduplicated handler. The in-memory
// reliabletest.RetryTable implements it; *retry.Table gets a retry.Retrier.
type Replayer interface {
	Replay(ctx context.Context, h reliable.Handler) error
}

// DeadLetterer receives messages that must never be handled: poison
// messages and messages from another environment.
type DeadLetterer interface {
	DeadLetter(ctx context.Context, msg *reliable.Message, cause error) error
}

// Config configures a Consumer. Only Topic is required; the zero value of
// every other field is the safe default.
type Config struct {
	// Topic is the topic (Kafka) or topic exchange (RabbitMQ) to consume.
	Topic string
	// Environment, when set, refuses messages whose environment header
	// differs or is missing (L07); see reliable.CheckEnvironment for the
	// rule on messages from non-SDK producers.
	Environment string
	// Dedupe skips messages already handled (L20). Optional but strongly
	// recommended: every broker redelivers after a crash.
	Dedupe idempotency.Store
	// RetryTable parks retryable failures and the messages queued behind them
	// (L09-L11). Without one, a failed message is retried in its key's lane
	// with Backoff until it succeeds, and the key's later messages wait
	// behind it; other keys go on (see InlineAttempts). With a *retry.Table
	// and a subscriber that reports stale deliveries (StaleReporting), Run
	// keeps the table's blocked keys in memory (retry.KeyCache) and holds
	// one connection of the table's pool to LISTEN for keys other
	// processes block.
	RetryTable RetryTable
	// Retrier configures the retrier that Run starts when RetryTable is a
	// *retry.Table: it replays parked entries through the same handler and
	// dedupe store. Set DisableRetrier to run retriers elsewhere.
	Retrier retry.RetrierConfig
	// DisableRetrier stops Run from starting a retrier for RetryTable.
	DisableRetrier bool
	// DeadLetter receives poison and wrong-environment messages. Defaults to
	// RetryTable; kafka.NewConsumer uses the Kafka dead-letter topic when one is
	// configured, and rabbitmq.NewConsumer the group's dead-letter queue when there is
	// no RetryTable. With none,
	// nothing is skipped: a poison or wrong-environment message holds its
	// key, reported by Blocked, until it succeeds or an operator acts.
	DeadLetter DeadLetterer

	// Concurrency is how many keys are handled at once: how many handler
	// calls run at the same time. Defaults to 16; change it while running
	// with SetConcurrency (L16). A key's steps around its handler call
	// (dedupe, the retry-table check, settling) do not count: while they
	// wait for their store, other keys are handled.
	Concurrency int
	// MaxInFlight bounds deliveries received and not settled. Defaults to
	// 1024 (L23).
	MaxInFlight int
	// Rate limits handler starts per second; 0 means none. Change it while
	// running with SetRate (L16).
	Rate float64

	// InlineAttempts is how many times a message is tried in its key's lane,
	// when there is no RetryTable, before its key is reported as blocked (an
	// Error log and Consumer.Blocked). It goes on being tried, at most
	// Backoff.Max apart, and is never nacked past its key's later messages.
	// Defaults to 3.
	InlineAttempts int
	// Backoff spaces inline retries and retries of store operations. See
	// reliable.Backoff for its defaults.
	Backoff reliable.Backoff
	// HandlerTimeout bounds one handler call: its context ends then, and a
	// handler that returns because of it has failed (retryably). Defaults to
	// 9/10 of the dedupe store's claim duration (idempotency.ClaimReporter),
	// so that a handler cannot outlive its claim and race a redelivery that
	// took the expired claim over; none without such a store. A timeout at
	// or above the claim duration is refused. A handler that ignores its
	// context is not stopped: keep handlers context-aware.
	HandlerTimeout time.Duration
	// ShutdownTimeout bounds how long Run waits for in-flight deliveries
	// after its context ends. Defaults to DefaultShutdownTimeout, so that the
	// drain, the final commit and leaving the group fit in Kubernetes'
	// default 30 s grace period (see package service). Unfinished deliveries
	// are left unsettled and will be delivered again.
	ShutdownTimeout time.Duration
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Observe, when set, is called once per delivery with its outcome, for
	// metrics. It must not block.
	Observe func(Event)
}

// DefaultShutdownTimeout is the default Config.ShutdownTimeout.
const DefaultShutdownTimeout = 20 * time.Second

// Validate returns every problem of c at once, or nil.
func (c Config) Validate() error {
	var p reliable.Problems
	p.Addf(c.Topic == "", "Topic is required")
	p.Addf(c.Concurrency < 0, "Concurrency is %d, must be 0 (default) or positive", c.Concurrency)
	p.Addf(c.MaxInFlight < 0, "MaxInFlight is %d, must be 0 (default) or positive", c.MaxInFlight)
	p.Addf(c.Rate < 0, "Rate is %v, must be 0 (unlimited) or positive", c.Rate)
	p.Addf(c.InlineAttempts < 0, "InlineAttempts is %d, must be 0 (default) or positive", c.InlineAttempts)
	p.Addf(c.ShutdownTimeout < 0, "ShutdownTimeout is negative")
	p.Addf(c.HandlerTimeout < 0, "HandlerTimeout is negative")
	if cr, ok := c.Dedupe.(idempotency.ClaimReporter); ok && c.HandlerTimeout > 0 {
		claim := cr.ClaimDuration()
		p.Addf(claim > 0 && c.HandlerTimeout >= claim,
			"HandlerTimeout %s is not below the dedupe store's claim duration %s: a handler could outlive its claim and a redelivery apply the message a second time", c.HandlerTimeout, claim)
	}
	return p.Err("consumer")
}

func (c Config) withDefaults() Config {
	if c.Concurrency == 0 {
		c.Concurrency = 16
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = 1024
	}
	if c.InlineAttempts == 0 {
		c.InlineAttempts = 3
	}
	if cr, ok := c.Dedupe.(idempotency.ClaimReporter); ok && c.HandlerTimeout == 0 {
		c.HandlerTimeout = cr.ClaimDuration() * 9 / 10
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = DefaultShutdownTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.DeadLetter == nil && c.RetryTable != nil {
		c.DeadLetter = c.RetryTable
	}
	return c
}

// Outcome is what became of a delivery.
type Outcome int

// The outcomes of a delivery. Every one but OutcomeHeld and OutcomeUnsettled
// acks it.
const (
	// OutcomeHandled: the handler succeeded (and the ID was recorded done).
	OutcomeHandled Outcome = iota + 1
	// OutcomeDuplicate: the ID was already done; the handler was not called.
	OutcomeDuplicate
	// OutcomeParked: stored in the retry table, after a retryable failure or
	// behind earlier entries of its key.
	OutcomeParked
	// OutcomeDeadLettered: poison, or from another environment.
	OutcomeDeadLettered
	// OutcomeHeld: the message failed and is tried again after a backoff,
	// ahead of its key's later messages, which wait (no retry table, or no
	// dead-letter path for a poison message). Reported once per failed try;
	// the delivery's final outcome is reported when it settles.
	OutcomeHeld
	// OutcomeUnsettled: left for the broker to deliver again (the consumer
	// stopped first, or the partition moved to another instance). The key's
	// later deliveries are left too, so none is applied out of order.
	OutcomeUnsettled
)

func (o Outcome) String() string {
	switch o {
	case OutcomeHandled:
		return "handled"
	case OutcomeDuplicate:
		return "duplicate"
	case OutcomeParked:
		return "parked"
	case OutcomeDeadLettered:
		return "dead-lettered"
	case OutcomeHeld:
		return "held"
	case OutcomeUnsettled:
		return "unsettled"
	}
	return "unknown"
}

// Event reports one delivery's outcome to Config.Observe.
type Event struct {
	Message  *reliable.Message
	Outcome  Outcome
	Err      error // the handler's error, if any
	Duration time.Duration
	// NotDeduplicated: a dedupe store is configured but the message had no
	// ID (another client published it), so it was handled without
	// deduplication, at least once.
	NotDeduplicated bool
}
