package reliable_test

import (
	"context"
	"log"
	"os"
	"os/signal"
	"syscall"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/adapters/kafka"
	"github.com/reliable-go/reliable/consumer"
	"github.com/reliable-go/reliable/idempotency"
	"github.com/reliable-go/reliable/outbox"
	"github.com/reliable-go/reliable/retry"
	"github.com/reliable-go/reliable/service"
)

// This file is the README's quick start, compiled: every Go block of the
// README's "Quick start" section must appear in it verbatim
// (TestReadmeQuickStartIsCompiled), so the README cannot drift from the API.

// runOrderService relays the order service's outbox to Kafka until ctx ends.
func runOrderService(ctx context.Context, pool *pgxpool.Pool, brokers []string) error {
	if err := outbox.Migrate(ctx, pool); err != nil { // or schema/postgres with your tool
		return err
	}
	pub, err := kafka.NewProducer(kafka.Config{Brokers: brokers, Environment: "prod"})
	if err != nil {
		return err // bad config lists every problem; a weak topic fails the audit
	}
	defer pub.Close()
	relay, err := outbox.NewRelay(pool, pub, outbox.Config{})
	if err != nil {
		return err
	}
	g := service.New(service.Config{})
	g.Add("outbox relay", relay) // per key in commit order; several relays are safe
	return g.Run(ctx)            // until SIGTERM, then stops within 30 s
}

// payOrder marks an order paid and writes its event in the same transaction.
func payOrder(ctx context.Context, pool *pgxpool.Pool, id string) error {
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `UPDATE orders SET status = 'paid' WHERE id = $1`, id); err != nil {
			return err
		}
		return outbox.Add(ctx, tx, &reliable.Message{Topic: "orders", Key: id, Type: "order.paid",
			Payload: []byte(`{"order_id":"` + id + `","status":"paid"}`)}) // IDs and status only (L13)
	})
}

// runKitchen consumes the order events until ctx ends.
func runKitchen(ctx context.Context, pool *pgxpool.Pool, rdb *redis.Client, brokers []string) error {
	dedupe, err := idempotency.NewRedis(rdb, idempotency.RedisConfig{Namespace: "kitchen"})
	if err != nil {
		return err
	}
	tableCfg := retry.TableConfig{Group: "kitchen"}
	if err := retry.Migrate(ctx, pool, tableCfg); err != nil { // or schema/postgres with your tool
		return err
	}
	table, err := retry.NewTable(pool, tableCfg)
	if err != nil {
		return err
	}
	handler := reliable.HandlerFunc(func(ctx context.Context, m *reliable.Message) error {
		// apply the event with an upsert (L19); return reliable.Retryable(err) to retry later
		// without blocking other orders, reliable.Permanent(err) to dead-letter it now
		return apply(ctx, m)
	})
	c, err := kafka.NewConsumer(kafka.Config{Brokers: brokers, Environment: "prod",
		Consumer: kafka.ConsumerConfig{Group: "kitchen"}}, handler,
		consumer.Config{Topic: "orders", Dedupe: dedupe, RetryTable: table, Concurrency: 32})
	if err != nil {
		return err
	}
	g := service.New(service.Config{})
	g.Add("kitchen consumer", c) // also runs the retry table's retrier
	return g.Run(ctx)            // drains, commits and leaves the group on the way out
}

func apply(context.Context, *reliable.Message) error { return nil }

// The quick start's two services. Run only where the services exist; the
// example is compiled, not run, by go test.
func Example_quickStart() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	brokers := []string{"127.0.0.1:9092"}
	go func() {
		if err := runOrderService(ctx, pool, brokers); err != nil {
			log.Print(err)
		}
	}()
	if err := payOrder(ctx, pool, "order-7"); err != nil {
		log.Print(err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
	if err := runKitchen(ctx, pool, rdb, brokers); err != nil {
		log.Fatal(err)
	}
}
