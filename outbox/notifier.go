package outbox

import (
	"context"
	"log/slog"
	"time"

	"github.com/reliable-go/reliable"
)

// DeadRow describes a row that the relay gave up on.
type DeadRow struct {
	// ID is the row's ID, for Retry and Discard.
	ID int64
	// Message is the message as it was added.
	Message *reliable.Message
	// Attempts is the number of failed attempts charged to the row.
	Attempts int
	// Err is the last error.
	Err error
	// KeyBlocked is true when the row's key waits for an operator (the
	// default), false when later rows of the key go on.
	KeyBlocked bool
}

// Notifier is told when a row becomes dead, after that is recorded. A
// notification is sent once, by the relay that marked the row; a relay that
// crashes in between sends none, so alert on Status.Dead too.
type Notifier interface {
	Notify(ctx context.Context, row DeadRow) error
}

// NotifierFunc adapts a function to a Notifier.
type NotifierFunc func(ctx context.Context, row DeadRow) error

// Notify calls f(ctx, row).
func (f NotifierFunc) Notify(ctx context.Context, row DeadRow) error { return f(ctx, row) }

// LogNotifier logs dead rows at error level.
type LogNotifier struct {
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Notify logs row.
func (n LogNotifier) Notify(ctx context.Context, row DeadRow) error {
	l := n.Logger
	if l == nil {
		l = slog.Default()
	}
	l.ErrorContext(ctx, "outbox row is dead; call outbox.Retry or outbox.Discard",
		slog.Int64("row", row.ID), slog.String("message", row.Message.String()),
		slog.Int("attempts", row.Attempts), slog.Bool("key_blocked", row.KeyBlocked),
		slog.Any("error", row.Err))
	return nil
}

// Stats counts what a relay did since it started. Read it with Relay.Stats;
// rates come from differences between two reads.
type Stats struct {
	// Published counts rows the broker confirmed.
	Published uint64
	// Marked counts confirmed rows deleted or archived.
	Marked uint64
	// Batches counts Publish calls (with a reliable.AsyncPublisher, rounds
	// of PublishAsync calls).
	Batches uint64
	// Failures counts failed row publishes, charged or not.
	Failures uint64
	// Outages counts the relay-wide backoffs: nothing was confirmed while
	// the failed rows were in flight (the broker looked unavailable). The
	// calls that fail together in one outage count once.
	Outages uint64
	// Dead counts rows this relay marked dead.
	Dead uint64
	// KeysLeased counts keys leased; KeysReturned counts keys given back.
	KeysLeased, KeysReturned uint64
	// OrphanLeases counts leases under this relay's Instance that it found
	// for keys it did not work, and took back (written by a statement that
	// committed after its relay had given up on it, such as a killed run's
	// claim; each held its key until it expired).
	OrphanLeases uint64
	// ClaimQueries counts claim transactions, ClaimTime their total time:
	// ClaimTime/ClaimQueries is the cost of one claim.
	ClaimQueries uint64
	ClaimTime    time.Duration
	// Keys is the number of keys leased now; InFlight the rows being
	// published now.
	Keys, InFlight int
	// Buffered is the number of rows held in memory now, at most
	// Config.MaxBufferedRows.
	Buffered int
	// PublishLatency is the duration of the last successful Publish call
	// (or round of PublishAsync calls, until its last confirm).
	PublishLatency time.Duration
	// LastError is the last publish or database error, or "".
	LastError string
	// LastErrorAt is when LastError happened.
	LastErrorAt time.Time

	// LogState is what the log reader does (ModeLog): "reading",
	// "standby" (another relay reads the slot), "slot missing", "slot
	// lost", "over WAL budget", "error" (all three poll), "starting", or
	// "off" in ModePoll.
	LogState string
	// LogFallbacks counts switches from reading the log to polling for a
	// missing or lost slot, the WAL budget, or an error.
	LogFallbacks uint64
	// LogRows counts rows that joined a lane straight from the log.
	LogRows uint64
	// LogVisibilityWaits counts waits for a transaction the log showed to
	// become visible to new snapshots (PostgreSQL sends a commit a moment
	// before it makes it visible).
	LogVisibilityWaits uint64
	// LogConfirmed is the last WAL position (an LSN as a number) confirmed
	// to the slot; LogPending the rows of the log not yet known done.
	LogConfirmed uint64
	LogPending   int
	// SlotRetainedBytes is the WAL the slot retains, SlotLagBytes the WAL
	// past its confirmed position, as of the last slot check.
	SlotRetainedBytes, SlotLagBytes int64
}
