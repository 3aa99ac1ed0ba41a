package idempotency

import (
	"context"

	"github.com/jackc/pgx/v5"

	"github.com/reliable-go/reliable/internal/pgmigrate"
)

// DefaultTable is the dedupe table's name when PostgresConfig.Table is
// empty.
const DefaultTable = "reliable_idempotency"

// Beginner starts a transaction: *pgxpool.Pool, *pgx.Conn and pgx.Tx (a
// savepoint) satisfy it.
type Beginner interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

// Migration is one of the dedupe table's schema migrations as plain SQL, for
// running them with a migration tool of your own (goose, tern, atlas,
// flyway: see docs/migrations.md and the files of schema/postgres).
type Migration struct {
	// Version orders the dedupe table's migrations: 1, 2, ...
	Version int
	// Name is the embedded file's name, e.g. "001_create.sql".
	Name string
	// SQL is the migration rendered for one schema and table name: plain
	// statements, no template. Every migration may be run again on tables
	// it already upgraded.
	SQL string
}

// migrationSet is the dedupe table's embedded migrations. Only the
// configuration's Schema and Table matter to them: Namespace and the other
// fields are not checked.
var migrationSet = pgmigrate.Set{Component: "idempotency", FS: migrations, Dir: "migrations", DefaultTable: DefaultTable}

// Migrations returns the dedupe table's migrations, oldest first, as plain
// SQL for the tables cfg places (cfg.Schema and cfg.Table; the zero
// PostgresConfig means DefaultTable in the search_path). [Migrate] applies
// the same statements.
func Migrations(cfg PostgresConfig) ([]Migration, error) {
	return pgmigrate.Migrations[Migration](migrationSet, cfg.Schema, cfg.Table)
}

// Migrate creates or upgrades the tables cfg places (cfg.Schema and
// cfg.Table; pass the PostgresConfig given to [NewPostgres]) and returns once
// they are up to date. It is safe to call from several processes at once:
// they take turns on an advisory lock, and each migration is applied once,
// in one transaction, and recorded in the table Table + "_migrations".
// Nothing migrates implicitly; call it at deploy or start-up, or run
// [Migrations] with a migration tool of your own.
func Migrate(ctx context.Context, db Beginner, cfg PostgresConfig) error {
	return migrationSet.Apply(ctx, db, cfg.Schema, cfg.Table)
}
