package kafka_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/adapters/kafka"
)

// The durable producer: Publish returns nil only when every message is on all
// in-sync replicas, and retries until then or until ctx ends.
func ExampleNewProducer() {
	p, err := kafka.NewProducer(kafka.Config{
		Brokers:     []string{"127.0.0.1:9092"},
		Environment: "prod", // topic "orders" is the Kafka topic "prod.orders"
		Producer:    kafka.ProducerConfig{Source: "order-service"},
	})
	if err != nil {
		log.Fatal(err) // *reliable.ConfigError, ErrNotAuthorized, or a *kafka.DurabilityError
	}
	defer p.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = p.Publish(ctx, &reliable.Message{
		Topic:   "orders",
		Key:     "order-4711", // the order's events share a partition, in order
		Type:    "order.paid",
		Payload: []byte(`{"id":"order-4711","status":"paid"}`),
	})
	if errors.Is(err, reliable.ErrMessageTooLarge) {
		log.Fatal("send the order ID and status, not the whole order")
	}
	if err != nil {
		log.Fatal(err)
	}
}

// A subscriber commits an offset only when it and every earlier delivery of
// its partition were acked.
func ExampleNewSubscriber() {
	sub, err := kafka.NewSubscriber(kafka.Config{
		Brokers:     []string{"127.0.0.1:9092"},
		Environment: "prod",
		Consumer:    kafka.ConsumerConfig{Group: "kitchen-display"},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer sub.Close()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	deliveries, err := sub.Subscribe(ctx, "orders")
	if err != nil {
		log.Fatal(err)
	}
	for d := range deliveries {
		// Check the environment, deduplicate and handle: the consumer package
		// does all of it. Ack only once the outcome is durable.
		if err := reliable.CheckEnvironment(d.Message, "prod"); err != nil {
			log.Print(err)
		}
		_ = d.Ack(ctx)
	}
}

// PublishAsync pipelines records and reports each acknowledgement to a
// callback: near raw-sarama throughput with the same durability.
func ExamplePublisher_PublishAsync() {
	pub, err := kafka.NewPublisher(kafka.Config{Brokers: []string{"127.0.0.1:9092"}})
	if err != nil {
		log.Fatal(err)
	}
	defer pub.Close()
	ctx := context.Background()
	failed := make(chan *reliable.Message, 100)
	for i := 0; i < 100; i++ {
		m := &reliable.Message{Topic: "orders", Key: fmt.Sprint("order-", i), Payload: []byte("placed")}
		err := pub.PublishAsync(ctx, m, func(m *reliable.Message, err error) {
			if err != nil {
				failed <- m // publish it again; consumers deduplicate by ID
			}
		})
		if err != nil {
			log.Fatal(err) // nothing was sent
		}
	}
}

// TLS with a custom CA and SCRAM credentials. The password never appears
// when the Config is printed or logged.
func ExampleLoadTLS() {
	tlsCfg, err := kafka.LoadTLS("/etc/kafka/ca.pem", "", "")
	if err != nil {
		log.Fatal(err)
	}
	cfg := kafka.Config{
		Brokers: []string{"kafka-1.internal:9093"},
		TLS:     tlsCfg,
		SASL:    kafka.SASL{Mechanism: kafka.SASLScramSHA512, User: "order-service", Password: "s3cret"},
	}
	fmt.Println(cfg.SASL.Password)
}

// Validate reports every problem at once.
func ExampleConfig_Validate() {
	err := kafka.Config{
		SASL: kafka.SASL{Mechanism: kafka.SASLScramSHA256, User: "svc"},
	}.Validate()
	fmt.Println(err)
	// Output: reliable: invalid kafka configuration: Brokers is empty; SASL.Password is empty
}

// Secrets print as [REDACTED].
func ExampleSecret() {
	cfg := kafka.Config{
		Brokers: []string{"127.0.0.1:9092"},
		SASL:    kafka.SASL{Mechanism: kafka.SASLPlain, User: "svc", Password: "hunter2"},
	}
	fmt.Println(cfg)
	// Output: kafka.Config{Brokers:[127.0.0.1:9092] ClientID:"" Version:0.0.0.0 Environment:"" TLS:false SASL:PLAIN/svc Password:[REDACTED]}
}
