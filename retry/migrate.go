package retry

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/internal/pgmigrate"
)

// Beginner starts a transaction: *pgxpool.Pool, *pgx.Conn and pgx.Tx (a
// savepoint) satisfy it.
type Beginner interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

// Migration is one of the retry table's schema migrations as plain SQL, for
// running them with a migration tool of your own (goose, tern, atlas,
// flyway: see docs/migrations.md and the files of schema/postgres).
type Migration struct {
	// Version orders the retry table's migrations: 1, 2, ...
	Version int
	// Name is the embedded file's name, e.g. "001_create.sql".
	Name string
	// SQL is the migration rendered for one schema and table name: plain
	// statements, no template. Every migration may be run again on tables
	// it already upgraded.
	SQL string
}

// migrationTarget returns where cfg places the tables (cfg.Schema,
// cfg.Table, defaults applied). Only the placement is checked: Group
// and the other fields do not matter to migrations.
func migrationTarget(cfg TableConfig) (pgmigrate.Target, error) {
	var p reliable.Problems
	p.Addf(len(cfg.Table) > 40, "Table %q is longer than 40 bytes (PostgreSQL truncates derived names)", cfg.Table)
	if err := p.Err("retry migrations"); err != nil {
		return pgmigrate.Target{}, err
	}
	if cfg.Table == "" {
		cfg.Table = DefaultTable
	}
	return pgmigrate.Target{Schema: cfg.Schema, Table: cfg.Table}, nil
}

// Migrations returns the retry table's migrations, oldest first, as plain
// SQL for the tables cfg places (cfg.Schema and cfg.Table; the zero
// TableConfig means DefaultTable in the search_path). [Migrate] applies
// the same statements.
func Migrations(cfg TableConfig) ([]Migration, error) {
	target, err := migrationTarget(cfg)
	if err != nil {
		return nil, err
	}
	migs, err := pgmigrate.Render(migrations, "migrations", target)
	if err != nil {
		return nil, fmt.Errorf("retry: migrations: %w", err)
	}
	out := make([]Migration, len(migs))
	for i, m := range migs {
		out[i] = Migration(m)
	}
	return out, nil
}

// Migrate creates or upgrades the tables cfg places (cfg.Schema and
// cfg.Table; pass the TableConfig given to [NewTable]) and returns once
// they are up to date. It is safe to call from several processes at once:
// they take turns on an advisory lock, and each migration is applied once,
// in one transaction, and recorded in the table Table + "_migrations".
// Nothing migrates implicitly; call it at deploy or start-up, or run
// [Migrations] with a migration tool of your own.
func Migrate(ctx context.Context, db Beginner, cfg TableConfig) error {
	target, err := migrationTarget(cfg)
	if err != nil {
		return err
	}
	if err := pgmigrate.Apply(ctx, db, migrations, "migrations", target); err != nil {
		return fmt.Errorf("retry: migrate: %w", err)
	}
	return nil
}
