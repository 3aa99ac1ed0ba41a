package rabbitmq_test

import (
	"context"
	"log"
	"time"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/adapters/rabbitmq"
	"github.com/reliable-go/reliable/producer"
)

// The order service declares the topic and its consumer groups once, then
// publishes through the durable producer: Publish returns nil only after the
// broker confirmed the persistent message into every group's queue.
func ExampleNewProducer() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	url := "amqp://reliable:reliable@127.0.0.1:5672/"

	if err := rabbitmq.Declare(ctx, url, "prod.orders", []string{"kitchen"}); err != nil {
		log.Fatal(err)
	}
	pub, err := rabbitmq.NewProducer(url,
		rabbitmq.WithProducerConfig(producer.Config{Environment: "prod", Source: "order-service"}))
	if err != nil {
		log.Fatal(err) // errors.Is(err, reliable.ErrNotAuthorized) for a wrong password
	}
	defer pub.Close()

	msg := &reliable.Message{Topic: "prod.orders", Key: "order-42", Type: "order.paid", Payload: []byte(`{"id":"order-42"}`)}
	if err := pub.Publish(ctx, msg); err != nil {
		log.Fatal(err)
	}
	log.Printf("published %s", msg.ID)
}

// The kitchen display service consumes its group's queue with manual acks:
// a delivery is acked only after it was handled, and an unacked one is
// delivered again, to this or another instance.
func ExampleNewSubscriber() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sub, err := rabbitmq.NewSubscriber("amqp://reliable:reliable@127.0.0.1:5672/", "kitchen",
		rabbitmq.WithPrefetch(32), rabbitmq.WithEnvironment("prod"))
	if err != nil {
		log.Fatal(err)
	}
	defer sub.Close()

	deliveries, err := sub.Subscribe(ctx, "prod.orders")
	if err != nil {
		log.Fatal(err)
	}
	for d := range deliveries {
		log.Printf("order event %s for %s", d.Message.Type, d.Message.Key)
		if err := d.Ack(ctx); err != nil {
			log.Print(err)
		}
	}
}

// Key-ordered sharding: each consumer group gets four single-active-consumer
// queues behind a consistent-hash exchange, so every order's events stay in
// order while up to four instances consume in parallel.
func ExampleTopology_sharded() {
	topo := rabbitmq.WithTopology(rabbitmq.Topology{Shards: 4})
	ctx := context.Background()
	url := "amqp://reliable:reliable@127.0.0.1:5672/"
	if err := rabbitmq.Declare(ctx, url, "prod.orders", []string{"kitchen"}, topo); err != nil {
		log.Fatal(err)
	}
	sub, err := rabbitmq.NewSubscriber(url, "kitchen", topo)
	if err != nil {
		log.Fatal(err)
	}
	defer sub.Close()
}
