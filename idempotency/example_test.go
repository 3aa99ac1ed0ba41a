package idempotency_test

import (
	"context"
	"fmt"
	"log"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/idempotency"
)

// A handler wrapped with Begin/Done/Abort: a duplicate delivery completes
// without calling the handler (L20).
func Example() {
	ctx := context.Background()
	store := idempotency.NewMemory() // test double; use NewRedis or NewPostgres in production
	handle := func(ctx context.Context, msg *reliable.Message) error {
		fmt.Println("handled", msg.Type)
		return nil
	}
	deliver := func(msg *reliable.Message) error {
		st, err := store.Begin(ctx, msg.ID)
		if err != nil {
			return err
		}
		switch st {
		case idempotency.StatusDone:
			fmt.Println("duplicate skipped")
			return nil
		case idempotency.StatusInProgress:
			return reliable.Retryable(fmt.Errorf("message %s is being processed elsewhere", msg.ID))
		}
		if err := handle(ctx, msg); err != nil {
			_ = store.Abort(ctx, msg.ID)
			return err
		}
		return store.Done(ctx, msg.ID)
	}
	msg := &reliable.Message{ID: "0193-paid", Key: "order-42", Type: "order.paid"}
	_ = deliver(msg)
	_ = deliver(msg) // redelivered after a crash before the commit
	// Output:
	// handled order.paid
	// duplicate skipped
}

func ExampleNewRedis() {
	client := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
	store, err := idempotency.NewRedis(client, idempotency.RedisConfig{Namespace: "kitchen-display"})
	if err != nil {
		log.Fatal(err)
	}
	_ = store // pass it to the consumer
}

// Exactly-once effects for a handler that writes to PostgreSQL: the dedupe
// record commits in the handler's own transaction.
func ExamplePostgresStore_ProcessTx() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, "postgres://localhost/kitchen")
	if err != nil {
		log.Fatal(err)
	}
	store, err := idempotency.NewPostgres(pool, idempotency.PostgresConfig{Namespace: "kitchen-display"})
	if err != nil {
		log.Fatal(err)
	}
	if err := store.Migrate(ctx); err != nil { // once, at start-up
		log.Fatal(err)
	}
	msg := &reliable.Message{ID: "0193-paid", Key: "order-42", Type: "order.paid"}
	st, err := store.ProcessTx(ctx, msg.ID, func(ctx context.Context, tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `UPDATE tickets SET paid = true WHERE order_id = $1`, msg.Key)
		return err
	})
	if err != nil {
		log.Print(err) // rolled back: no effect and no record; retry later
	}
	if st == idempotency.StatusDone {
		log.Print("duplicate skipped")
	}
}

// Natural idempotency without any store (L19): an upsert instead of
// check-then-insert, guarded by the event's version so a replayed or late
// older event never overwrites a newer state. Applying the same event twice,
// or concurrently, leaves the same row.
func Example_upsertWithVersionGuard() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, "postgres://localhost/kitchen")
	if err != nil {
		log.Fatal(err)
	}
	// CREATE TABLE tickets (order_id text PRIMARY KEY, status text NOT NULL, version bigint NOT NULL);
	apply := func(ctx context.Context, orderID, status string, version int64) error {
		tag, err := pool.Exec(ctx, `
INSERT INTO tickets (order_id, status, version) VALUES ($1, $2, $3)
ON CONFLICT (order_id) DO UPDATE SET status = EXCLUDED.status, version = EXCLUDED.version
WHERE tickets.version < EXCLUDED.version`, orderID, status, version)
		if err != nil {
			return reliable.Retryable(err)
		}
		if tag.RowsAffected() == 0 {
			log.Printf("order %s: version %d already applied or superseded", orderID, version)
		}
		return nil
	}
	_ = apply(ctx, "order-42", "paid", 2)
	_ = apply(ctx, "order-42", "paid", 2)   // duplicate: no change
	_ = apply(ctx, "order-42", "placed", 1) // late older event: no change
}
