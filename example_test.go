package reliable_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/reliabletest"
)

type countingAck struct{ acks, nacks *int }

func (c countingAck) Ack(context.Context, *reliable.Delivery) error  { *c.acks++; return nil }
func (c countingAck) Nack(context.Context, *reliable.Delivery) error { *c.nacks++; return nil }

// A handler tells the SDK what to do with a failure by how it wraps the
// error: retry later (without blocking other orders) or dead-letter now.
func ExampleHandlerFunc() {
	errReplicaBehind := errors.New("order not found on the read replica yet")
	h := reliable.HandlerFunc(func(ctx context.Context, msg *reliable.Message) error {
		switch string(msg.Payload) {
		case "":
			return reliable.Permanent(errors.New("empty payload")) // poison: dead-letter at once
		case "unknown-order":
			return reliable.RetryAfter(2*time.Second, errReplicaBehind) // L21: retry later
		}
		return nil
	})
	for _, p := range []string{"order-1:paid", "unknown-order", ""} {
		err := h.Handle(context.Background(), &reliable.Message{Payload: []byte(p)})
		fmt.Printf("%q: err=%v retryable=%v permanent=%v\n", p, err, reliable.IsRetryable(err), reliable.IsPermanent(err))
	}
	// Output:
	// "order-1:paid": err=<nil> retryable=false permanent=false
	// "unknown-order": err=order not found on the read replica yet retryable=true permanent=false
	// "": err=empty payload retryable=false permanent=true
}

// Publish and Subscribe through the broker-agnostic interfaces; here the
// in-memory test double stands in for Kafka or RabbitMQ.
func ExamplePublisher() {
	ctx := context.Background()
	broker := reliabletest.NewBroker(reliabletest.BrokerOptions{})
	broker.CreateTopic("orders")

	var pub reliable.Publisher = broker.Publisher()
	msg := &reliable.Message{Topic: "orders", Key: "order-42", Type: "order.paid", Payload: []byte(`{"status":"paid"}`)}
	if err := pub.Publish(ctx, msg); err != nil {
		fmt.Println("not confirmed, safe to publish again:", err)
		return
	}

	var sub reliable.Subscriber = broker.Subscriber("kitchen", reliabletest.SubscriberOptions{})
	defer sub.Close()
	deliveries, _ := sub.Subscribe(ctx, "orders")
	d := <-deliveries
	fmt.Println(d.Message.Key, d.Message.Type, d.Message.ID == msg.ID)
	_ = d.Ack(ctx) // only once the outcome is durable
	// Output: order-42 order.paid true
}
