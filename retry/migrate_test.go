package retry_test

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
	"github.com/reliable-go/reliable/internal/pgmigrate/pgtest"
	"github.com/reliable-go/reliable/retry"
)

// Migrations renders plain SQL for the placement a TableConfig names: no
// template action is left, and every statement names the placed tables.
func TestMigrationsRenderPlacement(t *testing.T) {
	t.Parallel()
	migs, err := retry.Migrations(retry.TableConfig{Schema: "app", Table: "jobs_retry"})
	if err != nil {
		t.Fatal(err)
	}
	if len(migs) < 4 {
		t.Fatalf("%d migrations, want at least 4", len(migs))
	}
	for i, m := range migs {
		if m.Version != i+1 || !strings.HasPrefix(m.Name, fmt.Sprintf("%03d_", m.Version)) || !strings.HasSuffix(m.Name, ".sql") {
			t.Errorf("migration %d: version %d name %q", i, m.Version, m.Name)
		}
		if strings.Contains(m.SQL, "{{") || strings.Contains(m.SQL, "reliable_retry") {
			t.Errorf("%s is not rendered for app.jobs_retry:\n%s", m.Name, m.SQL)
		}
		if !strings.Contains(m.SQL, `"app"."jobs_retry"`) {
			t.Errorf("%s does not name \"app\".\"jobs_retry\":\n%s", m.Name, m.SQL)
		}
	}
	def, err := retry.Migrations(retry.TableConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(def[0].SQL, `CREATE TABLE IF NOT EXISTS "`+retry.DefaultTable+`" (`) {
		t.Errorf("the zero TableConfig does not place %s in the search_path:\n%s", retry.DefaultTable, def[0].SQL)
	}
	_, err = retry.Migrations(retry.TableConfig{Table: strings.Repeat("t", 41)})
	if !errors.Is(err, reliable.ErrInvalidConfig) {
		t.Errorf("41-byte table name: err = %v, want ErrInvalidConfig", err)
	}
}

// Migrate, run by several instances at once, creates the placed tables once
// (the history holds each version once) and a Table on the same config
// works on them; the method Table.Migrate then has nothing left to do, and
// the plain SQL of Migrations can be run again on the migrated tables (what
// a user switching to a migration tool of their own does).
func TestMigrateFunctionConcurrentAndRerunnable(t *testing.T) {
	t.Parallel()
	schema, pool := pgtest.Schema(t, 8)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg := retry.TableConfig{Group: "g", Schema: schema, Table: "jobs_retry"}

	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- retry.Migrate(ctx, pool, cfg)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent Migrate: %v", err)
		}
	}
	migs, err := retry.Migrations(cfg)
	if err != nil {
		t.Fatal(err)
	}
	history := func() int {
		var n int
		q := "SELECT count(*) FROM " + pgx.Identifier{schema, "jobs_retry_migrations"}.Sanitize()
		if err := pool.QueryRow(ctx, q).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := history(); n != len(migs) {
		t.Fatalf("history holds %d versions after 4 concurrent Migrate calls, want %d", n, len(migs))
	}

	table, err := retry.NewTable(pool, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := table.Migrate(ctx); err != nil {
		t.Fatalf("Table.Migrate after retry.Migrate: %v", err)
	}
	if n := history(); n != len(migs) {
		t.Fatalf("history holds %d versions after Table.Migrate, want %d", n, len(migs))
	}
	msg := &reliable.Message{ID: "m1", Topic: "orders", Key: "k1", Payload: []byte("x")}
	if err := table.Park(ctx, msg, nil); err != nil {
		t.Fatalf("Park on the migrated table: %v", err)
	}
	for _, m := range migs {
		if _, err := pool.Exec(ctx, m.SQL); err != nil {
			t.Fatalf("running %s again: %v", m.Name, err)
		}
	}
	st, err := table.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Pending != 1 {
		t.Fatalf("after re-running the migrations: %d pending entries, want the 1 parked", st.Pending)
	}
}
