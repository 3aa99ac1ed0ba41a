package orders

import (
	"context"

	"github.com/reliable-go/reliable"
)

// Store keeps orders and writes each change's event in the same transaction
// as the change, so an event exists if and only if its change does.
type Store interface {
	// Create stores a new order and its event atomically.
	Create(ctx context.Context, o Order, event *reliable.Message) error
	// Update loads order id, lets change modify it and return the event to
	// publish, then stores both atomically. It returns ErrNotFound, or
	// change's error without storing anything.
	Update(ctx context.Context, id string, change func(o *Order) (*reliable.Message, error)) (Order, error)
	// Get returns an order with its dishes, or ErrNotFound.
	Get(ctx context.Context, id string) (Order, error)
	// List returns every order, oldest first.
	List(ctx context.Context) ([]Order, error)
}
