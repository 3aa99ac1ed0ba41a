package producer_test

import (
	"context"
	"fmt"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/producer"
	"github.com/reliable-go/reliable/reliabletest"
)

// Wrap an adapter's publisher to get size checks, environment stamping and
// retries until the context ends. The Kafka and RabbitMQ adapters' NewProducer
// constructors do this for you.
func ExampleNew() {
	broker := reliabletest.NewBroker(reliabletest.BrokerOptions{}) // stands in for Kafka
	broker.CreateTopic("prod.orders")
	p, err := producer.New(broker.Publisher(), producer.Config{Environment: "prod", Source: "order-service"})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer p.Close()
	err = p.Publish(context.Background(), &reliable.Message{Topic: "prod.orders", Key: "order-42", Type: "order.placed"})
	fmt.Println("confirmed:", err == nil)
	// Output: confirmed: true
}
