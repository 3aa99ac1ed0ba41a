package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/reliable-go/reliable/examples/kitchen"
	"github.com/reliable-go/reliable/examples/orders"
)

// testConfig is the demo's default configuration, smaller and on free ports.
func testConfig(orders int) config {
	c := defaultConfig()
	c.Orders = orders
	c.OrdersAddr, c.KitchenAddr = "127.0.0.1:0", "127.0.0.1:0"
	c.Exit = true
	c.Timeout = time.Minute
	c.Schema = fmt.Sprintf("demo_test_%d", time.Now().UnixNano())
	return c
}

// verifyStores checks the demo's promises directly on the stores, without
// the figures the demo computes: every order of the order service is on the
// kitchen display in its final state with its dishes, and the kitchen's
// ledger holds each of the order's events exactly once, in version order
// (L08, L09, L20, L21).
func verifyStores(t *testing.T, a *app, want int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	created, err := a.stores.orders.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	shown, err := a.stores.kitchen.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ledger, err := a.stores.kitchen.Ledger(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(created) != want {
		t.Fatalf("order service has %d orders, want %d", len(created), want)
	}
	if len(shown) != want {
		t.Errorf("kitchen shows %d orders, want %d", len(shown), want)
	}
	byID := map[string]kitchen.Order{}
	for _, k := range shown {
		byID[k.ID] = k
	}
	applied := map[string][]int64{}
	for _, e := range ledger {
		applied[e.OrderID] = append(applied[e.OrderID], e.Version)
	}
	finals := map[orders.Status]int{}
	for _, o := range created {
		finals[o.Status]++
		if !o.Status.Final() {
			t.Errorf("order %s ended %s: the generator finishes every order", o.ID, o.Status)
		}
		k, ok := byID[o.ID]
		if !ok {
			t.Errorf("order %s (%s v%d) never reached the kitchen", o.ID, o.Status, o.Version)
			continue
		}
		if k.Status != o.Status || k.Version != o.Version || len(k.Dishes) != len(o.Dishes) {
			t.Errorf("order %s: kitchen shows %s v%d with %d dishes, order service has %s v%d with %d",
				o.ID, k.Status, k.Version, len(k.Dishes), o.Status, o.Version, len(o.Dishes))
		}
		var wantVersions []int64
		for v := int64(1); v <= o.Version; v++ {
			wantVersions = append(wantVersions, v)
		}
		if fmt.Sprint(applied[o.ID]) != fmt.Sprint(wantVersions) {
			t.Errorf("order %s: versions applied %v, want each of %v once, in order", o.ID, applied[o.ID], wantVersions)
		}
	}
	if finals[orders.Completed] == 0 || finals[orders.Cancelled] == 0 {
		t.Errorf("final states %v: want both completed and cancelled orders", finals)
	}
}

func runDemo(t *testing.T, cfg config) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var out bytes.Buffer
	var inspected bool
	cfg.inspect = func(a *app) error {
		inspected = true
		verifyStores(t, a, cfg.Orders)
		if a.faults.failures.Load() == 0 || a.faults.stale.Load() == 0 || a.restarts != 1 {
			t.Errorf("faults injected: %d failures, %d stale reads, %d restarts; want some of each",
				a.faults.failures.Load(), a.faults.stale.Load(), a.restarts)
		}
		verifyMetrics(t, a, cfg)
		return nil
	}
	var logs bytes.Buffer
	if err := run(ctx, cfg, &out, &logs); err != nil {
		t.Fatalf("run: %v\n%s\nlogs:\n%s", err, out.String(), tail(logs.String(), 4000))
	}
	if !inspected {
		t.Fatal("the stores were not inspected")
	}
	t.Log(out.String())
	return out.String()
}

// The one-command demo on its default, the in-process Kafka through the
// sarama adapter, in exit mode (L04, L05, L08, L09, L11, L15, L20, L21, L23).
func TestDemoEmbeddedKafka(t *testing.T) {
	out := runDemo(t, testConfig(120))
	for _, want := range []string{"RESULT: OK", "lost                       0", "Kitchen display: http://127.0.0.1:"} {
		if !strings.Contains(out, want) {
			t.Errorf("summary lacks %q", want)
		}
	}
}

