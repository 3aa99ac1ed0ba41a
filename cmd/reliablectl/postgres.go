package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// pgFlags are the connection flags of PostgreSQL commands.
type pgFlags struct {
	dsn    string
	schema string
}

func (p *pgFlags) register(f *flags, schemaHelp string) {
	f.StringVar(&p.dsn, "postgres-dsn", "", "PostgreSQL URL or DSN (default $"+envPostgresDSN+")")
	f.StringVar(&p.schema, "schema", "", schemaHelp)
}

// connectPostgres opens a small pool and checks that it connects, so an
// unreachable database fails here with one clear line.
func (a *app) connectPostgres(ctx context.Context, p *pgFlags) (*pgxpool.Pool, error) {
	dsn, err := a.endpoint("postgres-dsn", p.dsn, envPostgresDSN)
	if err != nil {
		return nil, err
	}
	if dsn == "" {
		return nil, usagef("no PostgreSQL DSN: set --postgres-dsn or $%s", envPostgresDSN)
	}
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, usagef("--postgres-dsn: %v", err)
	}
	cfg.MaxConns = 2
	cfg.ConnConfig.RuntimeParams["application_name"] = "reliablectl"
	if p.schema != "" {
		cfg.ConnConfig.RuntimeParams["search_path"] = p.schema
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("cannot connect to PostgreSQL at %s:%d: %w", cfg.ConnConfig.Host, cfg.ConnConfig.Port, err)
	}
	return pool, nil
}

// withPostgres runs work on a pool connected with p within --timeout, and
// closes it after.
func (f *flags) withPostgres(ctx context.Context, p *pgFlags, work func(context.Context, *pgxpool.Pool) error) error {
	open := func(ctx context.Context) (*pgxpool.Pool, error) { return f.a.connectPostgres(ctx, p) }
	return within(ctx, f, open, (*pgxpool.Pool).Close, work)
}

// missingTable turns PostgreSQL's "relation does not exist" into a hint.
func missingTable(err error, what, schema string) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "42P01" {
		where := "the search_path"
		if schema != "" {
			where = "schema " + schema
		}
		return fmt.Errorf("%s not found in %s: wrong --schema, or the migration was never run (%s)", what, where, pe.Message)
	}
	return err
}
