package reliable

import (
	"context"
	"sync/atomic"
)

// Acknowledger settles deliveries with the broker. Adapters implement it; the
// consumer pipeline calls it through [Delivery].
type Acknowledger interface {
	// Ack records that the delivery is complete. For Kafka the offset becomes
	// committable once every earlier offset of its partition is complete too;
	// for RabbitMQ the delivery tag is acked on its own (never multiple=true).
	// Acking a delivery from a channel or session that has since been replaced
	// must do nothing: a stale tag would otherwise ack another message.
	Ack(ctx context.Context, d *Delivery) error
	// Nack gives the delivery back for redelivery.
	Nack(ctx context.Context, d *Delivery) error
}

// StaleReporter is implemented by an [Acknowledger] that can tell when its
// deliveries went stale: the Kafka partition was revoked, or the RabbitMQ
// channel they came on is gone. The broker gives such a delivery to another
// consumer, so handling it here could apply it twice, or after that consumer
// applied the key's later messages.
type StaleReporter interface {
	Stale(d *Delivery) bool
}

// Delivery is a message received from a [Subscriber], waiting to be settled.
type Delivery struct {
	// Message is the received message. Message.Delivery holds the broker
	// position.
	Message *Message

	ack     Acknowledger
	settled atomic.Bool
}

// NewDelivery returns a delivery settled through ack. Adapters call it.
func NewDelivery(msg *Message, ack Acknowledger) *Delivery {
	return &Delivery{Message: msg, ack: ack}
}

// Ack settles the delivery as complete. Call it only when the message's
// outcome is durable: handled, parked in the retry table, recognised as a
// duplicate, or dead-lettered. Ack and Nack are idempotent: only the first
// call of either reaches the broker.
func (d *Delivery) Ack(ctx context.Context) error {
	if !d.settled.CompareAndSwap(false, true) {
		return nil
	}
	return d.ack.Ack(ctx, d)
}

// Nack returns the delivery to the broker for redelivery.
func (d *Delivery) Nack(ctx context.Context) error {
	if !d.settled.CompareAndSwap(false, true) {
		return nil
	}
	return d.ack.Nack(ctx, d)
}

// Stale reports whether settling d can no longer have an effect, because
// the broker hands it to another consumer (see [StaleReporter]). A consumer
// does not start handling a stale delivery, nor any later one of its key.
// It is false when the adapter cannot tell.
func (d *Delivery) Stale() bool {
	s, ok := d.ack.(StaleReporter)
	return ok && s.Stale(d)
}

// Settled reports whether Ack or Nack was called.
func (d *Delivery) Settled() bool { return d.settled.Load() }
