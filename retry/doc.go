// Package retry is the ordered retry table (L11) in PostgreSQL: a failed
// message waits in the table without holding up other keys (L10), and the
// later messages of its key wait behind it, so one key's events still apply
// in order (L09).
//
// # How the consumer uses it
//
// For each delivery, inside the message's key lane:
//
//  1. If [Table.Blocked] (or a [KeyCache], see below) reports the key has
//     entries waiting, [Table.Park] the message behind them (cause nil) and
//     complete the delivery.
//  2. Otherwise call the handler. On a retryable error, Park the message
//     with the error; on a permanent one, [Table.DeadLetter] it. Complete the
//     delivery once Park or DeadLetter returned nil: the entry is committed.
//
// A [Retrier] (run one in every service instance) claims keys whose head
// entry is due and replays the key's entries in their original order,
// backing off exponentially with jitter. After MaxAttempts failed attempts
// (default 7, counting the consumer's first) or a permanent error the entry
// is dead: the [Notifier] is called (log, webhook and email implementations)
// and the key stays blocked until an operator retries, discards or releases
// it through [Table.RetryNow], [Table.Discard] or [Table.Release], or at
// once with TableConfig.ReleaseOnDead.
//
// # Guarantees
//
//   - Order: a key's entries replay in the order they were parked, and a
//     message of a key with entries waiting is parked behind them, never
//     handled ahead of them.
//   - One retrier per key: a key is replayed only under a lease in the
//     database. Leases are renewed while a retrier works and expire when it
//     crashes, so another retrier takes the key over, starting again at the
//     key's head. Every outcome a retrier records is fenced by its lease.
//     Each renewal has a deadline two thirds of LeaseTTL after the last good
//     one: a renewal that hangs (an exhausted pool, a black-holed
//     connection) cancels the handler while the lease still holds, before
//     anyone else can take the key.
//   - Store outages are not the message's fault: a handler whose context was
//     cancelled (shutdown, lost lease) is not charged an attempt, and an
//     error marked [StoreUnavailable] (consumer.Deduplicated marks a dedupe
//     store that stayed down) is rescheduled without counting one, so an
//     outage never makes an entry dead or releases it.
//   - At least once: a replay whose outcome could not be recorded (crash,
//     lost lease, database error) runs again. Pair the handler with the
//     idempotency package or make it naturally idempotent.
//   - Shutdown never causes a second application: a replay whose handler
//     succeeded is recorded done on a context that Run's shutdown deadline
//     does not cut (bounded by a few seconds, and fenced by the lease).
//   - Any bytes: keys, message IDs, types and header names and values are
//     arbitrary bytes on the wire (a Java LongSerializer key holds NUL
//     bytes; foreign producers send invalid UTF-8 and multi-KB keys). The
//     table stores and returns them byte-exact: a value PostgreSQL text
//     cannot hold is stored base64 behind a "\x01b64:" marker, and a lane or
//     ID over 512 bytes is indexed by its SHA-256 (migration 003 rewrites the
//     long keys and IDs of older tables; while instances of an older version
//     still run, a key over 512 bytes they park is not seen by newer ones, so
//     finish the rollout before such keys arrive). A value the database
//     still refuses (a data exception or program limit, such as a timestamp
//     before 4713 BC) makes Park, DeadLetter and Blocked return an error
//     that matches reliable.IsPermanent and names the SQLSTATE, never one a
//     caller would retry forever; an outage stays a retryable error.
//   - Replica lag (L21): a handler that reads an incomplete order from a
//     lagging replica returns reliable.RetryAfter(d, err); the message waits
//     in the table at least d, and its key's later messages wait behind it.
//
// # Blocked keys without a round trip
//
// Asking the table before every message ([Table.Blocked]) costs a round
// trip per message although almost every key is free. A consumer that owns
// the partition (Kafka) or the single-active queue (RabbitMQ) a key comes
// from knows instead: a [KeyCache] holds the group's blocked keys in memory,
// and the check reads the table only for a key the cache holds (which may
// have been drained, released or discarded since: the table's answer then
// makes the cache forget the key). package consumer uses it when the retry
// table is a *Table and the subscriber reports stale deliveries (the SDK's
// Kafka and RabbitMQ subscribers, the reliabletest broker); with any other
// subscriber every message asks the table, as before. The cache answers only
// while its listener hears announcements ([KeyCache.Listening]); while the
// listener reconnects, every message asks the table.
//
// The rules the consumer keeps:
//
//   - Ownership changes reload. The consumer tracks, per partition or queue,
//     its latest delivery. While that delivery is unsettled and not stale
//     (reliable.Delivery.Stale), the partition has stayed this consumer's
//     since it arrived: a Kafka claim ends, and its deliveries go stale,
//     before the partition is given to another member; a RabbitMQ queue's
//     single active consumer changes when its channel closes (its
//     deliveries go stale) or, with consumer priorities, once it has no
//     unacked delivery. Otherwise, when a delivery arrives, ownership may
//     have changed meanwhile: the cache answers for that delivery's key only
//     after a [KeyCache.Load] (one query) that started after the delivery
//     arrived has returned (deliveries wait up to a second for it, then ask
//     the table themselves). At start-up the first load is made visible
//     only once the listener listens (at most half a second later), so the
//     first deliveries wait for it instead of asking the table one by one;
//     delaying a load's answers never widens them.
//   - Parks mark. The consumer marks the key in the cache before it parks
//     or dead-letters a message, in the key's lane, so no later message of
//     the key is checked before the mark, and marks it again once the entry
//     is committed, so that a load whose snapshot missed the entry cannot
//     drop the key.
//   - Only parks block. An entry that blocks a key is created only by Park or
//     DeadLetter, and made blocking again only by RetryNow of a released
//     entry. The retrier never creates one: it marks entries done, dead
//     (still blocking) or released. Release, Discard, a retry's success and
//     RetryNow of a pending or dead entry never block a free key.
//
// Why a key the cache does not hold is free for its owner C, when C handles
// the key's message m (C owns m's partition, the cache answers for m):
//
//   - An entry C parked itself: marked before it was parked and after; a
//     mark goes only when the table, asked after the mark, said the key was
//     free, or when a load that started after the mark did not find it,
//     which the mark made after the commit rules out.
//   - An entry another instance D parked (two instances, a rebalance): a key
//     maps to one partition or queue of the topic (see below for keys shared
//     by several topics), so D parked a message m' of it while
//     D owned that partition. If D's park committed before C's ownership
//     began, the load that answers for m started after that and saw it.
//     D parks before it acks, and the offset past m' is committed (Kafka) or
//     m' acked (RabbitMQ) only after that, before the partition or queue
//     can pass to C; so a park that commits later is of a message m' that
//     D had not settled when C took over, which the broker therefore
//     delivers to C again, ahead of the key's later messages. C then parks
//     m' itself (with dedupe: D's live claim makes Begin report it in
//     progress) or, if D gave its claim up, handles it; D's late entry of m'
//     is then a duplicate the retrier skips through the dedupe store.
//     Without a dedupe store, a stale owner that is still handling a revoked
//     message is at-least-once already; its late park is announced (see
//     below) and C marks the key when the announcement arrives.
//   - The retrier, in this or another process, only unblocks.
//   - An operator's Release or Discard only unblocks; the cache learns it
//     lazily, at the key's next message, for one round trip. RetryNow of a
//     released entry blocks the key again: the statement announces it on
//     [KeyNotifyChannel] and C marks the key as the announcement arrives
//     (milliseconds). Messages of the key handled before that go ahead of
//     the retried entry, as those handled between its release and the
//     RetryNow already did: replaying a released entry behind its key's
//     newer messages is the operator's call (see Table.RetryNow).
//
// Park, DeadLetter and RetryNow announce the key on [KeyNotifyChannel] in
// their own transaction, naming the table by its OID, so that every
// spelling of it (with or without the schema) reaches the same listeners;
// [KeyCache.Run] listens (one connection of the pool) and reloads whenever it
// (re)connects, since announcements made while it was away are lost. The
// argument above needs the announcements for a stale owner's late park, for
// RetryNow of a released entry, and for keys that are not tied to one
// partition or queue: consumers of several topics (or of a RabbitMQ
// consistent-hash exchange whose queues change) that share one group's
// table block each key across them, and learn of each other's parks only
// through announcements. Such a park reaches the others within
// milliseconds of its commit; a message of the key on another topic that is
// checked in those milliseconds has no order with the parked one anyway
// (messages of different topics are not ordered). A load's keys are never
// dropped by the answer of a Blocked question asked before the load.
//
// # Operations
//
// [Table.Migrate] applies the embedded schema explicitly (never from a
// constructor). [Table.Ready] and [Retrier.Ready] answer readiness probes
// (with the reason when not ready). [Table.Status] gives depth, due entries, dead entries and the
// oldest due time for metrics and alerts (L18). [Table.Cleanup], run by each
// Retrier every CleanupInterval, deletes finished history older than the
// retention in batches (L17). Keyless messages have no order to keep and
// never block each other.
//
// Only the head of each key carries a due time; entries parked behind it get
// one when they become the head. Claims therefore read an index of due heads
// and stay cheap however long the queues behind blocked keys grow (L17):
// about 0.05 ms at 100k entries, against 175 ms for a scan of every entry.
//
// Every statement that reads the entries table (Blocked, Park, the
// retrier's claims, reads and outcomes, KeyCache loads, the operator API)
// runs with plan_cache_mode set to force_custom_plan for its transaction
// (PostgreSQL 12+): the table swings from a few rows to an outage's backlog,
// and the generic plans PostgreSQL caches for prepared statements while it
// is tiny read the whole table per lookup once it is not (a claim over 20k
// entries: 25 s instead of 1 ms) until an ANALYZE replaces them. The pool's
// own settings stay untouched; no round trip is added.
package retry
