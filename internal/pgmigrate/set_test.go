package pgmigrate_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/internal/pgmigrate"
	"github.com/reliable-go/reliable/internal/pgmigrate/pgtest"
)

// migration stands for a package's exported Migration type: the same
// fields under docs of its own.
type migration struct {
	Version int
	Name    string
	SQL     string
}

var twoFiles = fstest.MapFS{
	"m/001_create.sql": {Data: []byte(`CREATE TABLE IF NOT EXISTS {{.Table}} (a int);`)},
	"m/002_index.sql":  {Data: []byte(`CREATE INDEX IF NOT EXISTS {{ident "_a"}} ON {{.Table}} (a);`)},
}

// A Set places its migrations where a package's configuration says (the
// schema-qualified table, or DefaultTable in the search_path), refuses a
// table name PostgreSQL would truncate with ErrInvalidConfig before it
// touches a database, and names its component in every error.
func TestSetPlacesAndChecks(t *testing.T) {
	t.Parallel()
	set := pgmigrate.Set{Component: "comp", FS: twoFiles, Dir: "m", DefaultTable: "comp_default"}

	migs, err := pgmigrate.Migrations[migration](set, "app", "t")
	if err != nil {
		t.Fatal(err)
	}
	if len(migs) != 2 || migs[0].Name != "001_create.sql" || migs[1].Version != 2 {
		t.Fatalf("migrations %+v", migs)
	}
	if want := `CREATE INDEX IF NOT EXISTS "t_a" ON "app"."t" (a);`; migs[1].SQL != want {
		t.Errorf("placed in app.t: %q, want %q", migs[1].SQL, want)
	}
	def, err := pgmigrate.Migrations[migration](set, "", "")
	if err != nil {
		t.Fatal(err)
	}
	if want := `CREATE TABLE IF NOT EXISTS "comp_default" (a int);`; def[0].SQL != want {
		t.Errorf("zero placement: %q, want %q", def[0].SQL, want)
	}

	if _, err := pgmigrate.Migrations[migration](set, "", strings.Repeat("t", 40)); err != nil {
		t.Errorf("40-byte table name: %v", err)
	}
	long := strings.Repeat("t", 41)
	_, err = pgmigrate.Migrations[migration](set, "", long)
	if !errors.Is(err, reliable.ErrInvalidConfig) || !strings.Contains(err.Error(), "comp migrations") {
		t.Errorf("Migrations with a 41-byte table name: err = %v, want ErrInvalidConfig naming comp migrations", err)
	}
	// A nil database: the placement is refused before any connection.
	if err := set.Apply(context.Background(), nil, "", long); !errors.Is(err, reliable.ErrInvalidConfig) {
		t.Errorf("Apply with a 41-byte table name: err = %v, want ErrInvalidConfig", err)
	}

	bad := pgmigrate.Set{Component: "comp", FS: fstest.MapFS{"m/001_a.sql": {Data: []byte("{{.Nope}}")}}, Dir: "m"}
	if _, err := pgmigrate.Migrations[migration](bad, "", "t"); err == nil || !strings.HasPrefix(err.Error(), "comp: migrations: pgmigrate: ") {
		t.Errorf("bad template: err = %v, want it prefixed comp: migrations:", err)
	}
}

