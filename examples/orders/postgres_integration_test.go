package orders_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/reliable-go/reliable/examples/internal/env"
	"github.com/reliable-go/reliable/examples/orders"
	"github.com/reliable-go/reliable/internal/testenv"
	"github.com/reliable-go/reliable/outbox"
	"github.com/reliable-go/reliable/reliabletest"
)

// The order change and its outbox row commit together: a refused transition
// leaves neither, and the relay publishes exactly the committed events, in
// order per order.
func TestPostgresStoreWritesEventsInTheSameTransaction(t *testing.T) {
	dsn := testenv.PostgresDSN(t)
	ctx := ctxT(t)
	schema := testenv.UniqueName(t, "ex_orders")
	pool, err := env.OpenPostgres(ctx, dsn, schema, 8)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = env.DropSchema(context.Background(), pool, schema)
		pool.Close()
	})
	store := orders.NewPostgresStore(pool)
	if err := store.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	svc := orders.NewService(store, "orders")
	pending := func() int64 {
		st, err := outbox.ReadStatus(ctx, pool)
		if err != nil {
			t.Fatal(err)
		}
		return st.Pending
	}

	o, err := svc.Place(ctx, "3", ramen)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Complete(ctx, o.ID); !errors.Is(err, orders.ErrTransition) {
		t.Fatalf("complete before pay: %v", err)
	}
	if n := pending(); n != 1 {
		t.Fatalf("outbox holds %d rows after place and a refused transition, want 1", n)
	}
	if _, err := svc.Pay(ctx, o.ID); err != nil {
		t.Fatal(err)
	}
	got, err := svc.Get(ctx, o.ID)
	if err != nil || got.Status != orders.Paid || got.Version != 2 || len(got.Dishes) != 2 {
		t.Fatalf("get: %+v %v", got, err)
	}
	if _, err := svc.Get(ctx, "missing"); !errors.Is(err, orders.ErrNotFound) {
		t.Fatalf("get missing: %v", err)
	}
	list, err := svc.List(ctx)
	if err != nil || len(list) != 1 || len(list[0].Dishes) != 2 {
		t.Fatalf("list: %+v %v", list, err)
	}

	broker := reliabletest.NewBroker(reliabletest.BrokerOptions{})
	broker.CreateTopic("orders")
	relay, err := outbox.NewRelay(pool, broker.Publisher(), outbox.Config{PollInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- relay.Run(rctx) }()
	for pending() > 0 && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
	}
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	var seen []string
	for _, m := range broker.Messages("orders") {
		ev, err := orders.ParseEvent(m)
		if err != nil || m.Key != o.ID {
			t.Fatalf("message %v: %v", m, err)
		}
		seen = append(seen, fmt.Sprintf("%s/%d", ev.Status, ev.Version))
	}
	if fmt.Sprint(seen) != "[placed/1 paid/2]" {
		t.Fatalf("published %v, want [placed/1 paid/2]", seen)
	}
}
