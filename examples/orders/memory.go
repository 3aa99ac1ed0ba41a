package orders

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/reliable-go/reliable"
)

// MemoryStore keeps orders and their pending events in memory. It is NOT
// DURABLE: a restart loses every order and every event not yet relayed. It
// exists for the one-command demo and for tests; use [PostgresStore] for a
// real service.
//
// Events wait in an in-memory outbox, written under the same lock as the
// order change, until [MemoryStore.RunRelay] publishes them.
type MemoryStore struct {
	mu      sync.Mutex
	orders  map[string]*Order
	order   []string // IDs in creation order
	pending []*reliable.Message
	wake    chan struct{}
}

// NewMemoryStore returns an empty store.
func NewMemoryStore() *MemoryStore {
	return &MemoryStore{orders: make(map[string]*Order), wake: make(chan struct{}, 1)}
}

// Create implements Store.
func (m *MemoryStore) Create(_ context.Context, o Order, event *reliable.Message) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.orders[o.ID]; ok {
		return errors.New("orders: duplicate order ID " + o.ID)
	}
	c := clone(o)
	m.orders[o.ID] = &c
	m.order = append(m.order, o.ID)
	m.enqueueLocked(event)
	return nil
}

// Update implements Store.
func (m *MemoryStore) Update(_ context.Context, id string, change func(o *Order) (*reliable.Message, error)) (Order, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	cur, ok := m.orders[id]
	if !ok {
		return Order{}, ErrNotFound
	}
	next := clone(*cur)
	event, err := change(&next)
	if err != nil {
		return Order{}, err
	}
	*cur = next
	m.enqueueLocked(event)
	return clone(next), nil
}

// Get implements Store.
func (m *MemoryStore) Get(_ context.Context, id string) (Order, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	o, ok := m.orders[id]
	if !ok {
		return Order{}, ErrNotFound
	}
	return clone(*o), nil
}

// List implements Store.
func (m *MemoryStore) List(context.Context) ([]Order, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Order, 0, len(m.order))
	for _, id := range m.order {
		out = append(out, clone(*m.orders[id]))
	}
	return out, nil
}

// Pending returns how many events wait to be published.
func (m *MemoryStore) Pending() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.pending)
}

func (m *MemoryStore) enqueueLocked(event *reliable.Message) {
	if event == nil {
		return
	}
	event.EnsureID()
	m.pending = append(m.pending, event)
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// RelayBatch bounds the events one Publish call of RunRelay carries.
const RelayBatch = 256

// RunRelay publishes pending events through pub until ctx ends, like the
// outbox relay does for PostgreSQL: an event leaves the queue only after pub
// confirmed it, failures are retried with backoff, and a key's next event is
// published only after the previous one was confirmed, so one order's events
// reach the broker in order. Run one relay per store.
func (m *MemoryStore) RunRelay(ctx context.Context, pub reliable.Publisher, logger *slog.Logger) {
	if logger == nil {
		logger = slog.Default()
	}
	backoff := reliable.Backoff{Initial: 50 * time.Millisecond, Max: 2 * time.Second}
	failures := 0
	for ctx.Err() == nil {
		batch := m.headOfKeys()
		if len(batch) == 0 {
			select {
			case <-ctx.Done():
				return
			case <-m.wake:
			}
			continue
		}
		err := pub.Publish(ctx, batch...)
		m.remove(batch, err, logger)
		if err == nil {
			failures = 0
			continue
		}
		failures++
		logger.Warn("orders relay: publish failed, retrying", slog.String("error", err.Error()), slog.Int("failures", failures))
		if reliable.Sleep(ctx, backoff.Delay(failures)) != nil {
			return
		}
	}
}

// headOfKeys returns the oldest pending event of each key, up to RelayBatch,
// in queue order.
func (m *MemoryStore) headOfKeys() []*reliable.Message {
	m.mu.Lock()
	defer m.mu.Unlock()
	seen := make(map[string]bool)
	var batch []*reliable.Message
	for _, e := range m.pending {
		if len(batch) == RelayBatch {
			break
		}
		if seen[e.Key] {
			continue
		}
		seen[e.Key] = true
		batch = append(batch, e)
	}
	return batch
}

// remove drops the confirmed events of batch from the queue: all of them
// when err is nil, those not listed as failed when err is a PublishError,
// none otherwise. An event that failed permanently (too large, unknown
// topic) would fail forever: it is dropped with an error log, which the
// outbox relay would instead keep as a dead row.
func (m *MemoryStore) remove(batch []*reliable.Message, err error, logger *slog.Logger) {
	confirmed := make(map[string]bool, len(batch))
	var pe *reliable.PublishError
	switch {
	case err == nil:
		for _, e := range batch {
			confirmed[e.ID] = true
		}
	case errors.As(err, &pe):
		failed := make(map[string]error, len(pe.Failed))
		for _, f := range pe.Failed {
			failed[f.MessageID] = f.Err
		}
		for _, e := range batch {
			ferr, ok := failed[e.ID]
			if ok && reliable.IsPermanent(ferr) {
				logger.Error("orders relay: event dropped after a permanent failure", slog.String("message", e.String()),
					slog.String("error", ferr.Error()))
			}
			if !ok || reliable.IsPermanent(ferr) {
				confirmed[e.ID] = true
			}
		}
	default:
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.pending = slices.DeleteFunc(m.pending, func(e *reliable.Message) bool { return confirmed[e.ID] })
}

func clone(o Order) Order {
	o.Dishes = slices.Clone(o.Dishes)
	return o
}
