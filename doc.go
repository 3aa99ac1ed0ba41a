// Package reliable is the core of a Go SDK that makes message delivery over
// Kafka and RabbitMQ safe by default: nothing lost, nothing applied twice, and
// the events of one key (an order) applied in order.
//
// This package defines the broker-agnostic vocabulary every other package
// speaks:
//
//   - [Message]: what is published and delivered. Its ID is the dedupe key and
//     its Key decides ordering and partitioning.
//   - [Publisher]: Publish returns nil only when the broker durably confirmed
//     every message. An [AsyncPublisher] can also confirm each message on its
//     own (the outbox relay uses it so that one slow partition does not hold
//     back the others).
//   - [Subscriber] and [Delivery]: deliveries are settled explicitly with
//     [Delivery.Ack] once their outcome is durable; nothing is settled because
//     it was merely received.
//   - [Handler]: the application's code, which returns nil, a [Retryable]
//     error or a [Permanent] error.
//
// Adapters (adapters/kafka, adapters/rabbitmq) implement Publisher and
// Subscriber; the consumer, ordering, retry, idempotency and outbox packages
// build the guarantees on top. Nothing in this package imports an adapter.
//
// Comments and tests across the module cite production incidents by ID
// (L01-L23: auto-ack loss, leader failover, a wrong environment, ...). The
// repository's docs/incidents.md describes each one and what prevents it:
// https://github.com/reliable-go/reliable/blob/main/docs/incidents.md
package reliable
