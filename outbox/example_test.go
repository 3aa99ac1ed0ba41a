package outbox_test

import (
	"context"
	"log"
	"os"
	"os/signal"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/adapters/kafka"
	"github.com/reliable-go/reliable/outbox"
)

// The order service writes the order and its event in one transaction: both
// commit, or neither does.
func ExampleAdd() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()

	paid := &reliable.Message{Topic: "orders", Key: "order-42", Type: "order.paid", Payload: []byte(`{"id":"order-42","status":"paid"}`)}
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `UPDATE orders SET status = 'paid' WHERE id = $1`, "order-42"); err != nil {
			return err
		}
		return outbox.Add(ctx, tx, paid)
	})
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("committed; consumers will deduplicate on %s", paid.ID)
}

// A relay publishes committed rows to Kafka until the process is stopped.
// Run one or more per deployment; they share the work by key.
func ExampleRelay() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	if err := outbox.Migrate(ctx, pool); err != nil {
		log.Fatal(err)
	}
	pub, err := kafka.NewProducer(kafka.Config{Brokers: []string{"127.0.0.1:9092"}})
	if err != nil {
		log.Fatal(err)
	}
	defer pub.Close()
	relay, err := outbox.NewRelay(pool, pub, outbox.Config{Instance: os.Getenv("POD_NAME")})
	if err != nil {
		log.Fatal(err)
	}
	if err := relay.Run(ctx); err != nil {
		log.Fatal(err)
	}
}

// Operators inspect the outbox and resolve dead rows.
func ExampleReadStatus() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	st, err := outbox.ReadStatus(ctx, pool)
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("pending %d, oldest %s, dead %d", st.Pending, st.OldestPending, st.Dead)
	dead, err := outbox.DeadRows(ctx, pool, 10)
	if err != nil {
		log.Fatal(err)
	}
	for _, row := range dead {
		log.Printf("row %d (%s): %s", row.ID, row.Message, row.LastError)
		// After fixing the cause: outbox.Retry(ctx, pool, row.ID)
		// or give up on it:       outbox.Discard(ctx, pool, row.ID)
	}
}
