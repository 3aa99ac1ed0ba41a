package idempotency_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/reliable-go/reliable/idempotency"
)

// Issue 15 item 8 (L17): retention runs by itself. A store with a 50 ms
// retention and a 100 ms cleanup interval records 20 messages done; nobody
// calls Cleanup or RunCleanup, the consumer just keeps calling Begin. The
// expired records are deleted. Before, they stayed until someone wired up
// RunCleanup.
func TestPostgresStoreCleansUpWithoutWiring(t *testing.T) {
	t.Parallel()
	pool := testPool(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	table := uniqueName("idem_")
	dropTable(t, pool, table, table+"_migrations")
	s := newPostgresStore(t, pool, idempotency.PostgresConfig{Table: table, Retention: 50 * time.Millisecond, CleanupInterval: 100 * time.Millisecond})
	for i := range 20 {
		id := fmt.Sprint("old-", i)
		if _, err := s.Begin(ctx, id); err != nil {
			t.Fatal(err)
		}
		must(t, s.Done(ctx, id))
	}
	count := func() int {
		var n int
		must(t, pool.QueryRow(ctx, `SELECT count(*) FROM `+table+` WHERE id LIKE 'old-%'`).Scan(&n))
		return n
	}
	// The background cleanup may already have deleted some: on a loaded
	// machine writing the 20 records outlasts their 50 ms retention, and
	// Begin and Done both start the cleanup (a CI run saw 11 of 20 left).
	// Deleted early is still deleted without wiring.
	if n := count(); n > 20 {
		t.Fatalf("%d records, want at most 20", n)
	}
	deadline := time.Now().Add(5 * time.Second)
	for i := 0; count() > 0; i++ {
		if time.Now().After(deadline) {
			t.Fatalf("%d expired records left 5 s after their retention, with Begin traffic", count())
		}
		if _, err := s.Begin(ctx, fmt.Sprint("new-", i)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
