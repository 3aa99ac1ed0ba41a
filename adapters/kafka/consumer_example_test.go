package kafka_test

import (
	"context"
	"fmt"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/adapters/kafka"
	"github.com/reliable-go/reliable/consumer"
	"github.com/reliable-go/reliable/idempotency"
)

// The drop-in Kafka consumer: dedupe in Redis or PostgreSQL, the ordered
// retry table in PostgreSQL, 32 keys at a time.
func ExampleNewConsumer() {
	var (
		store idempotency.Store   // idempotency.NewRedis(...) or NewPostgres(...)
		table consumer.RetryTable // retry.NewTable(pool, retry.TableConfig{Group: "kitchen"})
	)
	handler := reliable.HandlerFunc(func(ctx context.Context, m *reliable.Message) error {
		return nil // apply the event; return reliable.Retryable or reliable.Permanent on failure
	})
	c, err := kafka.NewConsumer(kafka.Config{
		Brokers:     []string{"127.0.0.1:9092"},
		Environment: "prod",
		Consumer:    kafka.ConsumerConfig{Group: "kitchen"},
	}, handler, consumer.Config{Topic: "orders", Dedupe: store, RetryTable: table, Concurrency: 32})
	if err != nil {
		fmt.Println(err)
		return
	}
	_ = c.Run(context.Background()) // until the context ends; commits on the way out
}
