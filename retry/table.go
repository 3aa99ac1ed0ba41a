package retry

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/internal/pgmigrate"
	"github.com/reliable-go/reliable/internal/pgplan"
)

//go:embed migrations/*.sql
var migrations embed.FS

// ErrNotFound is returned by the operator API for an entry that does not
// exist in the group or is not in a state the operation applies to.
var ErrNotFound = errors.New("retry: entry not found")

// Table is the ordered retry table of one consumer group, in PostgreSQL (L11).
//
// The consumer uses three calls per delivery, inside the message's key lane:
// [Table.Blocked] (does the key have entries waiting?), then [Table.Park]
// (put the message behind them, or park it after a retryable failure) or
// [Table.DeadLetter] (a permanent failure). A [Retrier] replays the parked
// entries. The remaining methods are the operator API.
//
// One key's Park calls must not run concurrently: the consumer's per-key
// lane guarantees it, and the entries' sequence (their ID) is then the order
// of the messages.
type Table struct {
	pool   *pgxpool.Pool
	cfg    TableConfig
	log    *slog.Logger
	target pgmigrate.Target
	table  string // sanitized entries table
	leases string // sanitized leases table
}

// NewTable returns the retry table of cfg.Group on pool. It does not touch
// the database: call [Table.Migrate] once (at deploy or start-up).
func NewTable(pool *pgxpool.Pool, cfg TableConfig) (*Table, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if pool == nil {
		return nil, &reliable.ConfigError{Component: "retry table", Problems: []string{"pool is nil"}}
	}
	cfg = cfg.withDefaults()
	target := pgmigrate.Target{Schema: cfg.Schema, Table: cfg.Table}
	return &Table{
		pool: pool, cfg: cfg, log: cfg.Logger.With("component", "retry", "group", cfg.Group),
		target: target, table: target.Ident(""), leases: target.Ident("_leases"),
	}, nil
}

// Config returns the table's configuration with defaults applied.
func (t *Table) Config() TableConfig { return t.cfg }

// Migrate is [Migrate] for the table's configuration: it creates or upgrades
// the tables, idempotently and safely from several instances at once.
func (t *Table) Migrate(ctx context.Context) error {
	return migrationSet.Apply(ctx, t.pool, t.target.Schema, t.target.Table)
}

// Blocked reports whether key has entries waiting: pending ones, or a dead
// one that blocks it. A message of a blocked key must be parked, not
// handled. The empty key (keyless messages, which need no order) is never
// blocked.
func (t *Table) Blocked(ctx context.Context, key string) (bool, error) {
	if key == "" {
		return false, nil
	}
	var blocked bool
	err := pgplan.QueryRow(ctx, t.pool, `SELECT EXISTS (SELECT 1 FROM `+t.table+`
  WHERE grp = $1 AND lane = $2 AND state IN ('pending', 'dead'))`, []any{t.cfg.Group, keyLane(key)}, &blocked)
	if err != nil {
		return false, permanentStoreError(fmt.Errorf("retry: blocked %s: %w", quoteShort(key), err))
	}
	return blocked, nil
}

// Park appends msg behind its key's entries. cause is the handler's error,
// or nil (or any error, recorded as the reason) when the message was not
// handled because its key is blocked.
//
// A message parked while its key has pending or dead entries is behind them:
// it counts no attempt and is due as soon as it heads its key. Otherwise a
// non-nil cause is a failed attempt (msg.Delivery.Attempt, at least 1): the
// entry is due after Backoff.Delay(attempts), or reliable.RetryDelay(cause)
// if that is longer. A permanent cause, or attempts already at MaxAttempts,
// stores the message dead, as DeadLetter does.
//
// Park is idempotent per message ID: a redelivered message parked twice stays
// one entry, in its first position, and one a retry already applied (kept
// done for the retention) or an operator discarded is not parked again. Once
// Park returns nil the entry is committed, so the consumer may ack the
// delivery.
func (t *Table) Park(ctx context.Context, msg *reliable.Message, cause error) error {
	if reliable.IsPermanent(cause) {
		return t.DeadLetter(ctx, msg, cause)
	}
	attempts, delay := 0, time.Duration(0)
	if cause != nil {
		attempts = max(msg.Delivery.Attempt, 1)
		delay = max(t.cfg.Backoff.Delay(attempts), reliable.RetryDelay(cause))
	}
	if attempts >= t.cfg.MaxAttempts {
		return t.DeadLetter(ctx, msg, cause)
	}
	_, err := t.insert(ctx, msg, StatePending, attempts, delay, cause)
	return err
}

