package idempotency_test

import (
	"context"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/reliable-go/reliable/idempotency"
	"github.com/reliable-go/reliable/internal/testenv"
)

type readiness interface {
	Ready(ctx context.Context) error
}

// checkReadyThroughFaults asserts s is ready, not ready (with the reason,
// within a bounded time) while its store is down and while it is
// black-holed, and ready again once it heals.
func checkReadyThroughFaults(t *testing.T, s readiness, p *testenv.FaultProxy, reason string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.Ready(ctx); err != nil {
		t.Fatalf("Ready with the store up: %v", err)
	}
	for _, fault := range []struct {
		name string
		do   func()
	}{{"down", p.Down}, {"black-holed", p.Blackhole}} {
		fault.do()
		start := time.Now()
		err := s.Ready(ctx)
		took := time.Since(start)
		if err == nil || !strings.Contains(err.Error(), reason) {
			t.Fatalf("Ready with the store %s: %v, want an error saying %q", fault.name, err, reason)
		}
		if took > 3*time.Second {
			t.Fatalf("Ready with the store %s took %s, want at most its 2 s bound", fault.name, took)
		}
		t.Logf("store %s: not ready after %s: %v", fault.name, took.Round(time.Millisecond), err)
		p.Up()
		deadline := time.Now().Add(10 * time.Second)
		for s.Ready(ctx) != nil {
			if time.Now().After(deadline) {
				t.Fatalf("not ready 10 s after the store healed: %v", s.Ready(ctx))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// Issue 17: the Redis store's readiness follows Redis.
func TestRedisStoreReadyFollowsRedis(t *testing.T) {
	t.Parallel()
	p := testenv.NewFaultProxy(t, testenv.RedisAddr(t))
	c := redis.NewClient(&redis.Options{Addr: p.Addr(), MaxRetries: -1, DialTimeout: time.Second})
	t.Cleanup(func() { _ = c.Close() })
	s, err := idempotency.NewRedis(c, idempotency.RedisConfig{Namespace: "kitchen"})
	must(t, err)
	checkReadyThroughFaults(t, s, p, "redis store unreachable")
}

// Issue 17: the PostgreSQL store's readiness follows the database.
func TestPostgresStoreReadyFollowsTheDatabase(t *testing.T) {
	t.Parallel()
	cfg, err := pgxpool.ParseConfig(testenv.PostgresDSN(t))
	must(t, err)
	p := testenv.NewFaultProxy(t, net.JoinHostPort(cfg.ConnConfig.Host, strconv.Itoa(int(cfg.ConnConfig.Port))))
	cfg.ConnConfig.Host, cfg.ConnConfig.Port = p.Host(), p.Port()
	cfg.ConnConfig.ConnectTimeout = time.Second
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	must(t, err)
	t.Cleanup(func() { p.Up(); pool.Close() })
	s, err := idempotency.NewPostgres(pool, idempotency.PostgresConfig{Namespace: "kitchen"})
	must(t, err)
	checkReadyThroughFaults(t, s, p, "postgres store unreachable")
}
