package kitchen_test

import (
	"context"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/signal"
	"syscall"

	"github.com/reliable-go/reliable/consumer"
	"github.com/reliable-go/reliable/examples/kitchen"
	"github.com/reliable-go/reliable/examples/orders"
	"github.com/reliable-go/reliable/idempotency"
	"github.com/reliable-go/reliable/reliabletest"
	"github.com/reliable-go/reliable/service"
)

// The kitchen applies an order event: it fetches the details the event
// lacks, stores them with a version-guarded upsert and updates the display.
func ExampleKitchen_Handle() {
	ctx := context.Background()
	svc := orders.NewService(orders.NewMemoryStore(), "orders")
	o, _ := svc.Place(ctx, "7", []orders.Dish{{Name: "Pho", Quantity: 1}})

	k := kitchen.New(kitchen.NewMemoryStore(), svc, nil) // in a service: &orders.Client{BaseURL: ...}
	msg := orders.NewEvent("orders", o)
	msg.ID = "evt-1"
	if err := k.Handle(ctx, msg); err != nil {
		log.Fatal(err)
	}
	shown, _ := k.Store().Get(ctx, o.ID)
	fmt.Println(shown.Status, shown.Version, shown.Dishes[0].Name)
	// Output: placed 1 Pho
}

// Wiring the kitchen into the SDK's consumer: dedupe, an ordered retry table
// and key lanes, run by a service.Group that serves readiness on /readyz and
// stops the consumer and the retrier together within Kubernetes' 30 s grace
// on SIGTERM. Here on the in-memory test doubles; a service uses
// kafka.NewConsumer or rabbitmq.NewConsumer, idempotency.NewRedis or NewPostgres, and
// retry.NewTable (whose retrier the consumer runs).
func Example_consumer() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	broker := reliabletest.NewBroker(reliabletest.BrokerOptions{})
	broker.CreateTopic("orders")
	k := kitchen.New(kitchen.NewMemoryStore(), &orders.Client{BaseURL: "http://127.0.0.1:8080"}, nil)
	dedupe := idempotency.NewMemory()
	table := reliabletest.NewRetryTable()

	c, err := consumer.New(broker.Subscriber("kitchen-display", reliabletest.SubscriberOptions{}), k, consumer.Config{
		Topic: "orders", Dedupe: dedupe, RetryTable: table, Concurrency: 8,
	})
	if err != nil {
		log.Fatal(err)
	}
	g := service.New(service.Config{})
	g.Add("kitchen consumer", c)

	mux := http.NewServeMux()
	mux.Handle("/", k.Handler())
	mux.Handle("/readyz", g.Handler())
	mux.Handle("/livez", g.Handler())
	go func() { _ = http.ListenAndServe("127.0.0.1:8081", mux) }()
	if err := g.Run(ctx); err != nil {
		log.Fatal(err)
	}
}
