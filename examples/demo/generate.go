package main

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/reliable-go/reliable/examples/orders"
)

var menu = []string{"Ramen", "Gyoza", "Pho", "Spring rolls", "Pad thai", "Green curry", "Bao", "Miso soup", "Katsu", "Mochi"}

// plan is what happens to one order: its dishes and its final state.
type plan struct {
	table  string
	dishes []orders.Dish
	final  orders.Status // completed, or cancelled
	paid   bool          // paid before the end (a cancel may come before or after paying)
}

func makePlans(n int, seed uint64) []plan {
	rng := rand.New(rand.NewPCG(seed, 0x0bde))
	plans := make([]plan, n)
	for i := range plans {
		p := plan{table: fmt.Sprint(1 + rng.IntN(20)), final: orders.Completed, paid: true}
		for range 1 + rng.IntN(3) {
			p.dishes = append(p.dishes, orders.Dish{Name: menu[rng.IntN(len(menu))], Quantity: 1 + rng.IntN(3)})
		}
		switch r := rng.IntN(10); {
		case r == 0: // cancelled before paying
			p.final, p.paid = orders.Cancelled, false
		case r == 1: // paid, then cancelled
			p.final = orders.Cancelled
		}
		plans[i] = p
	}
	return plans
}

// generate sends the traffic: first orders placed, paid and completed one
// by one by a few waiters, with the consumer restarted halfway through; then
// a batch job that places, pays and completes a large share of the orders
// all at once (L15, L23).
func (a *app) generate(ctx context.Context) error {
	plans := makePlans(a.cfg.Orders, a.cfg.Seed)
	burst := int(float64(len(plans))*a.cfg.BurstShare + 0.5)
	steady := plans[:len(plans)-burst]

	var done atomic.Int64
	restartAt := int64(len(steady) / 2)
	restarted := make(chan error, 1)
	if !a.cfg.Restart || len(steady) == 0 {
		restarted <- nil
	}
	err := parallel(ctx, 4, len(steady), func(ctx context.Context, i int) error {
		if err := a.lifecycle(ctx, steady[i], true); err != nil {
			return err
		}
		if done.Add(1) == restartAt && a.cfg.Restart {
			go func() {
				a.log.Info("demo: restarting the kitchen consumer")
				restarted <- a.restartConsumer()
			}()
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := <-restarted; err != nil {
		return fmt.Errorf("restart consumer: %w", err)
	}

	if burst == 0 {
		return nil
	}
	a.log.Info("demo: batch job", slog.Int("orders", burst))
	batch := plans[len(plans)-burst:]
	ids := make([]string, len(batch))
	if err := parallel(ctx, 16, len(batch), func(ctx context.Context, i int) error {
		o, err := a.orders.Place(ctx, batch[i].table, batch[i].dishes)
		ids[i] = o.ID
		return err
	}); err != nil {
		return err
	}
	if err := parallel(ctx, 16, len(batch), func(ctx context.Context, i int) error {
		if !batch[i].paid {
			return nil
		}
		_, err := a.orders.Pay(ctx, ids[i])
		return err
	}); err != nil {
		return err
	}
	return parallel(ctx, 16, len(batch), func(ctx context.Context, i int) error {
		return a.finish(ctx, ids[i], batch[i])
	})
}

// lifecycle takes one order from placed to its final state, pausing between
// steps like a waiter would, only much faster.
func (a *app) lifecycle(ctx context.Context, p plan, pause bool) error {
	o, err := a.orders.Place(ctx, p.table, p.dishes)
	if err != nil {
		return err
	}
	step := func() {
		if pause {
			time.Sleep(time.Duration(1+rand.IntN(4)) * time.Millisecond)
		}
	}
	step()
	if p.paid {
		if _, err := a.orders.Pay(ctx, o.ID); err != nil {
			return err
		}
		step()
	}
	return a.finish(ctx, o.ID, p)
}

func (a *app) finish(ctx context.Context, id string, p plan) error {
	var err error
	if p.final == orders.Cancelled {
		_, err = a.orders.Cancel(ctx, id)
	} else {
		_, err = a.orders.Complete(ctx, id)
	}
	return err
}

// parallel calls fn for 0..n-1 on workers goroutines and returns the first
// error.
func parallel(ctx context.Context, workers, n int, fn func(context.Context, int) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(workers, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := fn(ctx, i); err != nil {
					cancel(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	return context.Cause(ctx)
}
