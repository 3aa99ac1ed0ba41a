// Package pgmigrate applies a package's embedded SQL migrations to
// PostgreSQL, explicitly (never as a side effect of a constructor) and
// idempotently.
//
// The SDK's tables have configurable names, so migration files are
// text/template sources: {{.Table}} is the sanitized (schema-qualified)
// table identifier and {{ident "suffix"}} an unqualified identifier made of
// the table name and a suffix, for indexes and companion tables. Applied
// versions are recorded in a per-table history table, under a transaction
// advisory lock so that several service instances starting at once do not
// race on CREATE TABLE IF NOT EXISTS (which is not concurrency-safe in
// PostgreSQL).
//
// [Render] returns the same migrations as plain SQL, so that the exported
// Migrations functions of outbox, retry and idempotency (and the committed
// files of schema/postgres) can hand them to goose, tern, atlas or flyway.
//
// Each of those packages declares its migrations as a [Set] (its files,
// default table and lock key); [Set.Apply] and [Migrations] are its exported
// Migrate and Migrations functions but for the package's configuration
// type.
package pgmigrate

import (
	"bytes"
	"context"
	"fmt"
	"hash/fnv"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
	"text/template"

	"github.com/jackc/pgx/v5"
)

// Beginner starts transactions: a *pgxpool.Pool or a *pgx.Conn.
type Beginner interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

// Target names the table whose migrations are applied.
type Target struct {
	// Schema is optional; empty means the connection's search_path.
	Schema string
	// Table is the main table's name; companion objects derive from it.
	Table string
	// Data holds extra template values, reachable as {{.Data.name}}.
	Data map[string]string
	// LockSQL, when set, is the SQL expression of the bigint advisory lock
	// key that serialises migrators of this target; empty means a hash of
	// the table identifier. It lets a package keep the key its older
	// releases took, so old and new instances migrating at once still take
	// turns.
	LockSQL string
}

// Migration is one rendered migration file: plain SQL for one target.
type Migration struct {
	// Version is the number the file name starts with.
	Version int
	// Name is the file name, e.g. "001_create.sql".
	Name string
	// SQL is the file rendered for the target: no template actions left.
	SQL string
}

// Ident returns the sanitized identifier of Table+suffix in Target's schema.
func (t Target) Ident(suffix string) string {
	if t.Schema == "" {
		return pgx.Identifier{t.Table + suffix}.Sanitize()
	}
	return pgx.Identifier{t.Schema, t.Table + suffix}.Sanitize()
}

// Apply runs, in version order, every file NNN_name.sql of dir in fsys whose
// version is not yet recorded for target, all in one transaction.
func Apply(ctx context.Context, db Beginner, fsys fs.FS, dir string, target Target) error {
	migs, err := Render(fsys, dir, target)
	if err != nil {
		return err
	}
	tx, err := db.Begin(ctx)
	if err != nil {
		return fmt.Errorf("pgmigrate: begin: %w", err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // no-op after Commit

	if target.LockSQL != "" {
		_, err = tx.Exec(ctx, "SELECT pg_advisory_xact_lock("+target.LockSQL+")")
	} else {
		h := fnv.New64a()
		h.Write([]byte("reliable-migrate:" + target.Ident("")))
		_, err = tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", int64(h.Sum64()))
	}
	if err != nil {
		return fmt.Errorf("pgmigrate: lock: %w", err)
	}
	history := target.Ident("_migrations")
	if _, err := tx.Exec(ctx, "CREATE TABLE IF NOT EXISTS "+history+
		" (version int PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"); err != nil {
		return fmt.Errorf("pgmigrate: history table: %w", err)
	}
	rows, err := tx.Query(ctx, "SELECT version FROM "+history)
	if err != nil {
		return fmt.Errorf("pgmigrate: read history: %w", err)
	}
	done, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		return fmt.Errorf("pgmigrate: read history: %w", err)
	}
	applied := make(map[int]bool, len(done))
	for _, v := range done {
		applied[int(v)] = true
	}
	for _, m := range migs {
		if applied[m.Version] {
			continue
		}
		if _, err := tx.Exec(ctx, m.SQL); err != nil {
			return fmt.Errorf("pgmigrate: apply %s to %s: %w", m.Name, target.Ident(""), err)
		}
		if _, err := tx.Exec(ctx, "INSERT INTO "+history+" (version, name) VALUES ($1, $2)", m.Version, m.Name); err != nil {
			return fmt.Errorf("pgmigrate: record %s: %w", m.Name, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("pgmigrate: commit: %w", err)
	}
	return nil
}

// Render returns every file NNN_name.sql of dir in fsys, rendered for target,
// in version order. Other files are ignored.
func Render(fsys fs.FS, dir string, target Target) ([]Migration, error) {
	entries, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return nil, fmt.Errorf("pgmigrate: %w", err)
	}
	funcs := template.FuncMap{
		"ident": func(suffix string) string { return pgx.Identifier{target.Table + suffix}.Sanitize() },
		"qual":  target.Ident,
	}
	data := map[string]any{"Table": target.Ident(""), "Data": target.Data}
	var migs []Migration
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || !strings.HasSuffix(name, ".sql") {
			continue
		}
		num, _, ok := strings.Cut(name, "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil {
			return nil, fmt.Errorf("pgmigrate: %s: name must start with a version number and '_'", name)
		}
		src, err := fs.ReadFile(fsys, path.Join(dir, name))
		if err != nil {
			return nil, fmt.Errorf("pgmigrate: %w", err)
		}
		tmpl, err := template.New(name).Funcs(funcs).Option("missingkey=error").Parse(string(src))
		if err != nil {
			return nil, fmt.Errorf("pgmigrate: %s: %w", name, err)
		}
		var buf bytes.Buffer
		if err := tmpl.Execute(&buf, data); err != nil {
			return nil, fmt.Errorf("pgmigrate: %s: %w", name, err)
		}
		migs = append(migs, Migration{Version: v, Name: name, SQL: buf.String()})
	}
	sort.Slice(migs, func(i, j int) bool { return migs[i].Version < migs[j].Version })
	for i := 1; i < len(migs); i++ {
		if migs[i].Version == migs[i-1].Version {
			return nil, fmt.Errorf("pgmigrate: two migrations with version %d", migs[i].Version)
		}
	}
	return migs, nil
}
