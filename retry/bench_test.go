package retry_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/retry"
)

// The retry-table check the consumer makes for every message: Blocked on a
// key with no entries, in a table holding 1000 entries of other keys (a
// realistic, non-empty retry table).
func BenchmarkBlocked(b *testing.B) {
	pool := testPool(b)
	name := uniqueName("rt_")
	dropTable(b, pool, name, name+"_leases", name+"_migrations")
	tbl, err := retry.NewTable(pool, retry.TableConfig{Group: "bench", Table: name, Logger: testLogger()})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := tbl.Migrate(ctx); err != nil {
		b.Fatal(err)
	}
	for i := range 1000 {
		m := &reliable.Message{ID: fmt.Sprint("parked-", i), Topic: "orders", Key: fmt.Sprint("blocked-", i%100)}
		if err := tbl.Park(ctx, m, nil); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("free-key", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			if blocked, err := tbl.Blocked(ctx, fmt.Sprint("order-", i)); err != nil || blocked {
				b.Fatal(blocked, err)
			}
		}
	})
	b.Run("blocked-key", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			if blocked, err := tbl.Blocked(ctx, fmt.Sprint("blocked-", i%100)); err != nil || !blocked {
				b.Fatal(blocked, err)
			}
		}
	})
	b.Run("park", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			m := &reliable.Message{ID: fmt.Sprint("bench-", i), Topic: "orders", Key: fmt.Sprint("k-", i%100), Payload: make([]byte, 200)}
			if err := tbl.Park(ctx, m, nil); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// L17: claiming due keys stays cheap however long the queues behind blocked
// keys grow: 100k entries behind 1000 keys whose heads are dead or backing
// off, plus 1000 due keys. Claims read only the due heads.
func BenchmarkClaimWithBacklog(b *testing.B) {
	pool := testPool(b)
	name := uniqueName("rt_")
	dropTable(b, pool, name, name+"_leases", name+"_migrations")
	tbl, err := retry.NewTable(pool, retry.TableConfig{Group: "bench", Table: name, Logger: testLogger()})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := tbl.Migrate(ctx); err != nil {
		b.Fatal(err)
	}
	// Bulk-load the backlog in SQL: heads first (lower IDs), then entries
	// behind them without a due time, as Park leaves them.
	if _, err := pool.Exec(ctx, `INSERT INTO `+name+` (grp, lane, message_id, msg_key, topic, msg_type, state, attempts, next_attempt_at, payload)
SELECT 'bench', 'k:' || (i % 2000), 'm' || i, '' || (i % 2000), 'orders', '',
  CASE WHEN i < 1000 AND i % 2 = 0 THEN 'dead' ELSE 'pending' END, 0,
  CASE WHEN i >= 2000 THEN NULL WHEN i < 1000 THEN now() + interval '1 hour' ELSE now() END, repeat('x', 200)::bytea
FROM generate_series(0, 100999) i`); err != nil {
		b.Fatal(err)
	}
	if _, err := pool.Exec(ctx, "ANALYZE "+name); err != nil {
		b.Fatal(err)
	}
	r, err := retry.NewRetrier(tbl, reliable.HandlerFunc(func(context.Context, *reliable.Message) error { return nil }), retry.RetrierConfig{})
	if err != nil {
		b.Fatal(err)
	}
	for i := 0; b.Loop(); i++ {
		lanes, err := retry.Claim(ctx, r, 4, fmt.Sprint("bench-", i))
		if err != nil || len(lanes) != 4 {
			b.Fatal(lanes, err)
		}
		if _, err := pool.Exec(ctx, `DELETE FROM `+name+`_leases`); err != nil {
			b.Fatal(err)
		}
	}
}
