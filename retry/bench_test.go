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
	tbl, err := retry.NewTable(pool, retry.TableConfig{Group: "bench", TableName: name, Logger: testLogger()})
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
