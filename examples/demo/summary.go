package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/reliable-go/reliable/consumer"
	"github.com/reliable-go/reliable/examples/kitchen"
	"github.com/reliable-go/reliable/examples/orders"
)

// figures are the demo's results, computed from the data: the order
// service's orders, the kitchen's display and the kitchen's ledger of
// applied events. Nothing here comes from counters kept while running.
type figures struct {
	Want          int // orders the demo meant to create
	Created       int // orders in the order service's store
	Events        int // events the orders imply: one per version
	Displayed     int // created orders present on the kitchen display
	Correct       int // displayed with the order's status, version, table and dishes
	Lost          int // events (order, version) never applied
	AppliedTwice  int // applies beyond the first of an event
	OutOfOrder    int // applies of a version older than one already applied
	Unknown       int // displayed or applied orders the order service does not have
	PendingEvents int64
	Parked        int64
	Dead          int64
}

// ok reports whether every figure is what a correct run gives.
func (f figures) ok() bool {
	return f.Created == f.Want && f.Displayed == f.Created && f.Correct == f.Created &&
		f.Lost == 0 && f.AppliedTwice == 0 && f.OutOfOrder == 0 && f.Unknown == 0 && f.Dead == 0
}

// computeFigures compares the two services' data.
func computeFigures(want int, os []orders.Order, ks []kitchen.Order, ledger []kitchen.LedgerEntry) figures {
	f := figures{Want: want, Created: len(os)}
	shown := make(map[string]kitchen.Order, len(ks))
	for _, k := range ks {
		shown[k.ID] = k
	}
	known := make(map[string]orders.Order, len(os))
	for _, o := range os {
		known[o.ID] = o
		f.Events += int(o.Version)
		k, ok := shown[o.ID]
		if !ok {
			continue
		}
		f.Displayed++
		if sameOrder(o, k) {
			f.Correct++
		}
	}
	for _, k := range ks {
		if _, ok := known[k.ID]; !ok {
			f.Unknown++
		}
	}

	type event struct {
		order   string
		version int64
	}
	applied := make(map[event]int)
	highest := make(map[string]int64)
	for _, e := range ledger {
		if _, ok := known[e.OrderID]; !ok {
			f.Unknown++
			continue
		}
		ev := event{e.OrderID, e.Version}
		applied[ev]++
		if applied[ev] > 1 {
			f.AppliedTwice++
		}
		if e.Version < highest[e.OrderID] {
			f.OutOfOrder++
		}
		highest[e.OrderID] = max(highest[e.OrderID], e.Version)
	}
	for _, o := range os {
		for v := int64(1); v <= o.Version; v++ {
			if applied[event{o.ID, v}] == 0 {
				f.Lost++
			}
		}
	}
	return f
}

func sameOrder(o orders.Order, k kitchen.Order) bool {
	if o.Status != k.Status || o.Version != k.Version || o.Table != k.Table || len(o.Dishes) != len(k.Dishes) {
		return false
	}
	for i, d := range o.Dishes {
		if d.Name != k.Dishes[i].Name || d.Quantity != k.Dishes[i].Quantity {
			return false
		}
	}
	return true
}

// figures reads the stores and computes the figures.
func (a *app) figures(ctx context.Context) (figures, error) {
	list, err := a.stores.orders.List(ctx)
	if err != nil {
		return figures{}, err
	}
	ks, err := a.stores.kitchen.List(ctx)
	if err != nil {
		return figures{}, err
	}
	ledger, err := a.stores.kitchen.Ledger(ctx)
	if err != nil {
		return figures{}, err
	}
	f := computeFigures(a.cfg.Orders, list, ks, ledger)
	f.PendingEvents, f.Parked, f.Dead, err = a.stores.backlog(ctx)
	return f, err
}

// waitSettled polls the data until the kitchen shows every order as the
// order service has it and nothing is left to publish or retry, or until
// the timeout; it returns the last figures either way.
func (a *app) waitSettled(ctx context.Context) (figures, error) {
	ctx, cancel := context.WithTimeout(ctx, a.cfg.Timeout)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		f, err := a.figures(ctx)
		if err == nil && f.Correct == f.Created && f.Lost == 0 && f.PendingEvents == 0 && f.Parked == 0 {
			return f, nil
		}
		select {
		case <-ctx.Done():
			// Timed out: report what the data shows now.
			last, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer cancel()
			return a.figures(last)
		case <-tick.C:
		}
	}
}

func (a *app) printSummary(w io.Writer, f figures, took time.Duration) {
	mark := func(good bool) string {
		if good {
			return "ok"
		}
		return "WRONG"
	}
	p := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
	p("")
	p("reliable demo: order service -> %s -> kitchen display", a.broker.label)
	p("  stores:  %s", a.stores.label)
	p("  dedupe:  %s", a.stores.dedupeLabel)
	p("  faults:  %d transient handler failures, %d stale order reads (replica lag, L21), %d consumer restart(s),",
		a.faults.failures.Load(), a.faults.stale.Load(), a.restarts)
	burst := int(float64(a.cfg.Orders)*a.cfg.BurstShare + 0.5)
	p("           a batch job placing %d orders at once; %d deliveries parked in the retry table, %d duplicates skipped",
		burst, a.outcome.get(consumer.OutcomeParked), a.outcome.get(consumer.OutcomeDuplicate))
	p("")
	p("  Read from the data (orders store, kitchen store and its ledger of applied events), after %s:", took.Round(time.Millisecond))
	p("    orders created        %6d  %s", f.Created, mark(f.Created == f.Want))
	p("    events (1 per change) %6d", f.Events)
	p("    orders displayed      %6d  %s", f.Displayed, mark(f.Displayed == f.Created))
	p("    final states correct  %6d  %s", f.Correct, mark(f.Correct == f.Created))
	p("    lost                  %6d  %s", f.Lost, mark(f.Lost == 0))
	p("    applied twice         %6d  %s", f.AppliedTwice, mark(f.AppliedTwice == 0))
	p("    out of order          %6d  %s", f.OutOfOrder, mark(f.OutOfOrder == 0))
	if f.Unknown > 0 || f.Dead > 0 || f.PendingEvents > 0 || f.Parked > 0 {
		p("    unknown orders %d, dead retry entries %d, unpublished events %d, parked events %d", f.Unknown, f.Dead, f.PendingEvents, f.Parked)
	}
	p("")
	if f.ok() {
		p("  RESULT: OK: nothing lost, nothing applied twice, every order's events applied in order.")
	} else {
		p("  RESULT: FAILED: some figures are wrong (see above).")
	}
	p("")
	p("  Kitchen display: %s", a.kitchenURL)
	p("  Order API:       %sorders  (POST /orders, POST /orders/{id}/pay|complete|cancel, GET /orders/{id})",
		a.ordersURL+"/")
}
