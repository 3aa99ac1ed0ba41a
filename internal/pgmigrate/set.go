package pgmigrate

import (
	"context"
	"fmt"
	"io/fs"

	"github.com/reliable-go/reliable"
)

// Set is one package's embedded migrations and where they go by default:
// what the exported Migrations and Migrate functions of outbox, retry and
// idempotency share, so that each of those packages states only what is
// its own (its files, its default table, its configuration type).
type Set struct {
	// Component names the package in errors: "retry: migrate: ..." and
	// the *reliable.ConfigError of a bad placement ("retry migrations").
	Component string
	// FS holds the migration files NNN_name.sql in Dir.
	FS  fs.FS
	Dir string
	// DefaultTable is the main table's name when a placement names none.
	DefaultTable string
	// LockSQL is the targets' LockSQL (see [Target]).
	LockSQL string
}

// MigrationType is satisfied by each package's exported Migration type:
// the fields of [Migration], under the package's own doc comments.
type MigrationType interface {
	~struct {
		Version int
		Name    string
		SQL     string
	}
}

// maxTable bounds a placed table's name in bytes: PostgreSQL truncates
// identifiers at 63 bytes, and the names derived from the table (its
// "_migrations" history, its indexes) add suffixes.
const maxTable = 40

// Target returns the target of the tables a package's configuration
// places: schema (empty: the connection's search_path) and table (empty:
// DefaultTable). A table name longer than 40 bytes is a
// *reliable.ConfigError (reliable.ErrInvalidConfig).
func (s Set) Target(schema, table string) (Target, error) {
	var p reliable.Problems
	p.Addf(len(table) > maxTable, "Table %q is longer than %d bytes (PostgreSQL truncates derived names)", table, maxTable)
	if err := p.Err(s.Component + " migrations"); err != nil {
		return Target{}, err
	}
	if table == "" {
		table = s.DefaultTable
	}
	return Target{Schema: schema, Table: table, LockSQL: s.LockSQL}, nil
}

// Apply is [Apply] of s to the tables schema and table place (see
// [Set.Target]), its errors prefixed with the component.
func (s Set) Apply(ctx context.Context, db Beginner, schema, table string) error {
	t, err := s.Target(schema, table)
	if err != nil {
		return err
	}
	if err := Apply(ctx, db, s.FS, s.Dir, t); err != nil {
		return fmt.Errorf("%s: migrate: %w", s.Component, err)
	}
	return nil
}

// Migrations is [Render] of s for the tables schema and table place (see
// [Set.Target]), as the package's own Migration type M.
func Migrations[M MigrationType](s Set, schema, table string) ([]M, error) {
	t, err := s.Target(schema, table)
	if err != nil {
		return nil, err
	}
	migs, err := Render(s.FS, s.Dir, t)
	if err != nil {
		return nil, fmt.Errorf("%s: migrations: %w", s.Component, err)
	}
	out := make([]M, len(migs))
	for i, m := range migs {
		out[i] = M(m)
	}
	return out, nil
}