// DeadLetter stores msg dead at once, for a permanent failure (poison): the
// notifier is called, and the key stays blocked unless the table has
// ReleaseOnDead. Like Park it is idempotent per message ID, and the notifier
// is called only by the call that stored the entry.
//
// A message refused for coming from another environment (cause matches
// reliable.ErrWrongEnvironment, L07) is stored released: it belongs to no
// order of this environment's keys, so it never blocks one.
func (t *Table) DeadLetter(ctx context.Context, msg *reliable.Message, cause error) error {
	state := StateDead
	if t.cfg.ReleaseOnDead || errors.Is(cause, reliable.ErrWrongEnvironment) {
		state = StateReleased
	}
	e, err := t.insert(ctx, msg, state, max(msg.Delivery.Attempt, 1), 0, cause)
	if err != nil || e == nil {
		return err
	}
	t.notify(ctx, *e)
	return nil
}

func (t *Table) insert(ctx context.Context, msg *reliable.Message, state State, attempts int, delay time.Duration, cause error) (*Entry, error) {
	if msg.ID == "" {
		return nil, fmt.Errorf("retry: park: %w", &reliable.InvalidMessageError{Problems: []string{"ID is empty: a message without an ID cannot be parked idempotently"}})
	}
	var msgTime *time.Time
	if !msg.Time.IsZero() {
		msgTime = &msg.Time
	}
	lastErr := ""
	if cause != nil {
		lastErr = errorText(cause.Error())
	}
	// The lookup form of the ID is unique per group; the exact ID is kept
	// beside it only when the two differ (see encode.go).
	idText, idFull := indexedText(msg.ID), storedText(msg.ID)
	var fullID *string
	if idFull != idText {
		fullID = &idFull
	}
	// A pending message whose key already has blocking entries was not
	// handled because of them, whatever cause the caller passes: it counts no
	// attempt and gets no due time until it heads its key. The lane lock
	// makes that check and the insert atomic with respect to the retrier
	// moving the lane's head.
	var e Entry
	err := t.withLaneLock(ctx, lane(msg), state.Blocking() && msg.Key != "", `INSERT INTO `+t.table+` (grp, lane, message_id, msg_key, topic, msg_type, headers, payload, msg_time,
  src_partition, src_offset, src_queue, state, attempts, next_attempt_at, last_error, finished_at, message_id_full)
SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13,
  CASE WHEN behind THEN 0 ELSE $14 END,
  CASE WHEN behind OR $13 <> 'pending' THEN NULL ELSE now() + $15 * interval '1 microsecond' END,
  $16, CASE WHEN $13 = 'pending' THEN NULL ELSE now() END, $17
FROM (SELECT $13 = 'pending' AND EXISTS (SELECT 1 FROM `+t.table+`
  WHERE grp = $1 AND lane = $2 AND state IN ('pending', 'dead')) AS behind) b
ON CONFLICT (grp, message_id) DO NOTHING
RETURNING `+entryColumns, []any{
		t.cfg.Group, lane(msg), idText, storedText(msg.Key), storedText(msg.Topic), storedText(msg.Type),
		storedHeaders(msg.Headers), msg.Payload, msgTime,
		msg.Delivery.Partition, msg.Delivery.Offset, storedText(msg.Delivery.Queue), string(state), attempts,
		delay.Microseconds(), lastErr, fullID,
	}, func(row pgx.Row) (err error) {
		e, err = scanEntry(row)
		return err
	})
	if errors.Is(err, pgx.ErrNoRows) {
		t.log.DebugContext(ctx, "message already parked", "message_id", msg.ID, "key", msg.Key)
		return nil, nil
	}
	if err != nil {
		return nil, permanentStoreError(fmt.Errorf("retry: park message %s of key %s: %w", quoteShort(msg.ID), quoteShort(msg.Key), err))
	}
	t.log.InfoContext(ctx, "message parked", "entry", e.ID, "message_id", msg.ID, "key", msg.Key,
		"state", e.State, "attempts", e.Attempts, "next_attempt_at", e.NextAttemptAt, "error", lastErr)
	return &e, nil
}

