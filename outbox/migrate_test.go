package outbox_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/internal/pgmigrate/pgtest"
	"github.com/reliable-go/reliable/outbox"
)

// Migrations returns the outbox's embedded migrations as plain SQL, in
// version order, for the connection's current schema.
func TestMigrationsArePlainSQL(t *testing.T) {
	t.Parallel()
	migs, err := outbox.Migrations()
	if err != nil {
		t.Fatal(err)
	}
	if len(migs) < 2 {
		t.Fatalf("%d migrations, want at least 2", len(migs))
	}
	for i, m := range migs {
		if m.Version != i+1 || !strings.HasPrefix(m.Name, fmt.Sprintf("%03d_", m.Version)) || !strings.HasSuffix(m.Name, ".sql") {
			t.Errorf("migration %d: version %d name %q", i, m.Version, m.Name)
		}
		if strings.Contains(m.SQL, "{{") || !strings.Contains(m.SQL, "reliable_outbox") {
			t.Errorf("%s is not plain SQL on reliable_outbox:\n%s", m.Name, m.SQL)
		}
	}
}

// Migrate, run by several instances at once, applies each version once and
// records it in reliable_outbox_migrations (the history the outbox's own
// runner kept before it moved to internal/pgmigrate); the plain SQL of
// Migrations can then be run again on the migrated tables without harm.
func TestMigrateConcurrentAndRerunnable(t *testing.T) {
	t.Parallel()
	_, pool := pgtest.Schema(t, 8)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- outbox.Migrate(ctx, pool)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent Migrate: %v", err)
		}
	}
	migs, err := outbox.Migrations()
	if err != nil {
		t.Fatal(err)
	}
	var n int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM reliable_outbox_migrations`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != len(migs) {
		t.Fatalf("history holds %d versions after 4 concurrent Migrate calls, want %d", n, len(migs))
	}
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		return outbox.Add(ctx, tx, &reliable.Message{ID: "m1", Topic: "orders", Key: "k1", Payload: []byte("x")})
	})
	if err != nil {
		t.Fatalf("Add on the migrated tables: %v", err)
	}
	for _, m := range migs {
		if _, err := pool.Exec(ctx, m.SQL); err != nil {
			t.Fatalf("running %s again: %v", m.Name, err)
		}
	}
	st, err := outbox.ReadStatus(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}
	if st.Pending != 1 {
		t.Fatalf("after re-running the migrations: %d pending rows, want the 1 added", st.Pending)
	}
}
