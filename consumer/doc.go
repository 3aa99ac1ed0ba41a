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
// A delivery is acked only when one of these outcomes is committed: handled
// and recorded, parked, recognised as a duplicate, or dead-lettered. When a
// store is unreachable, the step is retried with backoff inside the key's lane
// (other keys go on); when the consumer stops first, the delivery is left
// unsettled and the broker delivers it again. Nothing is ever acked because it
// was merely received (L04, L05).
package consumer
