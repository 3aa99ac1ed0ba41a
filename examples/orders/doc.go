// Package orders is the example order service: an HTTP API to place an order
// with dishes, pay, complete and cancel it, and read its details.
//
// Every state change publishes one small event, keyed by the order ID (L08,
// L14): the order ID, its new status and its version, never the dishes (L13).
// Consumers fetch the details from GET /orders/{id} and compare versions, so a
// lagging read is detectable (L21).
//
// The event is written in the same transaction as the state change:
// [PostgresStore] adds it to the SDK's transactional outbox (package outbox),
// and an outbox.Relay publishes it afterwards. [MemoryStore] keeps orders and
// pending events in memory and relays them with [MemoryStore.RunRelay]: it is
// NOT DURABLE, meant for the one-command demo and tests.
//
// State machine:
//
//	placed -> paid -> completed
//	placed -> cancelled
//	paid   -> cancelled
package orders
