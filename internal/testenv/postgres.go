package testenv

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// PostgresPool opens a pool of up to maxConns connections on the test
// PostgreSQL (see PostgresDSN), checks that it answers, and closes it when
// the test ends. Size maxConns to the test's concurrency: pgxpool's default
// of max(4, NumCPU) starves a consumer running many key lanes. The test holds a
// shared lock on PostgreSQL until it ends, so a fault test of another process
// that restarts the server (Postgres) waits for it.
func PostgresPool(t testing.TB, maxConns int32) *pgxpool.Pool {
	t.Helper()
	integration(t)
	lockService(t, "postgres", lockShared)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cfg, err := pgxpool.ParseConfig(PostgresDSN(t))
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = maxConns
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err == nil {
		err = pool.Ping(ctx)
	}
	if err != nil {
		t.Fatalf("postgres: %v", err)
	}
	t.Cleanup(pool.Close)
	return pool
}
