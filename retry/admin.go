package retry

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/reliable-go/reliable/internal/pgplan"
)

// The operator API: inspect and repair a group's entries (reliablectl uses
// it). Every method is scoped to the table's group.

// List returns entries matching f, in sequence (ID) order.
func (t *Table) List(ctx context.Context, f ListFilter) ([]Entry, error) {
	limit := f.Limit
	if limit <= 0 {
		limit = 100
	}
	limit = min(limit, 1000)
	q := `SELECT ` + entryColumns + ` FROM ` + t.table + ` WHERE grp = $1 AND id > $2`
	args := []any{t.cfg.Group, f.AfterID}
	if f.Key != "" {
		args = append(args, keyLane(f.Key))
		q += ` AND lane = $` + strconv.Itoa(len(args))
	}
	if len(f.States) > 0 {
		states := make([]string, len(f.States))
		for i, s := range f.States {
			states[i] = string(s)
		}
		args = append(args, states)
		q += ` AND state = ANY($` + strconv.Itoa(len(args)) + `)`
	}
	args = append(args, limit)
	q += ` ORDER BY id LIMIT $` + strconv.Itoa(len(args))
	var entries []Entry
	err := pgplan.Query(ctx, t.pool, func(rows pgx.Rows) (err error) {
		entries, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (Entry, error) { return scanEntry(r) })
		return err
	}, q, args...)
	if err != nil {
		return nil, fmt.Errorf("retry: list: %w", err)
	}
	return entries, nil
}

// Get returns one entry, or an error matching ErrNotFound.
func (t *Table) Get(ctx context.Context, id int64) (Entry, error) {
	var e Entry
	err := pgplan.Query(ctx, t.pool, func(rows pgx.Rows) (err error) {
		e, err = pgx.CollectExactlyOneRow(rows, func(r pgx.CollectableRow) (Entry, error) { return scanEntry(r) })
		return err
	}, `SELECT `+entryColumns+` FROM `+t.table+` WHERE grp = $1 AND id = $2`, t.cfg.Group, id)
	if errors.Is(err, pgx.ErrNoRows) {
		return Entry{}, fmt.Errorf("retry: entry %d: %w", id, ErrNotFound)
	}
	if err != nil {
		return Entry{}, fmt.Errorf("retry: get %d: %w", id, err)
	}
	return e, nil
}

// RetryNow makes an entry due now. A dead or released entry becomes pending
// again with a fresh budget of MaxAttempts, in its original position: it
// blocks its key again, and the key's later entries wait for it. Retrying a
// released entry therefore replays an old message after newer ones of its
// key may have been applied; that is the operator's call.
func (t *Table) RetryNow(ctx context.Context, id int64) error {
	// A released entry blocks its key again: announce it (KeyCache), in the
	// same statement, so listeners hear of it when it commits.
	var n int64
	err := pgplan.QueryRow(ctx, t.pool, `WITH u AS (UPDATE `+t.table+` SET state = 'pending', next_attempt_at = now(),
  attempts = CASE WHEN state = 'pending' THEN attempts ELSE 0 END, finished_at = NULL, updated_at = now()
WHERE grp = $1 AND id = $2 AND state IN ('pending', 'dead', 'released') RETURNING lane)
SELECT count(*) FROM (SELECT pg_notify($3, $4::text::regclass::oid::text || $5 || lane) FROM u) n`,
		[]any{t.cfg.Group, id, KeyNotifyChannel, t.table, t.notifySuffix("")}, &n)
	if err != nil {
		return fmt.Errorf("retry: retry now %d: %w", id, err)
	}
	if n == 0 {
		return fmt.Errorf("retry: retry now: entry %d is not pending, dead or released: %w", id, ErrNotFound)
	}
	t.log.InfoContext(ctx, "operator: entry retried now", "entry", id)
	return nil
}

// RetryKeyNow makes every pending and dead entry of key due now (dead ones
// with a fresh budget) and returns how many entries it changed.
func (t *Table) RetryKeyNow(ctx context.Context, key string) (int64, error) {
	tag, err := pgplan.Exec(ctx, t.pool, `UPDATE `+t.table+` SET state = 'pending', next_attempt_at = now(),
  attempts = CASE WHEN state = 'pending' THEN attempts ELSE 0 END, finished_at = NULL, updated_at = now()
WHERE grp = $1 AND lane = $2 AND state IN ('pending', 'dead')`, t.cfg.Group, keyLane(key))
	if err != nil {
		return 0, fmt.Errorf("retry: retry key %s now: %w", quoteShort(key), err)
	}
	t.log.InfoContext(ctx, "operator: key retried now", "key", key, "entries", tag.RowsAffected())
	return tag.RowsAffected(), nil
}

