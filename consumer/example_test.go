package consumer_test

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/consumer"
	"github.com/reliable-go/reliable/idempotency"
	"github.com/reliable-go/reliable/reliabletest"
)

// The pipeline on the in-memory broker and stores (test doubles, not
// durable): a transient failure parks "placed", the later events of the same
// order queue behind it, and the retrier applies all three in order.
func ExampleNew() {
	broker := reliabletest.NewBroker(reliabletest.BrokerOptions{})
	broker.CreateTopic("orders")
	for _, status := range []string{"placed", "paid", "completed"} {
		_ = broker.Publisher().Publish(context.Background(),
			&reliable.Message{Topic: "orders", Key: "order-7", Type: "order." + status})
	}

	failed := false
	applied := make(chan string, 3)
	h := reliable.HandlerFunc(func(ctx context.Context, m *reliable.Message) error {
		if m.Type == "order.placed" && !failed {
			failed = true
			return reliable.Retryable(fmt.Errorf("order service timed out")) // L09
		}
		applied <- m.Type
		return nil
	})
	c, err := consumer.New(broker.Subscriber("kitchen", reliabletest.SubscriberOptions{}), h, consumer.Config{
		Topic:      "orders",
		Dedupe:     idempotency.NewMemory(),
		RetryTable: reliabletest.NewRetryTable(),
		Logger:     slog.New(slog.DiscardHandler),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	go func() { _ = c.Run(ctx) }()
	for range 3 {
		fmt.Println(<-applied)
	}
	// Output:
	// order.placed
	// order.paid
	// order.completed
}
