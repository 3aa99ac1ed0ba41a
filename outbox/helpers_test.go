package outbox_test

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/reliable-go/reliable/outbox"
)

// serviceEnv returns a service endpoint from the environment or from the
// .cache/services.env file that scripts/services.sh writes at the repository
// root.
func serviceEnv(name string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	dir, _ := os.Getwd()
	for range 5 {
		f, err := os.Open(filepath.Join(dir, ".cache", "services.env"))
		if err == nil {
			defer f.Close()
			sc := bufio.NewScanner(f)
			for sc.Scan() {
				k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), "=")
				if ok && k == name {
					return strings.Trim(v, `'"`)
				}
			}
			return ""
		}
		dir = filepath.Dir(dir)
	}
	return ""
}

func requireService(t testing.TB, name string) string {
	t.Helper()
	v := serviceEnv(name)
	if v == "" {
		if os.Getenv("RELIABLE_REQUIRE_SERVICES") == "1" {
			t.Fatalf("%s is not set and RELIABLE_REQUIRE_SERVICES=1", name)
		}
		t.Skipf("%s not set; start the services with scripts/services.sh up", name)
	}
	return v
}

// testDB is one test's private schema on the real PostgreSQL.
type testDB struct {
	pool   *pgxpool.Pool
	schema string
	dsn    string
}

// newTestDB creates a unique schema, migrates the outbox into it and returns
// a pool whose search_path points at it.
func newTestDB(t testing.TB, maxConns int32) *testDB {
	t.Helper()
	dsn := requireService(t, "RELIABLE_POSTGRES_DSN")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	schema := fmt.Sprintf("outbox_test_%d_%d", time.Now().UnixNano(), rand.IntN(1e6))
	admin, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatalf("create schema: %v", err)
	}
	db := &testDB{schema: schema, dsn: dsn}
	db.pool = db.newPool(t, maxConns)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			return
		}
		defer conn.Close(ctx)
		_, _ = conn.Exec(ctx, "DROP SCHEMA "+schema+" CASCADE")
	})
	if err := outbox.Migrate(ctx, db.pool); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	return db
}

// newPool opens another pool on the test schema.
func (db *testDB) newPool(t testing.TB, maxConns int32) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(db.dsn)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.RuntimeParams["search_path"] = db.schema
	cfg.MaxConns = maxConns
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

func (db *testDB) count(t testing.TB, sql string, args ...any) int64 {
	t.Helper()
	var n int64
	if err := db.pool.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
