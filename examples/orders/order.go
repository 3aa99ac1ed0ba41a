package orders

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/reliable-go/reliable"
)

// Status is an order's state.
type Status string

// The states of an order.
const (
	Placed    Status = "placed"
	Paid      Status = "paid"
	Completed Status = "completed"
	Cancelled Status = "cancelled"
)

// Final reports whether no transition leaves s.
func (s Status) Final() bool { return s == Completed || s == Cancelled }

// canMove reports whether an order may go from s to to.
func (s Status) canMove(to Status) bool {
	switch to {
	case Paid:
		return s == Placed
	case Completed:
		return s == Paid
	case Cancelled:
		return s == Placed || s == Paid
	}
	return false
}

// Dish is one line of an order.
type Dish struct {
	Name     string `json:"name"`
	Quantity int    `json:"quantity"`
}

// Order is an order with its dishes, as the order service stores it.
type Order struct {
	ID     string `json:"id"`
	Status Status `json:"status"`
	// Version starts at 1 when the order is placed and grows by one with each
	// transition; every version has exactly one event.
	Version   int64     `json:"version"`
	Table     string    `json:"table,omitempty"`
	Dishes    []Dish    `json:"dishes"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// Errors of the service. The HTTP API maps them to 404, 409 and 400.
var (
	ErrNotFound   = errors.New("orders: order not found")
	ErrTransition = errors.New("orders: transition not allowed")
	ErrInvalid    = errors.New("orders: invalid order")
)

// Event is the payload of every order event: only the ID, the status and the
// version (L13). Consumers fetch the rest.
type Event struct {
	OrderID string `json:"order_id"`
	Status  Status `json:"status"`
	Version int64  `json:"version"`
}

// EventType returns the message type of an event for status, e.g.
// "order.paid".
func EventType(s Status) string { return "order." + string(s) }

// NewEvent returns the message announcing o's current state on topic, keyed
// by the order ID so that one order's events stay in order (L08) and orders
// spread over partitions (L14).
func NewEvent(topic string, o Order) *reliable.Message {
	payload, _ := json.Marshal(Event{OrderID: o.ID, Status: o.Status, Version: o.Version}) // cannot fail
	return &reliable.Message{Topic: topic, Key: o.ID, Type: EventType(o.Status), Payload: payload}
}

// ParseEvent decodes an order event. A message that does not decode, or
// lacks the order ID or version, is a permanent error: retrying cannot fix it.
func ParseEvent(msg *reliable.Message) (Event, error) {
	var ev Event
	if err := json.Unmarshal(msg.Payload, &ev); err != nil {
		return Event{}, reliable.Permanent(fmt.Errorf("orders: event %s: %w", msg.ID, err))
	}
	if ev.OrderID == "" || ev.Version < 1 || ev.Status == "" {
		return Event{}, reliable.Permanent(fmt.Errorf("orders: event %s lacks order_id, status or version", msg.ID))
	}
	return ev, nil
}

func validateDishes(dishes []Dish) error {
	var p []string
	if len(dishes) == 0 {
		p = append(p, "no dishes")
	}
	for i, d := range dishes {
		if d.Name == "" {
			p = append(p, fmt.Sprintf("dish %d has no name", i))
		}
		if d.Quantity < 1 || d.Quantity > 99 {
			p = append(p, fmt.Sprintf("dish %d has quantity %d, want 1 to 99", i, d.Quantity))
		}
	}
	if len(p) > 0 {
		return fmt.Errorf("%w: %v", ErrInvalid, p)
	}
	return nil
}