// The lane lock serialises, until its transaction ends, everything that
// parks into a lane or moves its head. Distinct lanes whose hashes collide
// merely wait for each other. It also sets pgplan.CustomPlans for the rest of the
// transaction: every statement that runs under the lock reads the lane.
const lockSQL = `SELECT pg_advisory_xact_lock(hashtextextended($1, 0)), set_config('plan_cache_mode', 'force_custom_plan', true)`

func (t *Table) lockKey(lane string) string { return t.table + "\x1f" + t.cfg.Group + "\x1f" + lane }

// lockLane takes the lane lock in tx.
func (t *Table) lockLane(ctx context.Context, tx pgx.Tx, lane string) error {
	_, err := tx.Exec(ctx, lockSQL, t.lockKey(lane))
	return err
}

// withLaneLock takes the lane lock and runs query in one round trip: a pgx
// batch is one implicit transaction, so the lock is held until the query's
// effects commit, and the query, a statement of its own, sees (READ
// COMMITTED) everything committed before the lock was granted.
//
// With announce, the batch also announces on KeyNotifyChannel that the lane
// is blocked, delivered to listeners when the batch commits.
func (t *Table) withLaneLock(ctx context.Context, lane string, announce bool, query string, args []any, scan func(pgx.Row) error) error {
	var b pgx.Batch
	b.Queue(lockSQL, t.lockKey(lane))
	b.Queue(query, args...)
	if announce {
		b.Queue(notifySQL, KeyNotifyChannel, t.table, t.notifySuffix(lane))
	}
	br := t.pool.SendBatch(ctx, &b)
	if _, err := br.Exec(); err != nil {
		_ = br.Close()
		return err
	}
	serr := scan(br.QueryRow())
	if serr == nil && announce {
		_, serr = br.Exec()
	}
	cerr := br.Close()
	if serr != nil {
		return serr
	}
	return cerr
}

// fixHead gives the lane's head a due time (now) if it is pending without
// one: after the previous head was removed, released or discarded. Run it
// under the lane lock, after the change, in the same transaction.
func (t *Table) fixHead(ctx context.Context, tx pgx.Tx, lane string) error {
	_, err := tx.Exec(ctx, `UPDATE `+t.table+` SET next_attempt_at = now(), updated_at = now()
WHERE id = (SELECT id FROM `+t.table+` WHERE grp = $1 AND lane = $2 AND state IN ('pending', 'dead') ORDER BY id LIMIT 1)
  AND state = 'pending' AND next_attempt_at IS NULL`, t.cfg.Group, lane)
	return err
}

// notify tells the notifier about a dead entry. A failing notifier is logged,
// never fatal: the entry is stored, and Stats and List show it.
func (t *Table) notify(ctx context.Context, e Entry) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), t.cfg.NotifyTimeout)
	defer cancel()
	de := DeadEntry{Entry: e, Blocking: e.State == StateDead}
	t.log.WarnContext(ctx, "retry entry dead", "entry", e.ID, "message_id", e.Message.ID, "key", e.Message.Key,
		"attempts", e.Attempts, "blocking", de.Blocking, "error", e.LastError)
	if err := t.cfg.Notifier.Notify(ctx, de); err != nil {
		t.log.ErrorContext(ctx, "dead entry notification failed", "entry", e.ID, "error", err)
	}
}
