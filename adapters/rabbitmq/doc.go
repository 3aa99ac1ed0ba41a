// Package rabbitmq implements reliable.Publisher and reliable.Subscriber on
// RabbitMQ with github.com/rabbitmq/amqp091-go.
//
// Guarantees:
//
//   - Publish returns nil only after a publisher confirm for every message,
//     published persistent (delivery mode 2) with mandatory set to a durable
//     exchange (L02, L03). A message no queue is bound for is returned by the
//     broker and then acked; the Publisher correlates the return by message
//     ID and fails the message with reliable.ErrUnroutable. Confirms are
//     read from deferred confirmations, never from notify channels that
//     amqp091-go (v1.13+) stops feeding after 5 s.
//   - While the connection is down, Publish waits for the reconnect within
//     its context; while the broker blocks publishing (a memory or disk
//     alarm), Publish returns the context's error instead of hanging.
//   - Fields AMQP cannot carry are refused before anything is written, with
//     a *reliable.InvalidMessageError naming the field: a topic, key, ID,
//     type or header name over 255 bytes (AMQP short strings), a topic that
//     is not UTF-8, headers whose frame exceeds the connection's frame_max.
//     amqp091-go would shut the whole connection down on such a message,
//     and the broker closes it, failing every publish that shares it.
//   - Close never hangs: Publisher.Close lets in-flight calls finish for up
//     to the close timeout (WithCloseTimeout, 5 s), then makes the ones
//     still waiting (for a reconnect, a resource alarm, confirms) return an
//     error matching reliable.ErrClosed; Subscriber.Close ends a Subscribe
//     waiting for an unreachable broker the same way.
//   - Subscribers use manual acks only (L01), a per-consumer prefetch, and
//     ack each delivery on its own (never multiple=true), only when the
//     application calls Delivery.Ack. A delivery that is not acked returns
//     to the queue when its channel ends and is delivered again. A channel
//     stays open 250 ms after its last ack when the subscription ends, so a
//     quorum queue applies acks its broker-side client still buffered.
//   - Messages of other clients: without the ce_partitionkey header the key
//     is the routing key; without a message-id property or ce_id header the
//     ID is empty.
//   - Connections are re-established with backoff; subscriptions redeclare
//     their queues and resume, also after the broker cancels a consumer
//     because its queue was deleted. The delivery channel stays open. A
//     delivery from before a reconnect is never acked on the new channel.
//   - Queues are quorum queues by default (replicated, L22) with a
//     dead-letter queue per consumer group, at-least-once dead-lettering and
//     a delivery limit, so a poison message ends in the dead-letter queue and
//     is never dropped. See [Topology].
//   - Per-key order with any number of instances (L08, L12): every queue a
//     group consumes has a single active consumer (x-single-active-consumer).
//     On the default topology one instance of a group consumes the group's
//     queue and the others stand by; when the active one stops or loses its
//     connection, its unacked deliveries return to the queue and a standby
//     takes over, starting with them. The trade-off: without sharding a
//     group's throughput is that of one instance, whatever the number of
//     instances (they add availability, not parallelism).
//   - [Subscriber.DeadLetter] publishes a poison message to its group's
//     dead-letter queue (persistent, mandatory, confirmed) with headers
//     naming the cause, the original topic and queue, the group and the
//     attempts (HeaderDeadLetter*); the consumer package uses it as the
//     default dead-letter path.
//   - Key-ordered sharding for parallelism across instances: a
//     consistent-hash exchange over N single-active-consumer queues keeps
//     each key's order while up to N instances work in parallel
//     ([Topology].Shards).
//   - A queue declared by an older version without a single active consumer
//     (or with other arguments) is never used as it is: RabbitMQ cannot
//     change a queue's arguments in place, so [Declare] and Subscribe fail
//     with a *[QueueArgumentsError] (matching reliable.ErrInvalidConfig)
//     that names the queue and the fix, and a running subscription whose
//     queue was recreated so ends. The refusal closes only the declaring
//     channel, never a connection shared with other work.
//   - A refused login is reported as reliable.ErrNotAuthorized and stops
//     reconnecting; passwords never appear in logs or errors.
//
// Topic T maps to the topic exchange T; consumer group G of T to the queue
// T.G bound to it with "#"; a message's Key is its routing key. Declare a
// topic's groups before publishing with [Declare], or let each group's
// Subscriber declare its queue.
package rabbitmq
