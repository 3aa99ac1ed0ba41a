package orders_test

import (
	"context"
	"fmt"

	"github.com/reliable-go/reliable/examples/orders"
)

// An order's life: each change stores the order and its small event
// together; the event carries the ID, status and version only (L13).
func ExampleService() {
	ctx := context.Background()
	store := orders.NewMemoryStore() // NOT DURABLE: use NewPostgresStore in a service
	svc := orders.NewService(store, "orders")

	o, _ := svc.Place(ctx, "7", []orders.Dish{{Name: "Ramen", Quantity: 2}})
	o, _ = svc.Pay(ctx, o.ID)
	o, _ = svc.Complete(ctx, o.ID)
	_, err := svc.Cancel(ctx, o.ID)

	fmt.Println(o.Status, o.Version)
	fmt.Println(err != nil)
	fmt.Println(store.Pending(), "events waiting for the relay")
	// Output:
	// completed 3
	// true
	// 3 events waiting for the relay
}
