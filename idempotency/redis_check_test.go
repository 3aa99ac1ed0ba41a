package idempotency_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/reliable-go/reliable/idempotency"
)

// syncBuffer is a bytes.Buffer safe for a logger and a test to share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Issue 15 item 7: the Redis store checks the server settings that break it.
// With the test server's noeviction, AOF on and no replicas, Verify passes
// and the store logs nothing; with an eviction policy (set on the shared
// test server for the test's span; it evicts nothing there, since
// maxmemory is 0) Verify names it and the store's first Begin logs it as a
// warning. Before, nothing was checked.
func TestRedisStoreWarnsOfAnEvictionPolicy(t *testing.T) {
	client := testRedis(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var logs syncBuffer
	newStore := func() *idempotency.RedisStore {
		s, err := idempotency.NewRedis(client, idempotency.RedisConfig{Namespace: uniqueName("ns"),
			Logger: slog.New(slog.NewTextHandler(&logs, nil))})
		must(t, err)
		return s
	}
	if err := newStore().Verify(ctx); err != nil {
		t.Fatalf("Verify on the test server (noeviction, AOF, no replicas): %v", err)
	}

	old, err := client.ConfigGet(ctx, "maxmemory-policy").Result()
	must(t, err)
	must(t, client.ConfigSet(ctx, "maxmemory-policy", "allkeys-lru").Err())
	t.Cleanup(func() { _ = client.ConfigSet(context.Background(), "maxmemory-policy", old["maxmemory-policy"]).Err() })

	s := newStore()
	err = s.Verify(ctx)
	if err == nil || !strings.Contains(err.Error(), "maxmemory-policy is allkeys-lru") {
		t.Fatalf("Verify with allkeys-lru: %v", err)
	}
	t.Logf("Verify: %v", err)
	if _, err := s.Begin(ctx, "m"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(logs.String(), "allkeys-lru") {
		if time.Now().After(deadline) {
			t.Fatalf("no warning logged on the first Begin; logs: %q", logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !strings.Contains(logs.String(), "level=WARN") {
		t.Fatalf("logged, but not as a warning: %q", logs.String())
	}
}
