package idempotency_test

// Service endpoints for the integration tests come from internal/testenv
// (environment variables, the env file of scripts/services.sh, or
// containers); without them the tests skip, unless RELIABLE_REQUIRE_SERVICES=1.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/reliable-go/reliable/internal/testenv"
)

func testPool(t testing.TB) *pgxpool.Pool {
	return testenv.PostgresPool(t, 12)
}

func testRedis(t testing.TB) *redis.Client {
	t.Helper()
	addr := testenv.RedisAddr(t)
	c := redis.NewClient(&redis.Options{Addr: addr})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("redis: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// uniqueName returns prefix plus random hex, a valid unquoted identifier, so
// parallel runs never share a table or namespace. It is shorter than
// testenv.UniqueName, leaving room for the suffixes of derived index and
// companion table names within PostgreSQL's 63 bytes.
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
