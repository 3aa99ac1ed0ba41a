package rabbitmq_test

import (
	"context"
	"fmt"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/adapters/rabbitmq"
	"github.com/reliable-go/reliable/consumer"
	"github.com/reliable-go/reliable/idempotency"
)

// The drop-in RabbitMQ consumer of the group "kitchen": dedupe in Redis or
// PostgreSQL; without a retry table, poison messages go to the group's
// dead-letter queue.
func ExampleNewConsumer() {
	var store idempotency.Store // idempotency.NewRedis(...) or NewPostgres(...)
	handler := reliable.HandlerFunc(func(ctx context.Context, m *reliable.Message) error {
		return nil // apply the event; return reliable.Retryable or reliable.Permanent on failure
	})
	c, err := rabbitmq.NewConsumer("amqp://guest:guest@127.0.0.1:5672/", "kitchen", handler,
		consumer.Config{Topic: "orders", Dedupe: store, Concurrency: 32})
	if err != nil {
		fmt.Println(err)
		return
	}
	_ = c.Run(context.Background()) // until the context ends; acks only what completed
}