// The same on the in-memory broker, the fastest way to check the services.
func TestDemoMemoryBroker(t *testing.T) {
	cfg := testConfig(80)
	cfg.Broker = "memory"
	runDemo(t, cfg)
}

// The figures come from the data: a lost event, a duplicate apply and an
// out-of-order apply are each caught.
func TestComputeFiguresCatchesEveryFault(t *testing.T) {
	os := []orders.Order{
		{ID: "a", Status: orders.Completed, Version: 3, Dishes: []orders.Dish{{Name: "Pho", Quantity: 1}}},
		{ID: "b", Status: orders.Paid, Version: 2, Dishes: []orders.Dish{{Name: "Bao", Quantity: 2}}},
	}
	ks := []kitchen.Order{
		{ID: "a", Status: orders.Completed, Version: 3, Dishes: []kitchen.Dish{{Name: "Pho", Quantity: 1}}},
		{ID: "b", Status: orders.Placed, Version: 1, Dishes: []kitchen.Dish{{Name: "Bao", Quantity: 2}}},
	}
	ledger := []kitchen.LedgerEntry{
		{OrderID: "a", Version: 1}, {OrderID: "a", Version: 3}, {OrderID: "a", Version: 2}, // out of order
		{OrderID: "b", Version: 1}, {OrderID: "b", Version: 1}, // applied twice; b v2 lost
	}
	f := computeFigures(2, os, ks, ledger)
	want := figures{Want: 2, Created: 2, Events: 5, Displayed: 2, Correct: 1, Lost: 1, AppliedTwice: 1, OutOfOrder: 1}
	if f != want {
		t.Fatalf("figures %+v\nwant    %+v", f, want)
	}
	if f.ok() {
		t.Fatal("ok() with faults")
	}
	good := computeFigures(1, os[:1], ks[:1], []kitchen.LedgerEntry{{OrderID: "a", Version: 1}, {OrderID: "a", Version: 2}, {OrderID: "a", Version: 3}})
	if !good.ok() {
		t.Fatalf("a correct run is not ok: %+v", good)
	}
}

func TestFlags(t *testing.T) {
	cfg, err := parseFlags(nil, io.Discard)
	if err != nil || cfg.Broker != "embedded" || cfg.Store != "memory" || cfg.Dedupe != "memory" || cfg.Orders != 200 {
		t.Fatalf("defaults: %+v %v", cfg, err)
	}
	_, err = parseFlags([]string{"-broker=nats", "-store=postgres", "-postgres-dsn=", "-dedupe=postgres", "-fail-rate=2"}, io.Discard)
	if err == nil {
		t.Fatal("bad flags accepted")
	}
	for _, want := range []string{"-broker", "PostgreSQL needs", "-fail-rate"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// verifyMetrics reads the kitchen's /metrics endpoint (L18): consumer
// outcomes everywhere, the group's lag where the demo can read it (not on
// RabbitMQ, whose own plugin reports queue depth), and the retry-table depth
// and outbox age with PostgreSQL.
func verifyMetrics(t *testing.T, a *app, cfg config) {
	t.Helper()
	resp, err := http.Get(a.kitchenURL + "metrics")
	if err != nil {
		t.Errorf("metrics: %v", err)
		return
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	want := []string{"reliable_consumer_deliveries", "reliable_publish_messages"}
	if cfg.Broker != "rabbitmq" {
		want = append(want, "reliable_consumer_lag{")
	}
	if cfg.Store == "postgres" {
		want = append(want, "reliable_retry_entries", "reliable_outbox_pending", "reliable_outbox_oldest_pending_age")
	}
	for _, w := range want {
		if !strings.Contains(string(body), w) {
			t.Errorf("/metrics lacks %s:\n%s", w, tail(string(body), 3000))
		}
	}
}
