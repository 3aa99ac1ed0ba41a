package kitchen

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/examples/orders"
)

// OrderSource gives an order's details; *orders.Client implements it over
// HTTP. It returns an error matching orders.ErrNotFound for an unknown order.
type OrderSource interface {
	Get(ctx context.Context, id string) (orders.Order, error)
}

// LagRetryDelay is how long an event waits in the retry table when the order
// service's answer was incomplete (L21): long enough for a replica to catch
// up.
const LagRetryDelay = 200 * time.Millisecond

// ErrIncomplete is the cause of a retry after the order service answered
// with an order older than the event, or none at all (L21).
var ErrIncomplete = errors.New("kitchen: order details not up to date yet")

// Kitchen applies order events to its store and serves the display.
type Kitchen struct {
	store  Store
	source OrderSource
	log    *slog.Logger

	// pubMu makes each broadcast read the store after the change it
	// announces, so the last broadcast of an order is its latest state.
	pubMu sync.Mutex
	hub   hub
}

// New returns a kitchen applying events to store with details from source.
func New(store Store, source OrderSource, logger *slog.Logger) *Kitchen {
	if logger == nil {
		logger = slog.Default()
	}
	return &Kitchen{store: store, source: source, log: logger, hub: hub{subs: make(map[chan []byte]struct{})}}
}

// Store returns the kitchen's store.
func (k *Kitchen) Store() Store { return k.store }

// Handle implements reliable.Handler for the order events.
func (k *Kitchen) Handle(ctx context.Context, msg *reliable.Message) error {
	ev, err := orders.ParseEvent(msg)
	if err != nil {
		return err // permanent: dead-letter it
	}
	details, err := k.source.Get(ctx, ev.OrderID)
	switch {
	case errors.Is(err, orders.ErrNotFound):
		// The order service (or its replica) does not show the order yet:
		// an incomplete answer, retried later, never "no dishes" (L21).
		return reliable.RetryAfter(LagRetryDelay, fmt.Errorf("%w: order %s not found for event version %d: %w",
			ErrIncomplete, ev.OrderID, ev.Version, err))
	case err != nil:
		return reliable.Retryable(fmt.Errorf("kitchen: fetch order %s: %w", ev.OrderID, err))
	case details.Version < ev.Version:
		return reliable.RetryAfter(LagRetryDelay, fmt.Errorf("%w: order %s is at version %d, event is version %d",
			ErrIncomplete, ev.OrderID, details.Version, ev.Version))
	}
	if _, err := k.store.Apply(ctx, Update{MessageID: msg.ID, OrderID: ev.OrderID, Status: ev.Status,
		Version: ev.Version, Table: details.Table, Dishes: details.Dishes}); err != nil {
		return reliable.Retryable(err)
	}
	k.publish(ctx, ev.OrderID)
	return nil
}

// Serve marks a dish served and updates the display.
func (k *Kitchen) Serve(ctx context.Context, orderID string, dish int) (Order, error) {
	if err := k.store.Serve(ctx, orderID, dish); err != nil {
		return Order{}, err
	}
	k.publish(ctx, orderID)
	return k.store.Get(ctx, orderID)
}

// publish sends an order's current state to the live displays.
func (k *Kitchen) publish(ctx context.Context, id string) {
	k.pubMu.Lock()
	defer k.pubMu.Unlock()
	o, err := k.store.Get(ctx, id)
	if err != nil {
		k.log.Warn("kitchen: display update skipped", slog.String("order", id), slog.String("error", err.Error()))
		return
	}
	b, _ := json.Marshal(o)
	k.hub.broadcast(b)
}
