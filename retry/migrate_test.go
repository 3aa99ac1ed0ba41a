package retry_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/internal/pgmigrate/pgtest"
	"github.com/reliable-go/reliable/retry"
)

// The retry table's own migrations, placed under another schema and name,
// name only the placed tables, apply on PostgreSQL, and applying them again
// changes nothing: retry.Migrate twice and Table.Migrate record each version
// once, and the plain SQL of Migrations run again (a team switching to a
// migration tool of its own) keeps the parked entry. The runner's shared
// behaviour (concurrent callers, upgrades, the placement check) is tested
// once in internal/pgmigrate.
func TestMigrationsApplyAndRunAgain(t *testing.T) {
	t.Parallel()
	schema, pool := pgtest.Schema(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg := retry.TableConfig{Group: "g", Schema: schema, Table: "jobs_retry"}
	migs, err := retry.Migrations(cfg)
	if err != nil {
		t.Fatal(err)
	}
	placed := pgx.Identifier{schema, "jobs_retry"}.Sanitize()
	sql := make([]string, len(migs))
	for i, m := range migs {
		if m.Version != i+1 || strings.Contains(m.SQL, retry.DefaultTable) || !strings.Contains(m.SQL, placed) {
			t.Errorf("migration %d (%s) is not placed in %s:\n%s", m.Version, m.Name, placed, m.SQL)
		}
		sql[i] = m.SQL
	}
	table, err := retry.NewTable(pool, cfg)
	if err != nil {
		t.Fatal(err)
	}
	migrate := func(ctx context.Context) error { return retry.Migrate(ctx, pool, cfg) }
	pgtest.MigrateAgain(ctx, t, pool, pgx.Identifier{schema, "jobs_retry_migrations"}.Sanitize(), len(migs),
		migrate, migrate, table.Migrate)

	msg := &reliable.Message{ID: "m1", Topic: "orders", Key: "k1", Payload: []byte("x")}
	if err := table.Park(ctx, msg, nil); err != nil {
		t.Fatalf("Park on the migrated table: %v", err)
	}
	pgtest.RunSQL(ctx, t, pool, sql...)
	st, err := table.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Pending != 1 {
		t.Fatalf("after running the migrations again: %d pending entries, want the 1 parked", st.Pending)
	}
}
