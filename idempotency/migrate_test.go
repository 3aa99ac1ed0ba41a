package idempotency_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/reliable-go/reliable/idempotency"
	"github.com/reliable-go/reliable/internal/pgmigrate/pgtest"
)

// The dedupe table's own migrations, placed under another schema and name,
// name only the placed table, apply on PostgreSQL, and applying them again
// changes nothing: idempotency.Migrate twice and PostgresStore.Migrate
// record each version once, and the plain SQL of Migrations run again (a
// team switching to a migration tool of its own) keeps the done record.
// The runner's shared behaviour (concurrent callers, upgrades, the
// placement check) is tested once in internal/pgmigrate.
func TestMigrationsApplyAndRunAgain(t *testing.T) {
	t.Parallel()
	schema, pool := pgtest.Schema(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg := idempotency.PostgresConfig{Namespace: "g", Schema: schema, Table: "seen"}
	migs, err := idempotency.Migrations(cfg)
	if err != nil {
		t.Fatal(err)
	}
	placed := pgx.Identifier{schema, "seen"}.Sanitize()
	sql := make([]string, len(migs))
	for i, m := range migs {
		if m.Version != i+1 || strings.Contains(m.SQL, idempotency.DefaultTable) || !strings.Contains(m.SQL, placed) {
			t.Errorf("migration %d (%s) is not placed in %s:\n%s", m.Version, m.Name, placed, m.SQL)
		}
		sql[i] = m.SQL
	}
	store, err := idempotency.NewPostgres(pool, cfg)
	if err != nil {
		t.Fatal(err)
	}
	migrate := func(ctx context.Context) error { return idempotency.Migrate(ctx, pool, cfg) }
	pgtest.MigrateAgain(ctx, t, pool, pgx.Identifier{schema, "seen_migrations"}.Sanitize(), len(migs),
		migrate, migrate, store.Migrate)

	if _, err := store.Begin(ctx, "m1"); err != nil {
		t.Fatalf("Begin on the migrated table: %v", err)
	}
	if err := store.Done(ctx, "m1"); err != nil {
		t.Fatalf("Done on the migrated table: %v", err)
	}
	pgtest.RunSQL(ctx, t, pool, sql...)
	st, err := store.Begin(ctx, "m1")
	if err != nil {
		t.Fatal(err)
	}
	if st != idempotency.StatusDone {
		t.Fatalf("after running the migrations again Begin(m1) = %v, want the record kept done", st)
	}
}
