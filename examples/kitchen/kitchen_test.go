package kitchen_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/consumer"
	"github.com/reliable-go/reliable/examples/kitchen"
	"github.com/reliable-go/reliable/examples/orders"
	"github.com/reliable-go/reliable/idempotency"
	"github.com/reliable-go/reliable/reliabletest"
)

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

var dishes = []orders.Dish{{Name: "Pho", Quantity: 1}, {Name: "Spring rolls", Quantity: 2}}

// laggingSource serves orders from an orders.Service, but the first lag
// reads of each order see the previous version, or nothing for a new order,
// like a read replica behind the primary (L21).
type laggingSource struct {
	svc *orders.Service
	lag int
	mu  sync.Mutex
	n   map[string]int
}

func (s *laggingSource) Get(ctx context.Context, id string) (orders.Order, error) {
	o, err := s.svc.Get(ctx, id)
	if err != nil {
		return o, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	k := fmt.Sprintf("%s/%d", id, o.Version)
	s.n[k]++
	if s.n[k] <= s.lag {
		if o.Version == 1 {
			return orders.Order{}, orders.ErrNotFound
		}
		o.Version--
	}
	return o, nil
}

func event(o orders.Order) *reliable.Message {
	m := orders.NewEvent("orders", o)
	m.EnsureID()
	return m
}

// L21: an order the source does not show yet, or shows at an older version,
// is a retryable error with a delay, never an empty order on the display.
func TestHandleIncompleteAnswerIsRetryable(t *testing.T) {
	ctx := ctxT(t, 10*time.Second)
	svc := orders.NewService(orders.NewMemoryStore(), "orders")
	o, err := svc.Place(ctx, "4", dishes)
	if err != nil {
		t.Fatal(err)
	}
	src := &laggingSource{svc: svc, lag: 1, n: map[string]int{}}
	k := kitchen.New(kitchen.NewMemoryStore(), src, nil)

	err = k.Handle(ctx, event(o))
	if !reliable.IsRetryable(err) || !errors.Is(err, kitchen.ErrIncomplete) || reliable.RetryDelay(err) != kitchen.LagRetryDelay {
		t.Fatalf("order not visible yet: %v, want retryable ErrIncomplete after %s", err, kitchen.LagRetryDelay)
	}
	if _, err := k.Store().Get(ctx, o.ID); !errors.Is(err, kitchen.ErrNotFound) {
		t.Fatalf("a failed event reached the display: %v", err)
	}
	if err := k.Handle(ctx, event(o)); err != nil {
		t.Fatal(err)
	}
	paid, err := svc.Pay(ctx, o.ID)
	if err != nil {
		t.Fatal(err)
	}
	if err := k.Handle(ctx, event(paid)); !errors.Is(err, kitchen.ErrIncomplete) {
		t.Fatalf("stale version: %v, want ErrIncomplete", err)
	}
	if err := k.Handle(ctx, &reliable.Message{ID: "x", Payload: []byte("not json")}); !reliable.IsPermanent(err) {
		t.Fatalf("garbage event: %v, want permanent", err)
	}
}

// L19: the upsert's version guard makes a duplicate or a late older event a
// no-op, and the ledger still records the apply.
func TestMemoryStoreVersionGuard(t *testing.T) {
	testStoreVersionGuard(t, kitchen.NewMemoryStore())
}

func testStoreVersionGuard(t *testing.T, s kitchen.Store) {
	ctx := ctxT(t, 20*time.Second)
	u := func(id string, st orders.Status, v int64) kitchen.Update {
		return kitchen.Update{MessageID: fmt.Sprintf("m-%s-%d", id, v), OrderID: id, Status: st, Version: v, Table: "9", Dishes: dishes}
	}
	apply := func(up kitchen.Update, want bool) {
		t.Helper()
		changed, err := s.Apply(ctx, up)
		if err != nil || changed != want {
			t.Fatalf("apply %+v: changed %v err %v, want changed %v", up, changed, err, want)
		}
	}
	apply(u("a", orders.Placed, 1), true)
	apply(u("a", orders.Paid, 2), true)
	apply(u("a", orders.Paid, 2), false)   // duplicate
	apply(u("a", orders.Placed, 1), false) // late, older
	if err := s.Serve(ctx, "a", 1); err != nil {
		t.Fatal(err)
	}
	if err := s.Serve(ctx, "a", 7); !errors.Is(err, kitchen.ErrNotFound) {
		t.Fatalf("serve missing dish: %v", err)
	}
	apply(u("a", orders.Completed, 3), true)
	o, err := s.Get(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	if o.Status != orders.Completed || o.Version != 3 || o.Table != "9" || len(o.Dishes) != 2 || o.Dishes[0].Served || !o.Dishes[1].Served {
		t.Fatalf("order %+v", o)
	}
	list, err := s.List(ctx)
	if err != nil || len(list) != 1 {
		t.Fatalf("list %v %v", list, err)
	}
	ledger, err := s.Ledger(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range ledger {
		got = append(got, fmt.Sprintf("%d:%t", e.Version, e.Effective))
	}
	if fmt.Sprint(got) != "[1:true 2:true 2:false 1:false 3:true]" {
		t.Fatalf("ledger %v", got)
	}
}

// L09, L11, L21: through the SDK's consumer with an ordered retry table, a
// lagging order source delays events but every order ends in its final
// state, each event applied once and in order.
func TestConsumerAppliesEveryEventOnceInOrderDespiteLag(t *testing.T) {
	ctx := ctxT(t, 30*time.Second)
	svc := orders.NewService(orders.NewMemoryStore(), "orders")
	src := &laggingSource{svc: svc, lag: 2, n: map[string]int{}}
	store := kitchen.NewMemoryStore()
	k := kitchen.New(store, src, nil)

	broker := reliabletest.NewBroker(reliabletest.BrokerOptions{Partitions: 3})
	broker.CreateTopic("orders")
	dedupe := idempotency.NewMemory()
	table := reliabletest.NewRetryTable()
	table.Backoff = reliable.Backoff{Initial: 10 * time.Millisecond, Max: 50 * time.Millisecond}
	c, err := consumer.New(broker.Subscriber("kitchen", reliabletest.SubscriberOptions{}), k,
		consumer.Config{Topic: "orders", Dedupe: dedupe, RetryTable: table, Concurrency: 4})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = c.Run(runCtx) }()
	go func() {
		defer wg.Done()
		table.RunRetrier(runCtx, consumer.Deduplicated(dedupe, k), 20*time.Millisecond)
	}()
	defer func() { stop(); wg.Wait() }()

	pub := broker.Publisher()
	var want []orders.Order
	for i := range 10 {
		o, err := svc.Place(ctx, fmt.Sprint(i), dishes)
		if err != nil {
			t.Fatal(err)
		}
		msgs := []*reliable.Message{orders.NewEvent("orders", o)}
		if o, err = svc.Pay(ctx, o.ID); err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, orders.NewEvent("orders", o))
		if i%3 == 0 {
			o, err = svc.Cancel(ctx, o.ID)
		} else {
			o, err = svc.Complete(ctx, o.ID)
		}
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, orders.NewEvent("orders", o))
		if err := pub.Publish(ctx, msgs...); err != nil {
			t.Fatal(err)
		}
		want = append(want, o)
	}
	for _, o := range want {
		for {
			got, err := store.Get(ctx, o.ID)
			if err == nil && got.Version == o.Version {
				if got.Status != o.Status {
					t.Fatalf("order %s is %s, want %s", o.ID, got.Status, o.Status)
				}
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("order %s never reached version %d: %+v %v", o.ID, o.Version, got, err)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	ledger, _ := store.Ledger(ctx)
	last := map[string]int64{}
	for _, e := range ledger {
		if e.Version != last[e.OrderID]+1 {
			t.Fatalf("order %s: version %d applied after %d", e.OrderID, e.Version, last[e.OrderID])
		}
		last[e.OrderID] = e.Version
	}
	if len(ledger) != 30 {
		t.Fatalf("%d applies, want 30", len(ledger))
	}
}

// The display streams a snapshot, then every change, and dishes can be
// marked served over HTTP.
func TestDisplayStreamsChanges(t *testing.T) {
	ctx := ctxT(t, 10*time.Second)
	svc := orders.NewService(orders.NewMemoryStore(), "orders")
	k := kitchen.New(kitchen.NewMemoryStore(), svc, nil)
	srv := httptest.NewServer(k.Handler())
	defer srv.Close()

	o, _ := svc.Place(ctx, "1", dishes)
	if err := k.Handle(ctx, event(o)); err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/events", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	events := make(chan [2]string, 16)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(nil, 1<<20)
		var name string
		for sc.Scan() {
			line := sc.Text()
			if v, ok := strings.CutPrefix(line, "event: "); ok {
				name = v
			}
			if v, ok := strings.CutPrefix(line, "data: "); ok {
				events <- [2]string{name, v}
			}
		}
	}()
	next := func() (string, string) {
		select {
		case e := <-events:
			return e[0], e[1]
		case <-ctx.Done():
			t.Fatal("no event")
			return "", ""
		}
	}
	if name, data := next(); name != "snapshot" || !strings.Contains(data, o.ID) {
		t.Fatalf("first event %s %s", name, data)
	}
	paid, _ := svc.Pay(ctx, o.ID)
	if err := k.Handle(ctx, event(paid)); err != nil {
		t.Fatal(err)
	}
	name, data := next()
	var got kitchen.Order
	if err := json.Unmarshal([]byte(data), &got); err != nil || name != "order" || got.Status != orders.Paid {
		t.Fatalf("update %s %s %v", name, data, err)
	}
	r, err := http.Post(srv.URL+"/api/orders/"+o.ID+"/dishes/0/serve", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != http.StatusOK {
		t.Fatalf("serve: HTTP %d", r.StatusCode)
	}
	_, data = next()
	if err := json.Unmarshal([]byte(data), &got); err != nil || !got.Dishes[0].Served {
		t.Fatalf("served update %s %v", data, err)
	}
	page, err := http.Get(srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	page.Body.Close()
	if page.StatusCode != http.StatusOK || !strings.HasPrefix(page.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("page: HTTP %d %s", page.StatusCode, page.Header.Get("Content-Type"))
	}
}
