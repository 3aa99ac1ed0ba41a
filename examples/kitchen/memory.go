package kitchen

import (
	"cmp"
	"context"
	"slices"
	"sync"
	"time"
)

// MemoryStore is a Store in memory. It is NOT DURABLE: the display and the
// ledger vanish with the process. For the demo and tests.
type MemoryStore struct {
	mu     sync.Mutex
	orders map[string]*Order
	ledger []LedgerEntry
}

// NewMemoryStore returns an empty store.
func NewMemoryStore() *MemoryStore { return &MemoryStore{orders: make(map[string]*Order)} }

// Apply implements Store.
func (m *MemoryStore) Apply(_ context.Context, u Update) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now().UTC()
	o, ok := m.orders[u.OrderID]
	if !ok {
		o = &Order{ID: u.OrderID}
		for _, d := range u.Dishes {
			o.Dishes = append(o.Dishes, Dish{Name: d.Name, Quantity: d.Quantity})
		}
		m.orders[u.OrderID] = o
	}
	changed := u.Version > o.Version // the upsert's guard (L19)
	if changed {
		o.Status, o.Version, o.Table, o.UpdatedAt = u.Status, u.Version, u.Table, now
	}
	m.ledger = append(m.ledger, LedgerEntry{Seq: int64(len(m.ledger) + 1), MessageID: u.MessageID, OrderID: u.OrderID,
		Version: u.Version, Status: u.Status, Effective: changed, AppliedAt: now})
	return changed, nil
}

// Serve implements Store.
func (m *MemoryStore) Serve(_ context.Context, orderID string, dish int) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	o, ok := m.orders[orderID]
	if !ok || dish < 0 || dish >= len(o.Dishes) {
		return ErrNotFound
	}
	o.Dishes[dish].Served = true
	o.UpdatedAt = time.Now().UTC()
	return nil
}

// Get implements Store.
func (m *MemoryStore) Get(_ context.Context, id string) (Order, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	o, ok := m.orders[id]
	if !ok {
		return Order{}, ErrNotFound
	}
	return cloneOrder(*o), nil
}

// List implements Store.
func (m *MemoryStore) List(context.Context) ([]Order, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Order, 0, len(m.orders))
	for _, o := range m.orders {
		out = append(out, cloneOrder(*o))
	}
	slices.SortFunc(out, func(a, b Order) int {
		return cmp.Or(b.UpdatedAt.Compare(a.UpdatedAt), cmp.Compare(a.ID, b.ID))
	})
	return out, nil
}

// Ledger implements Store.
func (m *MemoryStore) Ledger(context.Context) ([]LedgerEntry, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.ledger), nil
}

func cloneOrder(o Order) Order {
	o.Dishes = slices.Clone(o.Dishes)
	return o
}
