package outbox_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/internal/pgmigrate/pgtest"
	"github.com/reliable-go/reliable/outbox"
)

// The outbox's own migrations are plain SQL on its fixed table names, apply
// on PostgreSQL, and applying them again changes nothing: Migrate twice
// records each version once in reliable_outbox_migrations (the history the
// outbox's own runner kept before it moved to internal/pgmigrate), and the
// plain SQL of Migrations run again keeps the added row. The runner's
// shared behaviour (concurrent callers taking turns on the outbox's
// LockSQL key, upgrades) is tested once in internal/pgmigrate.
func TestMigrationsApplyAndRunAgain(t *testing.T) {
	t.Parallel()
	_, pool := pgtest.Schema(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	migs, err := outbox.Migrations()
	if err != nil {
		t.Fatal(err)
	}
	sql := make([]string, len(migs))
	for i, m := range migs {
		if m.Version != i+1 || strings.Contains(m.SQL, "{{") || !strings.Contains(m.SQL, "reliable_outbox") {
			t.Errorf("migration %d (%s) is not plain SQL on reliable_outbox:\n%s", m.Version, m.Name, m.SQL)
		}
		sql[i] = m.SQL
	}
	migrate := func(ctx context.Context) error { return outbox.Migrate(ctx, pool) }
	pgtest.MigrateAgain(ctx, t, pool, "reliable_outbox_migrations", len(migs), migrate, migrate)

	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		return outbox.Add(ctx, tx, &reliable.Message{ID: "m1", Topic: "orders", Key: "k1", Payload: []byte("x")})
	})
	if err != nil {
		t.Fatalf("Add on the migrated tables: %v", err)
	}
	pgtest.RunSQL(ctx, t, pool, sql...)
	st, err := outbox.ReadStatus(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}
	if st.Pending != 1 {
		t.Fatalf("after running the migrations again: %d pending rows, want the 1 added", st.Pending)
	}
}
