package idempotency_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/idempotency"
	"github.com/reliable-go/reliable/internal/pgmigrate/pgtest"
)

// Migrations renders plain SQL for the placement a PostgresConfig names: no
// template action is left, and every statement names the placed table.
func TestMigrationsRenderPlacement(t *testing.T) {
	t.Parallel()
	migs, err := idempotency.Migrations(idempotency.PostgresConfig{Schema: "app", Table: "seen"})
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
		if strings.Contains(m.SQL, "{{") || strings.Contains(m.SQL, idempotency.DefaultTable) {
			t.Errorf("%s is not rendered for app.seen:\n%s", m.Name, m.SQL)
		}
		if !strings.Contains(m.SQL, `"app"."seen"`) {
			t.Errorf("%s does not name \"app\".\"seen\":\n%s", m.Name, m.SQL)
		}
	}
	def, err := idempotency.Migrations(idempotency.PostgresConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(def[0].SQL, `CREATE TABLE IF NOT EXISTS "`+idempotency.DefaultTable+`" (`) {
		t.Errorf("the zero PostgresConfig does not place %s in the search_path:\n%s", idempotency.DefaultTable, def[0].SQL)
	}
	_, err = idempotency.Migrations(idempotency.PostgresConfig{Table: strings.Repeat("t", 41)})
	if !errors.Is(err, reliable.ErrInvalidConfig) {
		t.Errorf("41-byte table name: err = %v, want ErrInvalidConfig", err)
	}
}

// Migrate, run by several instances at once, creates the placed table once
// (the history holds each version once) and a store on the same config
// works on it; PostgresStore.Migrate then has nothing left to do, and the
// plain SQL of Migrations can be run again on the migrated table.
func TestMigrateFunctionConcurrentAndRerunnable(t *testing.T) {
	t.Parallel()
	schema, pool := pgtest.Schema(t, 8)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg := idempotency.PostgresConfig{Namespace: "g", Schema: schema, Table: "seen"}

	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- idempotency.Migrate(ctx, pool, cfg)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent Migrate: %v", err)
		}
	}
	migs, err := idempotency.Migrations(cfg)
	if err != nil {
		t.Fatal(err)
	}
	history := func() int {
		var n int
		q := "SELECT count(*) FROM " + pgx.Identifier{schema, "seen_migrations"}.Sanitize()
		if err := pool.QueryRow(ctx, q).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := history(); n != len(migs) {
		t.Fatalf("history holds %d versions after 4 concurrent Migrate calls, want %d", n, len(migs))
	}

	store, err := idempotency.NewPostgres(pool, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Migrate(ctx); err != nil {
		t.Fatalf("PostgresStore.Migrate after idempotency.Migrate: %v", err)
	}
	if n := history(); n != len(migs) {
		t.Fatalf("history holds %d versions after PostgresStore.Migrate, want %d", n, len(migs))
	}
	if _, err := store.Begin(ctx, "m1"); err != nil {
		t.Fatalf("Begin on the migrated table: %v", err)
	}
	if err := store.Done(ctx, "m1"); err != nil {
		t.Fatalf("Done on the migrated table: %v", err)
	}
	for _, m := range migs {
		if _, err := pool.Exec(ctx, m.SQL); err != nil {
			t.Fatalf("running %s again: %v", m.Name, err)
		}
	}
	st, err := store.Begin(ctx, "m1")
	if err != nil {
		t.Fatal(err)
	}
	if st != idempotency.StatusDone {
		t.Fatalf("after re-running the migrations Begin(m1) = %v, want the record kept done", st)
	}
}
