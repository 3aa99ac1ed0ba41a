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
// It also sets pgplan.CustomPlans: every batch of the relay starts with it.
const asyncCommit = `SELECT set_config('synchronous_commit', 'off', true), set_config('plan_cache_mode', 'force_custom_plan', true)`

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