// history counts the versions recorded for schema.table.
func history(ctx context.Context, t *testing.T, db *pgx.Conn, schema, table string) int {
	t.Helper()
	var n int
	q := "SELECT count(*) FROM " + pgx.Identifier{schema, table + "_migrations"}.Sanitize()
	if err := db.QueryRow(ctx, q).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// Several instances applying a Set at once apply each migration once; a
// release that adds a migration applies only the new one; a migration that
// fails leaves nothing behind (all pending migrations share one
// transaction), and its error names the component and the file.
func TestSetApplyOnceUpgradeAndFailure(t *testing.T) {
	t.Parallel()
	schema, pool := pgtest.Schema(t, 8)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	db := conn.Conn()

	set := pgmigrate.Set{Component: "comp", FS: twoFiles, Dir: "m"}
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- set.Apply(ctx, pool, schema, "t")
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent Apply: %v", err)
		}
	}
	if n := history(ctx, t, db, schema, "t"); n != 2 {
		t.Fatalf("history holds %d versions after 4 concurrent Apply calls, want 2", n)
	}

	upgraded := fstest.MapFS{"m/003_b.sql": {Data: []byte(`ALTER TABLE {{.Table}} ADD COLUMN b int;`)}}
	for name, f := range twoFiles {
		upgraded[name] = f
	}
	// 003 is not idempotent: applying it twice would fail on the column.
	for range 2 {
		if err := (pgmigrate.Set{Component: "comp", FS: upgraded, Dir: "m"}).Apply(ctx, pool, schema, "t"); err != nil {
			t.Fatalf("Apply of the upgraded set: %v", err)
		}
	}
	if n := history(ctx, t, db, schema, "t"); n != 3 {
		t.Fatalf("history holds %d versions after the upgrade, want 3", n)
	}
	if _, err := db.Exec(ctx, "INSERT INTO "+pgx.Identifier{schema, "t"}.Sanitize()+" (a, b) VALUES (1, 2)"); err != nil {
		t.Fatalf("the upgraded table: %v", err)
	}

	failing := pgmigrate.Set{Component: "comp", Dir: "m", FS: fstest.MapFS{
		"m/001_create.sql": {Data: []byte(`CREATE TABLE {{.Table}} (a int);`)},
		"m/002_bad.sql":    {Data: []byte(`ALTER TABLE {{.Table}} ADD COLUMN a int;`)},
	}}
	err = failing.Apply(ctx, pool, schema, "f")
	if err == nil || !strings.HasPrefix(err.Error(), "comp: migrate: pgmigrate: apply 002_bad.sql") {
		t.Fatalf("failing migration: err = %v, want it to name comp and 002_bad.sql", err)
	}
	var left int
	if err := db.QueryRow(ctx, `SELECT count(*) FROM pg_tables WHERE schemaname = $1 AND tablename LIKE 'f%'`, schema).Scan(&left); err != nil {
		t.Fatal(err)
	}
	if left != 0 {
		t.Fatalf("a failed Apply left %d tables behind, want none", left)
	}
}

// With LockSQL set, Apply waits on that advisory lock (the outbox keeps the
// key of its older runner so that old and new instances take turns): while
// another session holds it, Apply applies nothing, and once it is released
// Apply finishes.
func TestSetApplyTakesTurnsOnLockSQL(t *testing.T) {
	t.Parallel()
	schema, pool := pgtest.Schema(t, 4)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	key := "hashtextextended('pgmigrate-test:" + schema + "', 0)"
	holder, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Release()
	if _, err := holder.Exec(ctx, "SELECT pg_advisory_lock("+key+")"); err != nil {
		t.Fatal(err)
	}

	set := pgmigrate.Set{Component: "comp", FS: twoFiles, Dir: "m", LockSQL: key}
	done := make(chan error, 1)
	go func() { done <- set.Apply(ctx, pool, schema, "t") }()

	// Bounded wait for the migrator to block on the advisory lock.
	deadline := time.Now().Add(20 * time.Second)
	for {
		var waiting int
		err := holder.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			 WHERE wait_event_type = 'Lock' AND wait_event = 'advisory' AND query LIKE '%' || $1 || '%'`,
			"pgmigrate-test:"+schema).Scan(&waiting)
		if err != nil {
			t.Fatal(err)
		}
		if waiting == 1 {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("Apply returned (%v) while another session held its LockSQL lock", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("Apply never waited on its LockSQL advisory lock")
		}
		time.Sleep(10 * time.Millisecond)
	}
	var tables int
	if err := holder.QueryRow(ctx, `SELECT count(*) FROM pg_tables WHERE schemaname = $1`, schema).Scan(&tables); err != nil {
		t.Fatal(err)
	}
	if tables != 0 {
		t.Fatalf("%d tables exist while Apply waits on the lock, want none", tables)
	}
	if _, err := holder.Exec(ctx, "SELECT pg_advisory_unlock("+key+")"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Apply after the lock was released: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Apply did not finish within 30s of the lock's release")
	}
	if n := history(ctx, t, holder.Conn(), schema, "t"); n != 2 {
		t.Fatalf("history holds %d versions, want 2", n)
	}
}
