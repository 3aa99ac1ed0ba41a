package testenv

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// ScanCounts returns how many sequential and index scans PostgreSQL counted
// on table so far, after every connection of pool published its counts: a
// backend publishes them up to 10 s after its transactions unless told to
// at once (pg_stat_force_next_flush, PostgreSQL 15; on older servers it
// waits 11 s). The plan-cache tests use it to see whether a statement
// found its rows by index.
func ScanCounts(ctx context.Context, t testing.TB, pool *pgxpool.Pool, table string) (seq, idx int64) {
	t.Helper()
	var version int
	if err := pool.QueryRow(ctx, `SELECT current_setting('server_version_num')::int`).Scan(&version); err != nil {
		t.Fatalf("testenv: server version: %v", err)
	}
	if version < 150000 {
		time.Sleep(11 * time.Second)
	} else {
		conns := make([]*pgxpool.Conn, pool.Config().MaxConns)
		for i := range conns {
			c, err := pool.Acquire(ctx)
			if err != nil {
				t.Fatalf("testenv: acquire: %v", err)
			}
			conns[i] = c
		}
		for _, c := range conns {
			_, err := c.Exec(ctx, `SELECT pg_stat_force_next_flush()`)
			c.Release()
			if err != nil {
				t.Fatalf("testenv: pg_stat_force_next_flush: %v", err)
			}
		}
	}
	if err := pool.QueryRow(ctx, `SELECT coalesce(seq_scan, 0), coalesce(idx_scan, 0) FROM pg_stat_user_tables WHERE relid = $1::regclass`,
		table).Scan(&seq, &idx); err != nil {
		t.Fatalf("testenv: scan counts of %s: %v", table, err)
	}
	return seq, idx
}
