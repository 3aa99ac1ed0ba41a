// Package producer turns a broker adapter's single-attempt publisher into a
// durable one: it validates and sizes every message before anything is sent
// (L13), stamps the SDK's headers (ID, environment), and retries transient
// failures with exponential backoff and jitter until the caller's context ends
// (the "retries = MAX" rule, L03, L06). Permanent failures (too large, unknown
// topic, not authorized) fail fast with a typed error.
//
// Publish returns nil only when the adapter confirmed every message. A retry
// sends only the messages that were not confirmed; a message whose first
// outcome was unknown may therefore reach the broker twice, which consumers
// absorb by deduplicating on Message.ID.
package producer
