package reliable

import (
	"context"
)

// Publisher publishes messages durably.
//
// Publish returns nil only when the broker confirmed every message durably
// (Kafka: written to all in-sync replicas; RabbitMQ: a publisher confirm for
// a persistent message routed to a durable queue). Messages of one key in one
// call are sent in the order given, and when the call succeeds they were
// written in that order.
//
// When Publish returns an error, some messages may have been written and
// others not: a *PublishError lists the ones that were not confirmed. Their
// outcome may be unknown (a confirm lost with the connection), so publishing
// them again is the right reaction; consumers deduplicate by Message.ID. Order
// is not promised across a partial failure: a later message of a key may be
// written while an earlier one was not, and the earlier one's retry then
// lands after it. A caller that needs a key's order across failures publishes
// the key's next message only after the previous one was confirmed, as the
// outbox relay does.
// Cancelling ctx stops waiting and returns ctx's error; messages already sent
// may still be written.
//
// Publish sets an empty Message.ID to a new UUIDv7 and a zero Message.Time to
// now, in place, so the caller learns the IDs. Implementations are safe for
// concurrent use.
type Publisher interface {
	Publish(ctx context.Context, msgs ...*Message) error
	// Close waits for in-flight publishes to finish, then releases the
	// connection. Publish after Close returns ErrClosed.
	Close() error
}

// AsyncPublisher is a Publisher that can also confirm each message on its
// own, so that a caller with many independent messages in flight (the outbox
// relay) finishes each one when its own confirm arrives instead of waiting
// for the slowest message of a batch.
//
// PublishAsync stamps msg like Publish, hands it over and returns; it calls
// done exactly once, from another goroutine, with nil when the broker
// confirmed msg durably or with the error Publish would report for it. done
// must not block. When PublishAsync returns an error, nothing was sent and
// done is never called; an error matching errors.ErrUnsupported means this
// publisher cannot publish asynchronously at all (a wrapper around one that
// has no PublishAsync), and the caller should use Publish instead. ctx bounds
// the hand-over; cancelling it before done is called may or may not end the
// wait for the confirm. PublishAsync does not retry.
type AsyncPublisher interface {
	Publisher
	PublishAsync(ctx context.Context, msg *Message, done func(*Message, error)) error
}

// Subscriber delivers the messages of a topic (Kafka) or queue (RabbitMQ).
//
// Subscribe returns a channel of deliveries that stays open until ctx ends or
// the subscriber is closed, across broker reconnects and rebalances. Each
// delivery must be settled with Ack once its outcome is durable; a delivery
// that is never acked, or is nacked, is delivered again later, to this or
// another instance. That is at-least-once delivery: handlers must be
// idempotent, which the consumer package provides.
//
// Deliveries of one key arrive in order. The channel is unbuffered past the
// broker's prefetch, so a slow consumer slows the subscriber instead of
// filling memory.
type Subscriber interface {
	Subscribe(ctx context.Context, topic string) (<-chan *Delivery, error)
	// Close stops every subscription. Unsettled deliveries are left to the
	// broker to redeliver.
	Close() error
}

// Handler is the application's code for one message.
//
// Return nil when the message took effect; a [Retryable] error (or any error
// that is not permanent) to try again later without blocking other keys; a
// [Permanent] error to dead-letter the message at once. The handler may be
// called more than once for a message (after a crash, a rebalance, a
// reconnect): the idempotency package skips repeats of messages that already
// succeeded.
type Handler interface {
	Handle(ctx context.Context, msg *Message) error
}

// HandlerFunc adapts a function to a Handler.
type HandlerFunc func(ctx context.Context, msg *Message) error

// Handle calls f(ctx, msg).
func (f HandlerFunc) Handle(ctx context.Context, msg *Message) error { return f(ctx, msg) }
