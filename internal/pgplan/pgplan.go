// Package pgplan runs a statement planned for its own execution, never from
// a cached generic plan.
//
// pgx runs statements as prepared statements, and PostgreSQL switches a
// prepared statement to a generic (parameter-independent) plan after five
// executions when that plan looks no costlier. The SDK's tables swing from
// empty to a backlog: the outbox when a broker is down, the retry table when
// a dependency fails, a dedupe table as it fills. A generic plan made while
// a table held a page reads it by sequential scan, and keeps doing so as the
// table grows, until an ANALYZE replaces it (never with autovacuum off, up
// to a minute later with it): one outbox claim read the table once per key
// (seconds per claim), one retrier claim took 19-25 s over 20,000 entries
// instead of 1 ms. Each package's doc gives its own figures.
//
// [CustomPlans] sets plan_cache_mode to force_custom_plan for the rest of
// the transaction only, so the pool's own settings stay untouched
// (plan_cache_mode exists since PostgreSQL 12). A statement inside a
// transaction runs it first (or folds set_config into a statement it runs
// anyway); [Query], [QueryRow] and [Exec] send it with a statement that runs
// alone, as one pgx batch: one implicit transaction and one round trip, the
// statement still prepared. Planning a statement costs about 0.05 ms.
// (QueryExecModeExec would also plan per execution, but types parameters
// from the Go values, which some of the SDK's statements leave to the
// server; no rewrite helps, as the statements match their indexes: the
// cached plan chose not to use them.)
package pgplan

import (
	"context"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// CustomPlans makes the statements after it in its transaction planned for
// their parameters and the table as it is now.
const CustomPlans = `SELECT set_config('plan_cache_mode', 'force_custom_plan', true)`

// Batcher sends a batch: *pgxpool.Pool, *pgx.Conn and pgx.Tx are.
type Batcher interface {
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
}

// send sends CustomPlans and sql in one batch and reads CustomPlans' result.
func send(ctx context.Context, db Batcher, sql string, args []any) (pgx.BatchResults, error) {
	var b pgx.Batch
	b.Queue(CustomPlans)
	b.Queue(sql, args...)
	br := db.SendBatch(ctx, &b)
	if _, err := br.Exec(); err != nil {
		_ = br.Close()
		return nil, err
	}
	return br, nil
}

// Query runs sql planned for this execution and hands its rows to scan.
func Query(ctx context.Context, db Batcher, scan func(pgx.Rows) error, sql string, args ...any) error {
	br, err := send(ctx, db, sql, args)
	if err != nil {
		return err
	}
	defer br.Close()
	rows, err := br.Query()
	if err != nil {
		return err
	}
	if err := scan(rows); err != nil {
		return err
	}
	return br.Close()
}

// QueryRow runs sql planned for this execution and scans its one row into
// dest.
func QueryRow(ctx context.Context, db Batcher, sql string, args []any, dest ...any) error {
	br, err := send(ctx, db, sql, args)
	if err != nil {
		return err
	}
	defer br.Close()
	if err := br.QueryRow().Scan(dest...); err != nil {
		return err
	}
	return br.Close()
}

// Exec runs sql planned for this execution.
func Exec(ctx context.Context, db Batcher, sql string, args ...any) (pgconn.CommandTag, error) {
	br, err := send(ctx, db, sql, args)
	if err != nil {
		return pgconn.CommandTag{}, err
	}
	defer br.Close()
	tag, err := br.Exec()
	if err != nil {
		return tag, err
	}
	return tag, br.Close()
}
