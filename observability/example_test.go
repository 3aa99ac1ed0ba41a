package observability_test

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"net/http"
	"os"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/consumer"
	"github.com/reliable-go/reliable/observability"
	"github.com/reliable-go/reliable/outbox"
	"github.com/reliable-go/reliable/reliabletest"
)

// A service wires metrics and tracing once: the Prometheus endpoint, the
// publisher wrapper, the handler wrapper and the consumer's Observe hook.
func Example() {
	mp, metricsHandler, err := observability.NewPrometheus()
	if err != nil {
		log.Fatal(err)
	}
	defer func() { _ = mp.Shutdown(context.Background()) }()
	tp := sdktrace.NewTracerProvider() // add your exporter: sdktrace.WithBatcher(otlpExporter)
	defer func() { _ = tp.Shutdown(context.Background()) }()
	tel, err := observability.New(observability.Config{MeterProvider: mp, TracerProvider: tp, System: "kafka"})
	if err != nil {
		log.Fatal(err)
	}
	http.Handle("/metrics", metricsHandler)

	broker := reliabletest.NewBroker(reliabletest.BrokerOptions{}) // your adapter's publisher here
	broker.CreateTopic("orders")
	pub := tel.Publisher(broker.Publisher())
	msg := &reliable.Message{Topic: "orders", Key: "order-1", Type: "order.placed"}
	if err := pub.Publish(context.Background(), msg); err != nil {
		log.Fatal(err)
	}

	handler := tel.Handler(reliable.HandlerFunc(func(ctx context.Context, m *reliable.Message) error {
		slog.InfoContext(ctx, "order applied", observability.MessageAttrs(m)...)
		return nil
	}))
	_, err = consumer.New(broker.Subscriber("kitchen", reliabletest.SubscriberOptions{}), handler,
		consumer.Config{Topic: "orders", Observe: tel.Observe})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(msg.Headers["traceparent"] != "")
	// Output: true
}

// LogHandler puts the span's IDs on every record logged with a context.
func ExampleLogHandler() {
	logger := slog.New(observability.LogHandler(slog.NewJSONHandler(os.Stdout, nil)))
	logger.InfoContext(context.Background(), "no span, no IDs")
	_ = logger
}

// The outbox pattern: inject the request's trace context into the message
// before outbox.Add, in the same transaction as the business change. The
// outbox stores the headers; the relay publishes through tel.Publisher, whose
// span continues the request's trace, and the consumer's span follows it.
func ExampleTelemetry_Inject() {
	tel, err := observability.New(observability.Config{})
	if err != nil {
		log.Fatal(err)
	}
	placeOrder := func(ctx context.Context, tx pgx.Tx, orderID string) error {
		// ... INSERT the order in tx ...
		msg := &reliable.Message{Topic: "orders", Key: orderID, Type: "order.placed"}
		tel.Inject(ctx, msg)
		return outbox.Add(ctx, tx, msg)
	}
	_ = placeOrder
	// At start-up: outbox.NewRelay(pool, tel.Publisher(producer), outbox.Config{})
}

// WatchLag reports any broker's backlog: here a RabbitMQ queue's depth as a
// one-partition topic (for Kafka, kafkalag.Watch reads it with sarama).
func ExampleTelemetry_WatchLag() {
	tel, err := observability.New(observability.Config{})
	if err != nil {
		log.Fatal(err)
	}
	queueDepth := func(context.Context) (int64, error) { return 42, nil } // e.g. the management API's "messages"
	reg, err := tel.WatchLag("kitchen", func(ctx context.Context) (observability.GroupLag, error) {
		n, err := queueDepth(ctx)
		if err != nil {
			return observability.GroupLag{}, err
		}
		tl := observability.TopicLag{Topic: "orders", Total: n,
			Partitions: []observability.PartitionLag{{Topic: "orders", Lag: n}}}
		return observability.GroupLag{Group: "kitchen", Topics: []observability.TopicLag{tl}, Total: n}, nil
	})
	if err != nil {
		log.Fatal(err)
	}
	defer func() { _ = reg.Unregister() }()
}

// A service running the log-reading outbox relay watches its replication
// slot (one query per scrape) and the relay's log reader (no query); the
// rules of deploy/prometheus/alerts.yml alert on both.
func ExampleTelemetry_WatchOutboxSlot() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, "postgres://app@db/orders")
	if err != nil {
		log.Fatal(err)
	}
	mp, metricsHandler, err := observability.NewPrometheus()
	if err != nil {
		log.Fatal(err)
	}
	tel, err := observability.New(observability.Config{MeterProvider: mp})
	if err != nil {
		log.Fatal(err)
	}
	http.Handle("/metrics", metricsHandler)

	broker := reliabletest.NewBroker(reliabletest.BrokerOptions{}) // your adapter's publisher here
	relay, err := outbox.NewRelay(pool, tel.Publisher(broker.Publisher()), outbox.Config{Mode: outbox.ModeLog})
	if err != nil {
		log.Fatal(err)
	}
	if _, err := tel.WatchOutboxSlot(pool, outbox.DefaultSlot); err != nil {
		log.Fatal(err)
	}
	if _, err := tel.WatchRelay(relay); err != nil {
		log.Fatal(err)
	}
	log.Fatal(relay.Run(ctx))
}
