package outbox

import (
	"context"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// The relay's own writes (leases, marks, releases) commit without waiting
// for the WAL flush: a database crash can undo the last of them, which only
// makes rows go out again (deleted rows reappear) or keys change hands
// early (lost leases), never out of order (see "Ordering without trusting
// leases" in the package documentation). Rows themselves are written by Add
// in the caller's transaction, with the caller's durability.
//
// It is set_config(..., true) rather than SET LOCAL: a batch's statements
// form one implicit transaction, but PostgreSQL cannot know that at the
// first one, and logs a warning for every SET LOCAL that starts a batch.
// set_config's transaction-local form gives the same scope without it.
//
// It also sets customPlans: every batch of the relay starts with it.
const asyncCommit = `SELECT set_config('synchronous_commit', 'off', true), set_config('plan_cache_mode', 'force_custom_plan', true)`

// customPlans makes the statements after it in the transaction planned for
// their parameters and the tables as they are now, never from a cached
// generic plan (issue 19). pgx runs statements as prepared statements, and
// PostgreSQL switches a prepared statement to a generic plan after five
// executions when that plan looks no costlier. The outbox tables swing from
// a page of rows to a backlog and back, so no plan fits both: the claim's
// generic plan, made while the table held a page, probed each key's lease
// and rows with sequential scans, and once a backlog built up each claim
// read the whole table once per key it walked (1-4 s a claim over 20k rows
// instead of ~0.1 s; a bench run's p99 of 14-34 s), so the backlog grew
// faster than it drained, until autovacuum's ANALYZE invalidated the plan,
// up to a minute later. Planning each statement costs a fraction of a
// millisecond. (plan_cache_mode exists since PostgreSQL 12.)
const customPlans = `SELECT set_config('plan_cache_mode', 'force_custom_plan', true)`

// execAsync runs one statement in its own transaction with asyncCommit.
func (r *Relay) execAsync(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	b := &pgx.Batch{}
	b.Queue(asyncCommit)
	b.Queue(sql, args...)
	br := r.pool.SendBatch(ctx, b)
	defer br.Close()
	if _, err := br.Exec(); err != nil {
		return pgconn.CommandTag{}, err
	}
	tag, err := br.Exec()
	if err != nil {
		return tag, err
	}
	return tag, br.Close()
}

// queryStringsAsync runs one statement returning a text column in its own
// transaction with asyncCommit.
func (r *Relay) queryStringsAsync(ctx context.Context, sql string, args ...any) ([]string, error) {
	b := &pgx.Batch{}
	b.Queue(asyncCommit)
	b.Queue(sql, args...)
	br := r.pool.SendBatch(ctx, b)
	defer br.Close()
	if _, err := br.Exec(); err != nil {
		return nil, err
	}
	rows, err := br.Query()
	if err != nil {
		return nil, err
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, err
	}
	return out, br.Close()
}

// queryCustom runs one query in its own transaction with customPlans and
// hands its rows to scan.
func (r *Relay) queryCustom(ctx context.Context, scan func(pgx.Rows) error, sql string, args ...any) error {
	b := &pgx.Batch{}
	b.Queue(customPlans)
	b.Queue(sql, args...)
	br := r.pool.SendBatch(ctx, b)
	defer br.Close()
	if _, err := br.Exec(); err != nil {
		return err
	}
	rows, err := br.Query()
	if err != nil {
		return err
	}
	if err := scan(rows); err != nil {
		return err
	}
	return br.Close()
}
