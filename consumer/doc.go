// Package consumer runs a subscription through the SDK's pipeline and settles
// each delivery only when its outcome is durable.
//
// For every delivery, inside its key's lane (package ordering: different keys
// in parallel, one key in sequence):
//
//  1. Environment guard: a message from another environment is never handled;
//     it goes to the dead-letter path with the reason (L07).
//  2. Deduplication: a message ID recorded as done completes without calling
//     the handler; "done" is recorded only after the handler succeeded (L20).
//  3. Ordered retry: when the key already has entries in the retry table, the
//     message is parked behind them (L09, L11); otherwise the handler runs,
//     and a retryable failure parks it there, without blocking other keys
//     (L10). A permanent failure is dead-lettered.
//
// Config.Concurrency bounds the handler calls running at once. The steps
// around a handler call (dedupe Begin and Done, the retry-table check,
// parking, the ack) run in the key's lane but outside that bound: a key
// waiting for a round trip keeps its own order while other keys are
// handled. The dedupe store batches the concurrent Begin and Done calls of
// all lanes (see package idempotency), and the retry-table check asks the
// table only for keys the consumer's retry.KeyCache holds as blocked: the
// cache is loaded when the consumer takes over a partition or queue and
// marked before every park (the argument is in package retry, "Blocked
// keys without a round trip"). A subscriber that cannot report stale
// deliveries (see StaleReporting) gets a table query per message instead.
//
// Without a retry table, a failed message holds its key: it is tried again
// after a backoff, ahead of its key's later messages, which wait; other keys
// go on, and the held key takes no concurrency slot while it waits (L09).
// After Config.InlineAttempts tries the key is reported as blocked (an Error
// log, [Consumer.Blocked], OutcomeHeld events). A message is never nacked
// while its key's later messages are applied. Without a dead-letter path a
// poison message holds its key the same way until it succeeds or an
// operator acts: nothing is skipped.
//
// Messages from other clients: a message without an ID cannot be
// deduplicated; it is handled at least once and counted
// (Event.NotDeduplicated). A message without a key promises no order and
// gets a lane of its own. A store that refuses a message's bytes (a
// permanent error) sends it to the dead-letter path with the reason instead
// of retrying forever.
//
// A delivery is acked only when one of these outcomes is committed: handled
// and recorded, parked, recognised as a duplicate, or dead-lettered. When a
// store is unreachable, the step is retried with backoff inside the key's lane
// (other keys go on); when the consumer stops first, the delivery is left
// unsettled and the broker delivers it again, and so are the key's later
// deliveries, so that none is applied before it. Once the handler succeeded,
// recording it as done is not cut short by the shutdown deadline, so a
// redelivery is recognised as a duplicate. A delivery whose partition or
// channel moved to another consumer (reliable.Delivery.Stale) is not handled
// here. Nothing is ever acked because it was merely received (L04, L05).
package consumer
