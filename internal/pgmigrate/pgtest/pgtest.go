// Package pgtest helps the migration tests: a throwaway schema with a pool
// whose search_path points at it, and a description of a schema's tables
// that two ways of migrating must agree on.
package pgtest

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/reliable-go/reliable/internal/testenv"
)

// Schema creates a schema no other test uses, drops it (cascading) when the
// test ends, and returns its name and a pool of up to maxConns connections
// whose search_path is that schema alone.
func Schema(t testing.TB, maxConns int32) (string, *pgxpool.Pool) {
	t.Helper()
	dsn := testenv.PostgresDSN(t)
	schema := testenv.UniqueName(t, "mig")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("pgtest: connect: %v", err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, "CREATE SCHEMA "+pgx.Identifier{schema}.Sanitize()); err != nil {
		t.Fatalf("pgtest: create schema: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			return
		}
		defer conn.Close(ctx)
		_, _ = conn.Exec(ctx, "DROP SCHEMA "+pgx.Identifier{schema}.Sanitize()+" CASCADE")
	})
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.RuntimeParams["search_path"] = schema
	cfg.MaxConns = maxConns
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("pgtest: pool: %v", err)
	}
	t.Cleanup(pool.Close)
	return schema, pool
}

// Querier runs queries: *pgxpool.Pool, *pgx.Conn and pgx.Tx satisfy it.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// Describe returns, one line each and sorted, the tables of schema (with
// their persistence), their columns (type, nullability, default, identity),
// constraints and indexes, with the schema's name removed so that two
// schemas migrated the same way describe the same. Tables whose name
// matches the regular expression skip (migration histories) are left out;
// "" skips none.
func Describe(ctx context.Context, db Querier, schema, skip string) (string, error) {
	const q = `
SELECT 'table ' || c.relname || ' ' || c.relpersistence::text
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = $1 AND c.relkind = 'r' AND ($2::text = '' OR c.relname !~ $2::text)
UNION ALL
SELECT 'column ' || c.relname || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
       || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END
       || coalesce(' default ' || pg_get_expr(d.adbin, d.adrelid), '')
       || CASE WHEN a.attidentity <> '' THEN ' identity ' || a.attidentity::text ELSE '' END
  FROM pg_attribute a
  JOIN pg_class c ON c.oid = a.attrelid
  JOIN pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
 WHERE n.nspname = $1 AND c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped
   AND ($2::text = '' OR c.relname !~ $2::text)
UNION ALL
SELECT 'constraint ' || c.relname || ' ' || k.conname || ' ' || pg_get_constraintdef(k.oid)
  FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = $1 AND ($2::text = '' OR c.relname !~ $2::text)
UNION ALL
SELECT 'index ' || pg_get_indexdef(i.indexrelid)
  FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = $1 AND ($2::text = '' OR c.relname !~ $2::text)`
	rows, err := db.Query(ctx, q, schema, skip)
	if err != nil {
		return "", fmt.Errorf("pgtest: describe %s: %w", schema, err)
	}
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return "", fmt.Errorf("pgtest: describe %s: %w", schema, err)
	}
	out := make([]string, 0, len(lines))
	for _, l := range lines {
		l = strings.ReplaceAll(l, pgx.Identifier{schema}.Sanitize()+".", "")
		out = append(out, strings.ReplaceAll(l, schema+".", ""))
	}
	sort.Strings(out)
	return strings.Join(out, "\n"), nil
}

// MigrateAgain runs each migrate in turn (a package's Migrate function,
// then the same again, then its store's Migrate method) and fails the test
// unless each succeeds and the history table (schema-qualified by the
// caller) then holds want versions: applying a package's migrations again
// records nothing twice.
func MigrateAgain(ctx context.Context, t testing.TB, pool *pgxpool.Pool, history string, want int, migrate ...func(context.Context) error) {
	t.Helper()
	for i, m := range migrate {
		if err := m(ctx); err != nil {
			t.Fatalf("migrate %d of %d: %v", i+1, len(migrate), err)
		}
		var n int
		if err := pool.QueryRow(ctx, "SELECT count(*) FROM "+history).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != want {
			t.Fatalf("after migrate %d of %d the history holds %d versions, want %d", i+1, len(migrate), n, want)
		}
	}
}

// RunSQL runs each plain SQL migration in turn, each in a transaction of its
// own, as a migration tool of a user's would.
func RunSQL(ctx context.Context, t testing.TB, pool *pgxpool.Pool, sql ...string) {
	t.Helper()
	for i, s := range sql {
		if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, s)
			return err
		}); err != nil {
			t.Fatalf("running migration %d of %d again: %v", i+1, len(sql), err)
		}
	}
}
