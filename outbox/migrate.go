package outbox

import (
	"context"
	"embed"

	"github.com/jackc/pgx/v5"

	"github.com/reliable-go/reliable/internal/pgmigrate"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Beginner starts a transaction: *pgxpool.Pool, *pgx.Conn and pgx.Tx (a
// savepoint) satisfy it.
type Beginner interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

// Migration is one of the outbox's schema migrations as plain SQL, for
// running them with a migration tool of your own (goose, tern, atlas,
// flyway: see docs/migrations.md and the files of schema/postgres).
type Migration struct {
	// Version orders the outbox's migrations: 1, 2, ...
	Version int
	// Name is the embedded file's name, e.g. "001_outbox.sql".
	Name string
	// SQL is the migration, ready to run: plain statements, no template.
	// Every migration may be run again on a schema it already upgraded.
	SQL string
}

// migrationSet is the outbox's embedded migrations. Its tables live in
// the connection's current schema under fixed names. The history table and
// the advisory lock are the ones the outbox's own runner used before it
// moved to pgmigrate, so instances of both releases migrating at once
// still take turns.
var migrationSet = pgmigrate.Set{
	Component:    "outbox",
	FS:           migrations,
	Dir:          "migrations",
	DefaultTable: "reliable_outbox",
	LockSQL:      `hashtextextended('reliable_outbox_migrate:' || current_schema(), 0)`,
}

// Migrations returns the outbox's migrations, oldest first, as plain SQL for
// the connection's current schema (the tables' names are fixed). [Migrate]
// applies the same statements and records them in reliable_outbox_migrations.
func Migrations() ([]Migration, error) {
	return pgmigrate.Migrations[Migration](migrationSet, "", "")
}

// Migrate creates or upgrades the outbox tables in the connection's current
// schema (the first schema of its search_path) and returns once they are up
// to date. It is safe to call from several processes at once: they take
// turns on an advisory lock, and each migration is applied once, in one
// transaction, and recorded in reliable_outbox_migrations. Nothing migrates
// implicitly; call it at deploy or start-up, or run [Migrations] with a
// migration tool of your own.
func Migrate(ctx context.Context, db Beginner) error {
	return migrationSet.Apply(ctx, db, "", "")
}
