package kafkalag_test

import (
	"context"
	"errors"
	"fmt"
	"log"

	"github.com/IBM/sarama"

	"github.com/reliable-go/reliable/adapters/kafka"
	"github.com/reliable-go/reliable/observability"
	"github.com/reliable-go/reliable/observability/kafkalag"
)

// A service exports its group's lag per partition and skew flag on its
// metrics endpoint; an operator's tool reads it once. Names are the full
// Kafka names, with the environment prefix.
func Example() {
	mp, _, err := observability.NewPrometheus() // serve the handler on /metrics
	if err != nil {
		log.Fatal(err)
	}
	tel, err := observability.New(observability.Config{MeterProvider: mp})
	if err != nil {
		log.Fatal(err)
	}
	cfg := sarama.NewConfig()
	cfg.Version = kafka.DefaultVersion
	client, err := sarama.NewClient([]string{"localhost:9092"}, cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer func() { _ = client.Close() }()
	reg, err := kafkalag.Watch(tel, client, "prod.kitchen", "prod.orders")
	if err != nil {
		log.Fatal(err)
	}
	defer func() { _ = reg.Unregister() }()

	admin, err := sarama.NewClusterAdminFromClient(client)
	if err != nil {
		log.Fatal(err)
	}
	gl, err := kafkalag.Read(context.Background(), client, admin, "prod.kitchen", "prod.orders")
	if errors.Is(err, observability.ErrUnknownGroup) {
		log.Fatal("no such group")
	} else if err != nil {
		log.Fatal(err)
	}
	for _, tl := range gl.Topics {
		if tl.Skewed(observability.SkewShare, observability.SkewMinLag) {
			hot, share, _ := tl.Hottest()
			fmt.Printf("%s: partition %d holds %.0f%% of the lag\n", tl.Topic, hot.Partition, 100*share)
		}
	}
}
