package retry

import (
	"log/slog"
	"time"

	"github.com/reliable-go/reliable"
)

// Defaults of TableConfig and RetrierConfig.
const (
	DefaultTable            = "reliable_retry"
	DefaultMaxAttempts      = 7
	DefaultRetention        = 7 * 24 * time.Hour
	DefaultCleanupBatchSize = 1000
	DefaultNotifyTimeout    = 10 * time.Second

	DefaultWorkers         = 4
	DefaultPollInterval    = time.Second
	DefaultLeaseTTL        = 30 * time.Second
	DefaultBatchSize       = 50
	DefaultShutdownTimeout = 10 * time.Second
	DefaultCleanupInterval = time.Hour
)

// DefaultBackoff spaces the six retries of a 7-attempt entry over about nine
// minutes (2s, 6s, 18s, 54s, 2m42s, 5m, ±20% jitter): long enough to ride out
// a deploy or a failover, short enough that a dead entry is noticed soon.
var DefaultBackoff = reliable.Backoff{Initial: 2 * time.Second, Max: 5 * time.Minute, Multiplier: 3}

// TableConfig configures a [Table].
type TableConfig struct {
	// Group scopes the entries, usually the consumer group: several services
	// may share one table. Required.
	Group string
	// Schema holds the tables; empty means the search_path.
	Schema string
	// Table names the entries table; the leases table adds "_leases".
	// Defaults to DefaultTable.
	Table string
	// MaxAttempts is how many failed attempts, counting the consumer's first
	// one, make an entry dead. Defaults to 7 (L11).
	MaxAttempts int
	// Backoff spaces the attempts. The zero value means DefaultBackoff. A
	// reliable.RetryAfter delay longer than the backoff's wins.
	Backoff reliable.Backoff
	// ReleaseOnDead lets the key's later entries and messages flow once an
	// entry is dead. By default (false) a dead entry keeps its key blocked, so
	// nothing of that key is applied out of order, until an operator retries,
	// discards or releases it.
	ReleaseOnDead bool
	// Notifier is told about every dead entry. Defaults to a LogNotifier on
	// Logger.
	Notifier Notifier
	// NotifyTimeout bounds each Notify call. Defaults to 10s.
	NotifyTimeout time.Duration
	// Retention is how long finished entries (done, discarded, released) are
	// kept before Cleanup deletes them (L17). Defaults to 7 days. Pending and
	// blocking dead entries are never deleted by Cleanup.
	Retention time.Duration
	// DeleteSucceeded deletes an entry as soon as a retry applied it. By
	// default it is kept, done, for Retention: then a redelivered copy (its
	// consumer crashed before committing the offset) is recognised by Park
	// and not applied a second time behind the key's newer messages. Set it
	// only when the handler is deduplicated (the idempotency package).
	DeleteSucceeded bool
	// CleanupBatchSize is how many rows one Cleanup statement deletes.
	// Defaults to 1000.
	CleanupBatchSize int
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

func (c TableConfig) withDefaults() TableConfig {
	if c.Table == "" {
		c.Table = DefaultTable
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = DefaultMaxAttempts
	}
	if c.Backoff == (reliable.Backoff{}) {
		c.Backoff = DefaultBackoff
	}
	if c.NotifyTimeout == 0 {
		c.NotifyTimeout = DefaultNotifyTimeout
	}
	if c.Retention == 0 {
		c.Retention = DefaultRetention
	}
	if c.CleanupBatchSize == 0 {
		c.CleanupBatchSize = DefaultCleanupBatchSize
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Notifier == nil {
		c.Notifier = LogNotifier{Logger: c.Logger}
	}
	return c
}

// Validate returns every problem of the configuration at once. Zero values
// take their defaults and are not problems.
func (c TableConfig) Validate() error {
	var p reliable.Problems
	p.Addf(c.Group == "", "Group is empty: set it to the consumer group")
	p.Addf(len(c.Table) > 40, "Table %q is longer than 40 bytes (PostgreSQL truncates derived names)", c.Table)
	p.Addf(c.MaxAttempts < 0, "MaxAttempts is negative (%d)", c.MaxAttempts)
	p.Addf(c.NotifyTimeout < 0, "NotifyTimeout is negative (%s)", c.NotifyTimeout)
	p.Addf(c.Retention < 0, "Retention is negative (%s)", c.Retention)
	p.Addf(c.CleanupBatchSize < 0, "CleanupBatchSize is negative (%d)", c.CleanupBatchSize)
	p.Addf(c.Backoff.Initial < 0 || c.Backoff.Max < 0, "Backoff durations are negative")
	return p.Err("retry table")
}

// RetrierConfig configures a [Retrier].
type RetrierConfig struct {
	// Workers is how many keys one retrier replays at once. Defaults to 4.
	Workers int
	// PollInterval is how often the retrier looks for due keys when it found
	// none. Defaults to 1s.
	PollInterval time.Duration
	// LeaseTTL is how long a key's lease lasts without renewal; the retrier
	// renews it every LeaseTTL/3 while it replays the key. A crashed
	// retrier's keys are taken over after at most LeaseTTL. Defaults to 30s.
	LeaseTTL time.Duration
	// BatchSize is how many entries of a key are read per query. Defaults
	// to 50.
	BatchSize int
	// ShutdownTimeout is how long an in-flight handler may run after Run's
	// context ended before its own context is cancelled. Defaults to 10s.
	ShutdownTimeout time.Duration
	// CleanupInterval is how often Run calls Table.Cleanup; negative
	// disables it (run Cleanup yourself). Defaults to 1h.
	CleanupInterval time.Duration
	// Instance names this retrier in leases and logs. Defaults to
	// "hostname:pid".
	Instance string
	// Logger defaults to the table's logger.
	Logger *slog.Logger
}

func (c RetrierConfig) withDefaults(t *Table) RetrierConfig {
	if c.Workers == 0 {
		c.Workers = DefaultWorkers
	}
	if c.PollInterval == 0 {
		c.PollInterval = DefaultPollInterval
	}
	if c.LeaseTTL == 0 {
		c.LeaseTTL = DefaultLeaseTTL
	}
	if c.BatchSize == 0 {
		c.BatchSize = DefaultBatchSize
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = DefaultShutdownTimeout
	}
	if c.CleanupInterval == 0 {
		c.CleanupInterval = DefaultCleanupInterval
	}
	if c.Logger == nil && t != nil {
		c.Logger = t.cfg.Logger
	}
	return c
}

// Validate returns every problem of the configuration at once.
func (c RetrierConfig) Validate() error {
	var p reliable.Problems
	p.Addf(c.Workers < 0, "Workers is negative (%d)", c.Workers)
	p.Addf(c.PollInterval < 0, "PollInterval is negative (%s)", c.PollInterval)
	p.Addf(c.LeaseTTL < 0, "LeaseTTL is negative (%s)", c.LeaseTTL)
	p.Addf(c.LeaseTTL > 0 && c.LeaseTTL < 100*time.Millisecond, "LeaseTTL %s is below 100ms", c.LeaseTTL)
	p.Addf(c.BatchSize < 0, "BatchSize is negative (%d)", c.BatchSize)
	p.Addf(c.ShutdownTimeout < 0, "ShutdownTimeout is negative (%s)", c.ShutdownTimeout)
	return p.Err("retrier")
}
