package kitchen_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/reliable-go/reliable/examples/internal/env"
	"github.com/reliable-go/reliable/examples/kitchen"
	"github.com/reliable-go/reliable/examples/orders"
	"github.com/reliable-go/reliable/idempotency"
	"github.com/reliable-go/reliable/internal/testenv"
)

func testPool(t *testing.T) *pgxpool.Pool {
	dsn := testenv.PostgresDSN(t)
	ctx := ctxT(t, 10*time.Second)
	schema := testenv.UniqueName(t, "ex_kitchen")
	pool, err := env.OpenPostgres(ctx, dsn, schema, 12)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = env.DropSchema(context.Background(), pool, schema)
		pool.Close()
	})
	return pool
}

func TestPostgresStoreVersionGuard(t *testing.T) {
	pool := testPool(t)
	s := kitchen.NewPostgresStore(pool, nil)
	if err := s.Migrate(ctxT(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	testStoreVersionGuard(t, s)
}

// L19: two deliveries of one order's first event racing each other both
// upsert; neither fails with a duplicate key, and the order exists once.
func TestPostgresStoreConcurrentFirstDeliveries(t *testing.T) {
	ctx := ctxT(t, 20*time.Second)
	pool := testPool(t)
	s := kitchen.NewPostgresStore(pool, nil)
	if err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		id := fmt.Sprintf("race-%d", i)
		var wg sync.WaitGroup
		errs := make(chan error, 4)
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := s.Apply(ctx, kitchen.Update{MessageID: "m-" + id, OrderID: id, Status: orders.Placed, Version: 1, Dishes: dishes})
				errs <- err
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatalf("concurrent apply of %s: %v", id, err)
			}
		}
	}
	list, err := s.List(ctx)
	if err != nil || len(list) != 20 {
		t.Fatalf("%d orders, %v; want 20", len(list), err)
	}
	for _, o := range list {
		if len(o.Dishes) != 2 {
			t.Fatalf("order %s has %d dishes", o.ID, len(o.Dishes))
		}
	}
	ledger, _ := s.Ledger(ctx)
	effective := 0
	for _, e := range ledger {
		if e.Effective {
			effective++
		}
	}
	if effective != 20 {
		t.Fatalf("%d effective applies, want 20", effective)
	}
}

// L20: with the dedupe store on the same database, Apply records the
// message as done in its own transaction.
func TestPostgresStoreRecordsDedupeInTheSameTransaction(t *testing.T) {
	ctx := ctxT(t, 10*time.Second)
	pool := testPool(t)
	dedup, err := idempotency.NewPostgres(pool, idempotency.PostgresConfig{Namespace: "kitchen"})
	if err != nil {
		t.Fatal(err)
	}
	if err := dedup.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	s := kitchen.NewPostgresStore(pool, dedup)
	if err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	if st, err := dedup.Begin(ctx, "m-1"); err != nil || st != idempotency.StatusNew {
		t.Fatalf("begin: %v %v", st, err)
	}
	if _, err := s.Apply(ctx, kitchen.Update{MessageID: "m-1", OrderID: "o", Status: orders.Placed, Version: 1, Dishes: dishes}); err != nil {
		t.Fatal(err)
	}
	if st, err := dedup.Begin(ctx, "m-1"); err != nil || st != idempotency.StatusDone {
		t.Fatalf("after apply: %v %v, want done", st, err)
	}
}
