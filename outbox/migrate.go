package outbox

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Beginner starts a transaction: *pgxpool.Pool, *pgx.Conn and pgx.Tx (a
// savepoint) satisfy it.
type Beginner interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

// Migrate creates or upgrades the outbox tables in the connection's current
// schema (the first schema of its search_path) and returns once they are up
// to date. It is safe to call from several processes at once: they take
// turns on an advisory lock, and each migration is applied once, in a
// transaction. Nothing migrates implicitly; call it at deploy or start-up.
func Migrate(ctx context.Context, db Beginner) error {
	files, err := migrationFiles()
	if err != nil {
		return err
	}
	tx, err := db.Begin(ctx)
	if err != nil {
		return fmt.Errorf("outbox: migrate: %w", err)
	}
	defer func() { _ = tx.Rollback(ctx) }()

	// One migrator per schema at a time.
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended('reliable_outbox_migrate:' || current_schema(), 0))`); err != nil {
		return fmt.Errorf("outbox: migrate: lock: %w", err)
	}
	if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS reliable_outbox_migrations (
		version    integer     PRIMARY KEY,
		name       text        NOT NULL,
		applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return fmt.Errorf("outbox: migrate: %w", err)
	}
	rows, err := tx.Query(ctx, `SELECT version FROM reliable_outbox_migrations`)
	if err != nil {
		return fmt.Errorf("outbox: migrate: %w", err)
	}
	applied, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		return fmt.Errorf("outbox: migrate: %w", err)
	}
	done := make(map[int]bool, len(applied))
	for _, v := range applied {
		done[int(v)] = true
	}
	for _, f := range files {
		if done[f.version] {
			continue
		}
		if _, err := tx.Exec(ctx, f.sql); err != nil {
			return fmt.Errorf("outbox: migration %s: %w", f.name, err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO reliable_outbox_migrations (version, name) VALUES ($1, $2)`, f.version, f.name); err != nil {
			return fmt.Errorf("outbox: migration %s: %w", f.name, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("outbox: migrate: commit: %w", err)
	}
	return nil
}

type migration struct {
	version int
	name    string
	sql     string
}

// migrationFiles returns the embedded migrations in version order; a file is
// named NNN_description.sql.
func migrationFiles() ([]migration, error) {
	entries, err := fs.ReadDir(migrations, "migrations")
	if err != nil {
		return nil, fmt.Errorf("outbox: migrations: %w", err)
	}
	var out []migration
	for _, e := range entries {
		name := e.Name()
		num, _, ok := strings.Cut(name, "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil {
			return nil, fmt.Errorf("outbox: migration file %q is not named NNN_name.sql", name)
		}
		b, err := migrations.ReadFile("migrations/" + name)
		if err != nil {
			return nil, fmt.Errorf("outbox: migrations: %w", err)
		}
		out = append(out, migration{version: v, name: name, sql: string(b)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].version < out[j].version })
	return out, nil
}