// Discard drops an entry that is pending, dead or released: it no longer
// blocks its key and is never replayed. It is kept, discarded, for the
// retention. If a retrier is replaying the entry at that moment, that one
// attempt may still complete.
func (t *Table) Discard(ctx context.Context, id int64) error {
	var found bool
	err := pgx.BeginFunc(ctx, t.pool, func(tx pgx.Tx) error {
		// The lookup precedes the lane lock, which sets pgplan.CustomPlans.
		if _, err := tx.Exec(ctx, pgplan.CustomPlans); err != nil {
			return err
		}
		var l string
		err := tx.QueryRow(ctx, `SELECT lane FROM `+t.table+` WHERE grp = $1 AND id = $2`, t.cfg.Group, id).Scan(&l)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := t.lockLane(ctx, tx, l); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, `UPDATE `+t.table+` SET state = 'discarded', next_attempt_at = NULL, finished_at = now(), updated_at = now()
WHERE grp = $1 AND id = $2 AND state IN ('pending', 'dead', 'released')`, t.cfg.Group, id)
		if err != nil {
			return err
		}
		found = tag.RowsAffected() == 1
		return t.fixHead(ctx, tx, l)
	})
	if err != nil {
		return fmt.Errorf("retry: discard %d: %w", id, err)
	}
	if !found {
		return fmt.Errorf("retry: discard: entry %d is not pending, dead or released: %w", id, ErrNotFound)
	}
	t.log.InfoContext(ctx, "operator: entry discarded", "entry", id)
	return nil
}

// Release unblocks a key whose head is dead: its dead entries become
// released (kept for inspection) and its later entries and messages flow
// again. It returns how many entries it released.
func (t *Table) Release(ctx context.Context, key string) (int64, error) {
	var n int64
	err := pgx.BeginFunc(ctx, t.pool, func(tx pgx.Tx) error {
		if err := t.lockLane(ctx, tx, keyLane(key)); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, `UPDATE `+t.table+` SET state = 'released', finished_at = now(), updated_at = now()
WHERE grp = $1 AND lane = $2 AND state = 'dead'`, t.cfg.Group, keyLane(key))
		if err != nil {
			return err
		}
		n = tag.RowsAffected()
		return t.fixHead(ctx, tx, keyLane(key))
	})
	if err != nil {
		return 0, fmt.Errorf("retry: release %s: %w", quoteShort(key), err)
	}
	t.log.InfoContext(ctx, "operator: key released", "key", key, "entries", n)
	return n, nil
}

// statsSQL summarises a group's open entries; migration 004's partial
// index keeps it off the done and discarded history.
func (t *Table) statsSQL() string {
	return `SELECT
  count(*) FILTER (WHERE state = 'pending'),
  count(*) FILTER (WHERE state = 'dead'),
  count(*) FILTER (WHERE state = 'released'),
  count(DISTINCT lane) FILTER (WHERE state IN ('pending', 'dead')),
  count(*) FILTER (WHERE state = 'pending' AND next_attempt_at <= now()),
  min(next_attempt_at) FILTER (WHERE state = 'pending'),
  min(created_at) FILTER (WHERE state IN ('pending', 'dead'))
FROM ` + t.table + ` WHERE grp = $1 AND state IN ('pending', 'dead', 'released')`
}

// Status summarises the group's entries as the database has them, for metrics and alerts (L18).
func (t *Table) Status(ctx context.Context) (Status, error) {
	var s Status
	var oldestDue, oldestCreated *time.Time
	err := pgplan.QueryRow(ctx, t.pool, t.statsSQL(), []any{t.cfg.Group},
		&s.Pending, &s.Dead, &s.Released, &s.BlockedKeys, &s.Due, &oldestDue, &oldestCreated)
	if err != nil {
		return Status{}, fmt.Errorf("retry: stats: %w", err)
	}
	if oldestDue != nil {
		s.OldestDue = *oldestDue
	}
	if oldestCreated != nil {
		s.OldestCreated = *oldestCreated
	}
	return s, nil
}

// Cleanup deletes the group's finished entries (done, discarded, released)
// older than the retention, CleanupBatchSize rows per statement so it never
// holds long locks (L17), and leases left expired by crashed retriers. It
// returns how many entries it deleted. Pending and blocking dead entries are
// never deleted. A Retrier runs it every CleanupInterval.
func (t *Table) Cleanup(ctx context.Context) (int64, error) {
	q := `DELETE FROM ` + t.table + ` WHERE id IN (
  SELECT id FROM ` + t.table + ` WHERE grp = $1 AND state IN ('done', 'discarded', 'released')
    AND finished_at < now() - $2 * interval '1 microsecond'
  LIMIT $3 FOR UPDATE SKIP LOCKED)`
	var total int64
	for {
		tag, err := pgplan.Exec(ctx, t.pool, q, t.cfg.Group, t.cfg.Retention.Microseconds(), t.cfg.CleanupBatchSize)
		if err != nil {
			return total, fmt.Errorf("retry: cleanup: %w", err)
		}
		total += tag.RowsAffected()
		if tag.RowsAffected() < int64(t.cfg.CleanupBatchSize) {
			break
		}
	}
	if _, err := t.pool.Exec(ctx, `DELETE FROM `+t.leases+` WHERE grp = $1 AND expires_at < now() - interval '1 hour'`, t.cfg.Group); err != nil {
		return total, fmt.Errorf("retry: cleanup leases: %w", err)
	}
	// A safety net, not a mechanism: every head change gives the new head a
	// due time under the lane lock, but a row deleted by hand would leave the
	// entry behind it waiting forever.
	if _, err := pgplan.Exec(ctx, t.pool, `UPDATE `+t.table+` e SET next_attempt_at = now(), updated_at = now()
WHERE grp = $1 AND state = 'pending' AND next_attempt_at IS NULL
  AND NOT EXISTS (SELECT 1 FROM `+t.table+` p WHERE p.grp = $1 AND p.lane = e.lane AND p.state IN ('pending', 'dead') AND p.id < e.id)`,
		t.cfg.Group); err != nil {
		return total, fmt.Errorf("retry: cleanup heads: %w", err)
	}
	return total, nil
}
