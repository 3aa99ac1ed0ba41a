package orders_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/examples/orders"
	"github.com/reliable-go/reliable/reliabletest"
)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

var ramen = []orders.Dish{{Name: "Ramen", Quantity: 2}, {Name: "Gyoza", Quantity: 1}}

func TestStateMachine(t *testing.T) {
	ctx := ctxT(t)
	svc := orders.NewService(orders.NewMemoryStore(), "")
	o, err := svc.Place(ctx, "7", ramen)
	if err != nil {
		t.Fatal(err)
	}
	if o.Status != orders.Placed || o.Version != 1 {
		t.Fatalf("placed order is %s v%d", o.Status, o.Version)
	}
	if _, err := svc.Complete(ctx, o.ID); !errors.Is(err, orders.ErrTransition) {
		t.Fatalf("complete before pay: %v, want ErrTransition", err)
	}
	if o, err = svc.Pay(ctx, o.ID); err != nil || o.Status != orders.Paid || o.Version != 2 {
		t.Fatalf("pay: %v %s v%d", err, o.Status, o.Version)
	}
	if _, err := svc.Pay(ctx, o.ID); !errors.Is(err, orders.ErrTransition) {
		t.Fatalf("pay twice: %v, want ErrTransition", err)
	}
	if o, err = svc.Cancel(ctx, o.ID); err != nil || o.Status != orders.Cancelled || o.Version != 3 {
		t.Fatalf("cancel paid: %v %s v%d", err, o.Status, o.Version)
	}
	if _, err := svc.Complete(ctx, o.ID); !errors.Is(err, orders.ErrTransition) {
		t.Fatalf("complete cancelled: %v, want ErrTransition", err)
	}
	if _, err := svc.Pay(ctx, "nope"); !errors.Is(err, orders.ErrNotFound) {
		t.Fatalf("pay unknown: %v, want ErrNotFound", err)
	}
	if _, err := svc.Place(ctx, "", nil); !errors.Is(err, orders.ErrInvalid) {
		t.Fatalf("place without dishes: %v, want ErrInvalid", err)
	}
}

// L13, L08, L14: an event carries only ID, status and version, keyed by the
// order ID.
func TestEventsAreSmallAndKeyedByOrder(t *testing.T) {
	o := orders.Order{ID: "o-1", Status: orders.Paid, Version: 2, Dishes: ramen, Table: "7"}
	msg := orders.NewEvent("orders", o)
	if msg.Key != "o-1" || msg.Type != "order.paid" || msg.Topic != "orders" {
		t.Fatalf("event %v", msg)
	}
	if got := string(msg.Payload); got != `{"order_id":"o-1","status":"paid","version":2}` {
		t.Fatalf("payload %s", got)
	}
	ev, err := orders.ParseEvent(msg)
	if err != nil || ev.OrderID != "o-1" || ev.Version != 2 || ev.Status != orders.Paid {
		t.Fatalf("parse: %+v %v", ev, err)
	}
	if _, err := orders.ParseEvent(&reliable.Message{Payload: []byte("{")}); !reliable.IsPermanent(err) {
		t.Fatalf("garbage payload: %v, want a permanent error", err)
	}
}

// The in-memory relay publishes every event exactly as the store wrote them,
// in order per order, and keeps retrying while the broker fails.
func TestMemoryRelayPublishesInOrderThroughFailures(t *testing.T) {
	ctx := ctxT(t)
	broker := reliabletest.NewBroker(reliabletest.BrokerOptions{})
	broker.CreateTopic("orders")
	store := orders.NewMemoryStore()
	svc := orders.NewService(store, "orders")
	broker.FailPublishes(errors.New("broker down"), errors.New("broker down"))
	broker.LoseConfirms(1)
	relayCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); store.RunRelay(relayCtx, broker.Publisher(), nil) }()

	var ids []string
	for range 20 {
		o, err := svc.Place(ctx, "", ramen)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, o.ID)
		if _, err := svc.Pay(ctx, o.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := svc.Complete(ctx, o.ID); err != nil {
			t.Fatal(err)
		}
	}
	for store.Pending() > 0 {
		if ctx.Err() != nil {
			t.Fatalf("%d events still pending", store.Pending())
		}
		time.Sleep(10 * time.Millisecond)
	}
	stop()
	<-done

	versions := map[string][]int64{}
	for _, m := range broker.Messages("orders") {
		ev, err := orders.ParseEvent(m)
		if err != nil {
			t.Fatal(err)
		}
		vs := versions[ev.OrderID]
		if n := len(vs); n > 0 && vs[n-1] == ev.Version {
			continue // a lost confirm makes a repeat, which consumers dedupe
		}
		versions[ev.OrderID] = append(vs, ev.Version)
	}
	for _, id := range ids {
		if got := versions[id]; len(got) != 3 || got[0] != 1 || got[1] != 2 || got[2] != 3 {
			t.Fatalf("order %s: versions on the broker %v, want [1 2 3]", id, got)
		}
	}
}

func TestHTTPAPI(t *testing.T) {
	ctx := ctxT(t)
	svc := orders.NewService(orders.NewMemoryStore(), "")
	srv := httptest.NewServer(orders.Handler(svc, nil))
	defer srv.Close()
	c := &orders.Client{BaseURL: srv.URL, HTTP: srv.Client()}

	o, err := c.Place(ctx, "12", ramen)
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.Get(ctx, o.ID)
	if err != nil || got.Version != 1 || len(got.Dishes) != 2 || got.Dishes[0].Name != "Ramen" || got.Table != "12" {
		t.Fatalf("get: %+v %v", got, err)
	}
	if o, err = c.Move(ctx, o.ID, "pay"); err != nil || o.Status != orders.Paid {
		t.Fatalf("pay: %+v %v", o, err)
	}
	if _, err := c.Move(ctx, o.ID, "pay"); !errors.Is(err, orders.ErrTransition) {
		t.Fatalf("pay twice: %v, want 409 ErrTransition", err)
	}
	if _, err := c.Get(ctx, "missing"); !errors.Is(err, orders.ErrNotFound) {
		t.Fatalf("get missing: %v, want 404 ErrNotFound", err)
	}
	if _, err := c.Place(ctx, "", []orders.Dish{{Name: "", Quantity: 0}}); !errors.Is(err, orders.ErrInvalid) {
		t.Fatalf("bad order: %v, want 400 ErrInvalid", err)
	}
	resp, err := http.Post(srv.URL+"/orders", "application/json", strings.NewReader(`{"dishes":[],"extra":1}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("unknown field: HTTP %d, want 400", resp.StatusCode)
	}
}
