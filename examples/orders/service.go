package orders

import (
	"context"
	"fmt"
	"time"

	"github.com/reliable-go/reliable"
)

// DefaultTopic is the topic order events are published to.
const DefaultTopic = "orders"

// Service is the order service's logic: the state machine and its events.
type Service struct {
	store Store
	topic string
}

// NewService returns a service storing orders in store and announcing their
// changes on topic (DefaultTopic when empty).
func NewService(store Store, topic string) *Service {
	if topic == "" {
		topic = DefaultTopic
	}
	return &Service{store: store, topic: topic}
}

// Topic returns the topic events are published to.
func (s *Service) Topic() string { return s.topic }

// Place creates an order in state placed, version 1.
func (s *Service) Place(ctx context.Context, table string, dishes []Dish) (Order, error) {
	if err := validateDishes(dishes); err != nil {
		return Order{}, err
	}
	now := time.Now().UTC()
	o := Order{ID: reliable.NewID(), Status: Placed, Version: 1, Table: table,
		Dishes: append([]Dish(nil), dishes...), CreatedAt: now, UpdatedAt: now}
	if err := s.store.Create(ctx, o, NewEvent(s.topic, o)); err != nil {
		return Order{}, err
	}
	return o, nil
}

// Pay moves a placed order to paid.
func (s *Service) Pay(ctx context.Context, id string) (Order, error) { return s.move(ctx, id, Paid) }

// Complete moves a paid order to completed.
func (s *Service) Complete(ctx context.Context, id string) (Order, error) {
	return s.move(ctx, id, Completed)
}

// Cancel cancels a placed or paid order.
func (s *Service) Cancel(ctx context.Context, id string) (Order, error) {
	return s.move(ctx, id, Cancelled)
}

// Get returns an order's details, or ErrNotFound.
func (s *Service) Get(ctx context.Context, id string) (Order, error) { return s.store.Get(ctx, id) }

// List returns every order.
func (s *Service) List(ctx context.Context) ([]Order, error) { return s.store.List(ctx) }

func (s *Service) move(ctx context.Context, id string, to Status) (Order, error) {
	return s.store.Update(ctx, id, func(o *Order) (*reliable.Message, error) {
		if !o.Status.canMove(to) {
			return nil, fmt.Errorf("%w: order %s is %s, cannot become %s", ErrTransition, o.ID, o.Status, to)
		}
		o.Status = to
		o.Version++
		o.UpdatedAt = time.Now().UTC()
		return NewEvent(s.topic, *o), nil
	})
}
