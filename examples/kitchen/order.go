package kitchen

import (
	"context"
	"errors"
	"time"

	"github.com/reliable-go/reliable/examples/orders"
)

// Dish is one line of an order on the display.
type Dish struct {
	Name     string `json:"name"`
	Quantity int    `json:"quantity"`
	Served   bool   `json:"served"`
}

// Order is an order as the kitchen displays it.
type Order struct {
	ID        string        `json:"id"`
	Status    orders.Status `json:"status"`
	Version   int64         `json:"version"`
	Table     string        `json:"table,omitempty"`
	Dishes    []Dish        `json:"dishes"`
	UpdatedAt time.Time     `json:"updated_at"`
}

// Update is one event to apply, with the details fetched for it.
type Update struct {
	MessageID string
	OrderID   string
	Status    orders.Status
	Version   int64
	Table     string
	Dishes    []orders.Dish
}

// LedgerEntry records one apply of an event, in apply order.
type LedgerEntry struct {
	Seq       int64
	MessageID string
	OrderID   string
	Version   int64
	Status    orders.Status
	// Effective is false when the version guard found the order already at
	// this version or later, so the apply changed nothing.
	Effective bool
	AppliedAt time.Time
}

// ErrNotFound is returned for an order or dish the kitchen does not have.
var ErrNotFound = errors.New("kitchen: not found")

// Store keeps the kitchen's view of orders.
type Store interface {
	// Apply upserts the order to u's status and version unless it is already
	// at that version or later (L19), inserts its dishes once, and appends
	// u to the ledger, all atomically. It reports whether the order changed.
	Apply(ctx context.Context, u Update) (bool, error)
	// Serve marks dish number dish (0-based) of an order served.
	Serve(ctx context.Context, orderID string, dish int) error
	// Get returns one order, or ErrNotFound.
	Get(ctx context.Context, id string) (Order, error)
	// List returns every order, most recently updated first.
	List(ctx context.Context) ([]Order, error)
	// Ledger returns every apply, in order.
	Ledger(ctx context.Context) ([]LedgerEntry, error)
}
