package outbox

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/reliable-go/reliable"
)

// SentPolicy says what happens to a row once the broker confirmed it.
type SentPolicy int

const (
	// Delete removes sent rows. It keeps the table small (L17) and is the
	// default.
	Delete SentPolicy = iota
	// Archive moves sent rows to reliable_outbox_archive, where they stay for
	// Config.Retention, for audits and replays.
	Archive
)

// Mode is how a relay finds committed rows.
type Mode int

const (
	// ModePoll finds rows with LISTEN/NOTIFY and polling. It is the default.
	ModePoll Mode = iota
	// ModeLog reads committed inserts of the outbox table from a logical
	// replication slot (pgoutput) and polls only as a safety net, falling
	// back to ModePoll by itself while the slot is missing, invalidated or
	// over Config.SlotWALBudget. See the package documentation.
	ModeLog
)

// String names the mode.
func (m Mode) String() string {
	switch m {
	case ModePoll:
		return "poll"
	case ModeLog:
		return "log"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// ParseMode parses "poll" or "log".
func ParseMode(s string) (Mode, error) {
	switch s {
	case "poll", "":
		return ModePoll, nil
	case "log":
		return ModeLog, nil
	}
	return ModePoll, fmt.Errorf("outbox: unknown relay mode %q (poll or log)", s)
}

// Config configures a Relay. The zero value is valid: every field documents
// its default.
type Config struct {
	// Instance names this relay instance in the lease table; it must be unique
	// among the relays running at once. A relay that restarts with the same Instance
	// takes over its own leases at once instead of waiting for them to expire
	// (use a stable name such as the pod name). Defaults to host-pid-random,
	// which is unique but not stable.
	//
	// A running relay holds a PostgreSQL session advisory lock on its Instance (on
	// a connection of its own, beside the pool's). Run waits up to LeaseTTL
	// for it, then returns ErrDuplicateInstance: another live relay uses the Instance.
	// The lock of a killed relay ends when PostgreSQL sees its connection
	// close: at once after kill -9, after the TCP keepalive timeout when its
	// host vanished.
	Instance string
	// MaxKeys bounds the keys (ordering lanes) this relay leases at once.
	// Since a key has one row in flight at a time, throughput is at most
	// MaxKeys per publish round trip. Defaults to 8192.
	MaxKeys int
	// ClaimBatch bounds the keys claimed per claim query, so that relays
	// started together share the backlog. Defaults to 2048.
	ClaimBatch int
	// Window is how many rows of a key are read ahead per query, at most.
	// Defaults to 32.
	Window int
	// MaxBufferedRows bounds the rows the relay holds in memory across all
	// its keys (L05, L23): when many keys are leased, each reads fewer than
	// Window rows ahead, never fewer than one. Together with the payload
	// size it sets the relay's memory use while it drains a backlog.
	// Defaults to twice MaxKeys.
	MaxBufferedRows int
	// BatchSize bounds the messages per Publish call (or per round of
	// PublishAsync calls): the head rows of up to BatchSize keys, never two
	// of one key. Defaults to 2000.
	BatchSize int
	// Publishers is the number of Publish calls in flight at once: more
	// than the broker client's own pipelining needs, so that a row that
	// becomes ready rarely waits for a call to return. Defaults to 8. With a
	// reliable.AsyncPublisher it is the number of goroutines handing rows
	// over; their confirms are awaited apart, and the rows in flight are
	// bounded by MaxBufferedRows.
	Publishers int
	// PollInterval is how often the relay looks for rows when no
	// notification arrives (a lost notification, a relay that was down).
	// Defaults to 1s.
	PollInterval time.Duration
	// LeaseTTL is how long a key stays leased to a relay that stopped
	// renewing (crashed). Defaults to 30s.
	LeaseTTL time.Duration
	// PublishTimeout bounds one Publish call; a relay starts a key's publish
	// only while its lease has at least this long to run. Must be below
	// LeaseTTL/2. Defaults to 10s.
	PublishTimeout time.Duration
	// Backoff spaces the attempts of a failing row and, while the broker is
	// unavailable, of the whole relay. See reliable.Backoff for defaults.
	Backoff reliable.Backoff
	// MaxAttempts is the number of failed attempts after which a row is dead.
	// A permanent error (reliable.IsPermanent: too large, unknown topic, not
	// authorized) makes the row dead at once. A publish the broker did not
	// confirm in time (reliable.ErrNotConfirmed, a deadline) is never
	// charged: when every message of a call fails that way the broker is
	// taken to be unavailable and the relay backs off as a whole; when
	// others were confirmed, only the keys whose destination did not confirm
	// (a partition without leader) back off. Any other error counts against
	// a row when the broker confirmed other messages in the same call or
	// since the row's previous failure, or when the row was charged before;
	// so an outage of any length kills nothing, and a row that fails alone
	// still ends dead. Defaults to 10.
	MaxAttempts int
	// ReleaseOnDead lets the rows after a dead row of the same key go on.
	// By default a dead row blocks its key (strict order) until an operator
	// calls Retry or Discard.
	ReleaseOnDead bool
	// Notifier is told about each row that became dead. Defaults to a
	// LogNotifier on Logger.
	Notifier Notifier
	// Sent says whether sent rows are deleted or archived. Defaults to Delete.
	Sent SentPolicy
	// Retention is how long archived rows are kept (L17). Defaults to 7 days.
	Retention time.Duration
	// CleanupInterval is how often the relay deletes archived rows past the
	// retention, unused key-lock rows and expired leases, in batches.
	// Defaults to 1m.
	CleanupInterval time.Duration
	// CleanupBatchSize bounds the rows deleted per cleanup statement, so that
	// cleanup never holds long locks. Defaults to 1000.
	CleanupBatchSize int
	// ShutdownTimeout bounds how long Run waits, once its context ends, for
	// publishes in flight and for marking confirmed rows. Defaults to 10s.
	ShutdownTimeout time.Duration
	// Logger defaults to slog.Default().
	Logger *slog.Logger

	// Mode chooses how committed rows are found: ModePoll (default) or
	// ModeLog. The rest of this block applies to ModeLog only.
	Mode Mode
	// Slot names the logical replication slot and the publication of the
	// outbox table's inserts. Run creates both when the slot is missing at
	// start (see CreateSlot); afterwards a missing slot means polling until
	// an operator creates it again. Defaults to DefaultSlot.
	Slot string
	// SlotWALBudget is the WAL, in bytes, the slot may retain behind the
	// relay. Past it the relay falls back to polling and moves the slot to
	// the current WAL position, so a stuck relay cannot fill the database's
	// disk (the outbox table still holds every pending row). Keep it below
	// max_slot_wal_keep_size. Defaults to 512 MiB.
	SlotWALBudget int64
	// SlotCheckInterval is how often the relay checks the slot's health
	// and, while polling or standing by, whether it can read the log again.
	// Defaults to 5s.
	SlotCheckInterval time.Duration
	// SlotRetry is how long the relay polls after a fallback for the
	// budget before it reads the log again. Defaults to 1m.
	SlotRetry time.Duration
}

// Validate returns every problem of c at once, or nil.
func (c Config) Validate() error {
	var p reliable.Problems
	neg := func(name string, v int) { p.Addf(v < 0, "%s is %d, must be 0 (default) or positive", name, v) }
	negD := func(name string, v time.Duration) {
		p.Addf(v < 0, "%s is %s, must be 0 (default) or positive", name, v)
	}
	neg("MaxKeys", c.MaxKeys)
	neg("ClaimBatch", c.ClaimBatch)
	neg("Window", c.Window)
	neg("MaxBufferedRows", c.MaxBufferedRows)
	neg("BatchSize", c.BatchSize)
	neg("Publishers", c.Publishers)
	neg("MaxAttempts", c.MaxAttempts)
	neg("CleanupBatchSize", c.CleanupBatchSize)
	negD("PollInterval", c.PollInterval)
	negD("LeaseTTL", c.LeaseTTL)
	negD("PublishTimeout", c.PublishTimeout)
	negD("Retention", c.Retention)
	negD("CleanupInterval", c.CleanupInterval)
	negD("ShutdownTimeout", c.ShutdownTimeout)
	negD("SlotCheckInterval", c.SlotCheckInterval)
	negD("SlotRetry", c.SlotRetry)
	p.Addf(c.SlotWALBudget < 0, "SlotWALBudget is %d, must be 0 (default) or positive", c.SlotWALBudget)
	p.Addf(c.Mode != ModePoll && c.Mode != ModeLog, "Mode is %d, must be ModePoll or ModeLog", c.Mode)
	p.Addf(c.Slot != "" && !slotName.MatchString(c.Slot), "Slot %q must be 1-63 lower-case letters, digits or underscores", c.Slot)
	p.Addf(c.Sent != Delete && c.Sent != Archive, "Sent is %d, must be Delete or Archive", c.Sent)
	d := c.withDefaults()
	p.Addf(d.PublishTimeout*2 >= d.LeaseTTL, "PublishTimeout %s must be below LeaseTTL/2 (LeaseTTL is %s), so a publish ends before a lease renewed during it could lapse",
		d.PublishTimeout, d.LeaseTTL)
	p.Addf(d.LeaseTTL > 0 && d.LeaseTTL < time.Second, "LeaseTTL %s is below 1s", d.LeaseTTL)
	p.Addf(c.Backoff.Initial < 0, "Backoff.Initial is negative")
	p.Addf(c.Backoff.Max < 0, "Backoff.Max is negative")
	return p.Err("outbox relay")
}

func (c Config) withDefaults() Config {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	defD := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	def(&c.MaxKeys, 8192)
	def(&c.ClaimBatch, 2048)
	def(&c.Window, 32)
	def(&c.MaxBufferedRows, 2*c.MaxKeys)
	def(&c.BatchSize, 2000)
	def(&c.Publishers, 8)
	def(&c.MaxAttempts, 10)
	def(&c.CleanupBatchSize, 1000)
	defD(&c.PollInterval, time.Second)
	defD(&c.LeaseTTL, 30*time.Second)
	defD(&c.PublishTimeout, 10*time.Second)
	defD(&c.Retention, 7*24*time.Hour)
	defD(&c.CleanupInterval, time.Minute)
	defD(&c.ShutdownTimeout, 10*time.Second)
	defD(&c.SlotCheckInterval, 5*time.Second)
	defD(&c.SlotRetry, time.Minute)
	if c.SlotWALBudget == 0 {
		c.SlotWALBudget = 512 << 20
	}
	if c.Slot == "" {
		c.Slot = DefaultSlot
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Notifier == nil {
		c.Notifier = LogNotifier{Logger: c.Logger}
	}
	if c.Instance == "" {
		c.Instance = defaultID()
	}
	return c
}

func defaultID() string {
	host, _ := os.Hostname()
	var b [4]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b[:]))
}
