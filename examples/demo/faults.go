package main

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/examples/kitchen"
	"github.com/reliable-go/reliable/examples/orders"
)

// faultAttempts bounds the attempts of one message that faults may hit, so
// an unlucky message still succeeds long before the retry table's seventh
// attempt would declare it dead.
const faultAttempts = 3

// errInjected is the demo's transient handler failure: a database blip, a
// timeout, a deploy.
var errInjected = errors.New("demo: injected transient failure")

// faults injects transient failures into the kitchen's handler and stale
// answers into its reads of the order service.
type faults struct {
	failRate, staleRate float64

	mu  sync.Mutex
	rng *rand.Rand

	failures, stale atomic.Int64
}

func newFaults(cfg config) *faults {
	return &faults{failRate: cfg.FailRate, staleRate: cfg.StaleRate, rng: rand.New(rand.NewPCG(cfg.Seed, 0xfa17))}
}

func (f *faults) roll(p float64) bool {
	if p <= 0 {
		return false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.rng.Float64() < p
}

type attemptKey struct{}

// handler wraps the kitchen's handler: at failRate, an early attempt fails
// with a retryable error before doing anything.
func (f *faults) handler(next reliable.Handler) reliable.Handler {
	return reliable.HandlerFunc(func(ctx context.Context, msg *reliable.Message) error {
		attempt := max(msg.Delivery.Attempt, 1)
		if attempt <= faultAttempts && f.roll(f.failRate) {
			f.failures.Add(1)
			return reliable.Retryable(errInjected)
		}
		return next.Handle(context.WithValue(ctx, attemptKey{}, attempt), msg)
	})
}

// source wraps the order service client like a read replica that lags: at
// staleRate, an early attempt sees the order one version behind, or not at
// all when it is new (L21).
func (f *faults) source(next kitchen.OrderSource) kitchen.OrderSource {
	return &laggingReplica{f: f, next: next}
}

type laggingReplica struct {
	f    *faults
	next kitchen.OrderSource
}

func (r *laggingReplica) Get(ctx context.Context, id string) (orders.Order, error) {
	o, err := r.next.Get(ctx, id)
	attempt, _ := ctx.Value(attemptKey{}).(int)
	if err != nil || attempt > faultAttempts || !r.f.roll(r.f.staleRate) {
		return o, err
	}
	r.f.stale.Add(1)
	if o.Version <= 1 {
		return orders.Order{}, orders.ErrNotFound
	}
	o.Version--
	return o, nil
}
