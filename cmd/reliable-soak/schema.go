package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/idempotency"
	"github.com/reliable-go/reliable/outbox"
	"github.com/reliable-go/reliable/retry"
)

// The campaign's own tables, in the run's schema. They are the ledger the
// verdict is read from:
//
//   - soak_orders: every committed business row, written in the same
//     transaction as its outbox message (msg_id); seq numbers a key's orders
//     1, 2, 3... in commit order. poison orders must end dead in the retry
//     table, oversize ones (too large to publish, L13) dead in the outbox.
//   - soak_results: every applied effect, in apply order (apply_id). No
//     unique constraint on msg_id on purpose: a second application of a
//     message must be visible, not refused.
//   - soak_injected: transient handler failures as they were injected.
//   - soak_state: each order's state, as the quick-start and zero profiles'
//     handler upserts it (the tuned profile's handler does not write it).
const soakSchema = `
CREATE TABLE soak_orders (
    id         bigserial   PRIMARY KEY,
    msg_id     text        NOT NULL UNIQUE,
    key        text        NOT NULL,
    seq        integer     NOT NULL,
    poison     boolean     NOT NULL DEFAULT false,
    oversize   boolean     NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (key, seq)
);
CREATE TABLE soak_results (
    apply_id   bigserial   PRIMARY KEY,
    msg_id     text        NOT NULL,
    key        text        NOT NULL,
    seq        integer     NOT NULL,
    process    text        NOT NULL,
    pid        integer     NOT NULL DEFAULT 0,
    attempt    integer     NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE TABLE soak_state (
    key    text    PRIMARY KEY,
    seq    integer NOT NULL,
    status text    NOT NULL,
    msg_id text    NOT NULL
);
CREATE INDEX soak_results_msg_id ON soak_results (msg_id);
CREATE TABLE soak_injected (
    id      bigserial   PRIMARY KEY,
    kind    text        NOT NULL,
    msg_id  text        NOT NULL,
    process text        NOT NULL,
    at      timestamptz NOT NULL DEFAULT clock_timestamp()
);
`

// openPool opens a pool on dsn whose connections use schema as search_path,
// so the SDK's tables (outbox, retry, dedupe) land in the run's schema too.
func openPool(ctx context.Context, dsn, schema, app string, maxConns int32) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("postgres DSN: %w", err)
	}
	cfg.ConnConfig.RuntimeParams["search_path"] = schema
	cfg.ConnConfig.RuntimeParams["application_name"] = app
	cfg.ConnConfig.ConnectTimeout = 5 * time.Second
	if maxConns > 0 {
		cfg.MaxConns = maxConns
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	return pool, nil
}

// createSchema creates the run's schema with the campaign tables and the
// SDK's tables.
func createSchema(ctx context.Context, cfg *Config) error {
	conn, err := pgx.Connect(ctx, cfg.PostgresDSN)
	if err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	_, err = conn.Exec(ctx, "CREATE SCHEMA "+pgx.Identifier{cfg.Schema}.Sanitize())
	conn.Close(ctx)
	if err != nil {
		return fmt.Errorf("create schema %s: %w", cfg.Schema, err)
	}
	pool, err := openPool(ctx, cfg.PostgresDSN, cfg.Schema, "reliable-soak", 4)
	if err != nil {
		return err
	}
	defer pool.Close()
	if _, err := pool.Exec(ctx, soakSchema); err != nil {
		return fmt.Errorf("create soak tables: %w", err)
	}
	if err := outbox.Migrate(ctx, pool); err != nil {
		return err
	}
	if cfg.RelayMode == "log" {
		if err := outbox.CreateSlot(ctx, pool, cfg.slot()); err != nil {
			return err
		}
	}
	quiet := slog.New(slog.DiscardHandler)
	table, err := newRetryTable(pool, cfg, quiet)
	if err != nil {
		return err
	}
	if err := table.Migrate(ctx); err != nil {
		return err
	}
	store, err := newDedupe(pool, cfg)
	if err != nil {
		return err
	}
	return store.Migrate(ctx)
}

// slot is the run's replication slot and publication (-relay-mode log).
func (c *Config) slot() string { return c.Schema }

// dropSchema removes the run's schema and everything in it, and its
// replication slot if any (a slot left behind would retain WAL forever).
func dropSchema(ctx context.Context, cfg *Config) error {
	conn, err := pgx.Connect(ctx, cfg.PostgresDSN)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	for attempt := 0; ; attempt++ {
		// A relay's walsender may outlive it for a moment.
		_, _ = conn.Exec(ctx, `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1 AND active`, cfg.slot())
		err := outbox.DropSlot(ctx, conn, cfg.slot())
		if err == nil {
			break
		}
		if attempt == 20 {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
	_, err = conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{cfg.Schema}.Sanitize()+" CASCADE")
	return err
}

// claimTTL bounds how long a killed consumer's dedupe claim holds up its
// message. It must stay far above the longest handler run (Latency plus a
// transaction) and below the time the retry table keeps retrying an entry
// whose message is "in progress elsewhere" (retryBackoff over maxAttempts).
const (
	claimTTL         = 15 * time.Second
	retryMaxAttempts = 10
)

// retryBackoff spaces retry-table attempts: 0.5s, 1s, 2s, 4s, then 5s; ten
// attempts span about 30s, twice claimTTL.
var retryBackoff = reliable.Backoff{Initial: 500 * time.Millisecond, Max: 5 * time.Second, Multiplier: 2}

func newRetryTable(pool *pgxpool.Pool, cfg *Config, log *slog.Logger) (*retry.Table, error) {
	return retry.NewTable(pool, retry.TableConfig{
		Group:       cfg.Group,
		MaxAttempts: retryMaxAttempts,
		Backoff:     retryBackoff,
		Logger:      log,
	})
}

func newDedupe(pool *pgxpool.Pool, cfg *Config) (*idempotency.PostgresStore, error) {
	return idempotency.NewPostgres(pool, idempotency.PostgresConfig{Namespace: cfg.Group, ClaimTTL: claimTTL})
}
