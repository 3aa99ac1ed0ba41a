// Package kitchen is the example kitchen display service: it consumes the
// order service's events with the SDK's consumer and shows cooks and waiters
// every order, its dishes and its state on a web page that updates live.
//
// The events carry only an order's ID, status and version (L13), so
// [Kitchen.Handle] fetches the dishes from the order service. A fetch that
// does not find the order, or finds an older version than the event's (a
// lagging read replica, L21), is a retryable error: the consumer parks the
// message in the retry table and the key's later events wait behind it
// (L09, L11), while other orders go on (L10).
//
// Stores apply an event with an upsert guarded by the version (L19): a
// duplicate or late event never overwrites a newer state, and two concurrent
// first deliveries cannot both insert. Every apply is also written to a
// ledger (the order ID, version and message ID, in apply order) from which
// the demo proves that nothing was lost, applied twice or applied out of
// order. [PostgresStore] keeps the display in PostgreSQL and can record the
// dedupe record in the same transaction (exactly-once effect);
// [MemoryStore] is NOT DURABLE, for the demo and tests.
package kitchen
