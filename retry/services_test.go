package retry_test

// Service endpoints for the integration tests. internal/testenv was not yet
// available when these tests were written, so this small helper reads the same
// variables: RELIABLE_POSTGRES_DSN, or the env file
// .cache/services.env written by scripts/services.sh. Without them the tests
// skip, unless RELIABLE_REQUIRE_SERVICES=1.

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

var (
	envOnce sync.Once
	envFile map[string]string
)

func serviceEnv(name string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	envOnce.Do(func() {
		envFile = map[string]string{}
		dir, _ := os.Getwd()
		for ; dir != "/" && dir != "."; dir = filepath.Dir(dir) {
			f, err := os.Open(filepath.Join(dir, ".cache", "services.env"))
			if err != nil {
				continue
			}
			sc := bufio.NewScanner(f)
			for sc.Scan() {
				k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), "=")
				if ok && !strings.HasPrefix(k, "#") {
					envFile[k] = strings.Trim(v, `'"`)
				}
			}
			f.Close()
			return
		}
	})
	return envFile[name]
}

func missing(t testing.TB, what string) {
	t.Helper()
	if os.Getenv("RELIABLE_REQUIRE_SERVICES") == "1" {
		t.Fatalf("%s not configured and RELIABLE_REQUIRE_SERVICES=1", what)
	}
	t.Skipf("%s not configured", what)
}

func testPool(t testing.TB) *pgxpool.Pool {
	t.Helper()
	dsn := serviceEnv("RELIABLE_POSTGRES_DSN")
	if dsn == "" {
		missing(t, "RELIABLE_POSTGRES_DSN")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = 12
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err == nil {
		err = pool.Ping(ctx)
	}
	if err != nil {
		t.Fatalf("postgres: %v", err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// uniqueName returns prefix plus random hex, a valid unquoted identifier, so
// parallel runs never share a table or namespace.
func uniqueName(prefix string) string {
	var b [5]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// dropTable drops a test's tables when it ends.
func dropTable(t testing.TB, pool *pgxpool.Pool, names ...string) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for _, n := range names {
			_, _ = pool.Exec(ctx, "DROP TABLE IF EXISTS "+n)
		}
	})
}
