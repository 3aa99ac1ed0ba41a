// Package outbox is a transactional outbox for PostgreSQL (pgx): messages
// are written in the same transaction as the business change, and a Relay
// publishes them to the broker afterwards, in order per key.
//
// # Writing
//
// [Add] inserts messages in the caller's pgx transaction. If the transaction
// rolls back, no message exists; if it commits, exactly its messages will be
// published, at least once (consumers deduplicate by Message.ID, which Add
// assigns and the caller can read right away).
//
// # Order per key equals commit order
//
// Row IDs come from a sequence and are assigned before commit, so without
// care a row with a lower ID can become visible after a higher one of the
// same key: T1 inserts id 1 and is still open, T2 inserts id 2 and commits, a
// relay publishes 2, then T1 commits 1. Add prevents this by locking the key
// before inserting: it upserts the key's row in reliable_outbox_keys, which
// holds a row lock until the transaction ends. A second transaction adding to
// the same key waits in Add until the first commits or rolls back, and only
// then draws its IDs. Hence, per key, IDs increase in commit order, and when
// a row of a key is visible every lower-ID row of that key is either visible
// or rolled back (PostgreSQL makes a commit visible before releasing its
// locks). A relay that reads a key's rows in ID order therefore reads them in
// commit order, and may read ahead: nothing can later appear before the rows
// it has seen. Transactions on different keys do not wait for each other.
//
// # Relaying
//
// A [Relay] leases keys, not rows: a lease row per key in
// reliable_outbox_leases names the one relay allowed to publish that key's
// rows, until it expires (Config.LeaseTTL) unless renewed. Leases are taken
// with an upsert that only overwrites an expired lease, so two relays never
// hold one key. Row locks with FOR UPDATE SKIP LOCKED alone would not do:
// while relay A publishes a key's first row, relay B would skip it and take
// the key's second row. Leases also survive a relay that is killed: its keys
// go to another relay when the lease expires (or at once to a relay
// restarted with the same Config.ID).
//
// Per key, the relay publishes one row at a time: the next row is published
// only after the broker confirmed the previous one and it was deleted (or
// archived). Different keys are published in parallel, their head rows
// batched into one Publish call. When the publisher confirms each message on
// its own (a [reliable.AsyncPublisher]: the Kafka adapter's Publisher and
// kafka.NewProducer), each row is marked as soon as its own confirm arrives,
// so a partition that is slow to confirm (electing a leader) holds back only
// its own keys, not every key batched with it. A relay publishes a key only while its lease
// has more than Config.PublishTimeout left, so a relay that stalls loses its
// keys without publishing into another relay's turn; the one exception, a
// publish already in flight when the stall began, can only repeat a row that
// the new owner publishes again anyway, which consumers deduplicate.
//
// # Ordering without trusting leases
//
// Leases keep relays from doing the same work twice; per-key order does not
// depend on them. Three rules give it: (1) Add's key lock makes a key's
// lower IDs visible no later than its higher ones; (2) a relay publishes a
// key's rows in ID order, the next only after the previous was confirmed;
// (3) a row is deleted only after it was confirmed. So when any relay first
// gets row j of a key confirmed, every earlier row i of that key was
// confirmed before: either the same relay published it first, or it had
// been deleted, hence confirmed, before that relay read the key. The first
// copy of each message therefore reaches the broker in commit order, and
// later copies (a relay that lost its lease mid-publish, a crash between
// confirm and delete) are duplicates that consumers drop by ID. That is why
// the relay's own bookkeeping may commit asynchronously (synchronous_commit
// off): a database crash that undoes a lease or a delete causes repeats,
// never reordering or loss.
//
// Crash safety: a row is deleted only after its confirm. A relay killed
// between the confirm and the delete leaves the row pending, and it is
// published again after the lease passes: at-least-once, never lost (L03,
// L20).
//
// The relay wakes on LISTEN/NOTIFY and polls as a fallback: every few
// milliseconds right after activity, slowing down to Config.PollInterval
// when idle. Add notifies at most every 10ms per process, because
// PostgreSQL serializes the commits of notifying transactions (each holds a
// database-wide lock across its WAL flush), which would cap the commit rate
// of every transaction that calls Add. A publish the broker did not confirm
// in time is never held against a row: when every message of a call fails
// that way the broker is taken to be down and the relay backs off as a
// whole; when others were confirmed, only the keys whose destination did not
// confirm (a partition electing a leader) back off. Either way rows
// accumulate during an outage of any length and drain in order afterwards.
// A row that fails otherwise while the broker confirms other messages is
// charged an attempt and retried with backoff, its key waiting behind it;
// after Config.MaxAttempts (or at once on a permanent error such as a
// message too large, L13) it becomes dead: the Notifier is told and the key
// stays blocked until an operator calls [Retry] or [Discard] (or, with
// Config.DeadReleasesKey, the key goes on). A publisher that returns
// reliable.ErrClosed (the application closed it while the relay still runs)
// is an outage too, never a property of the rows: they are charged nothing
// and never die, and the relay logs an error and backs off until publishes
// succeed. Close the relay before its publisher.
//
// Memory: the relay holds at most Config.MaxBufferedRows rows across its
// keys, reading fewer than Config.Window rows per key ahead when many keys
// are leased, so draining a backlog of any size takes bounded memory (L05,
// L23).
//
// Claims cost what they return, not the backlog's depth: a claim walks the
// distinct keys that have rows (one index probe each, from a round-robin
// cursor) and stops once it found Config.ClaimBatch claimable keys, so
// 10,000 rows behind one leased key cost what one row does (see
// bench/outbox's claimcost). [Relay.Stats] reports ClaimQueries and
// ClaimTime.
//
// A running relay holds a PostgreSQL advisory lock on its Config.ID: Run
// returns [ErrDuplicateID] when another live relay uses the ID, and a relay
// restarted with the ID takes its leases over at once. Run also refuses a
// row ID sequence with CACHE > 1 ([ErrSequenceCached]), which would break
// the commit-order argument above. [Relay.Ready] answers readiness probes:
// not running, starting, shutting down, a broker outage in progress, the
// database unreachable.
//
// Sent rows are deleted, or moved to reliable_outbox_archive and deleted in
// batches after Config.Retention (L17). [ReadStatus] reports pending rows,
// the oldest pending age and dead rows (L18); [Relay.Stats] counts
// publishes, failures and outages.
//
// # Schema
//
// [Migrate] creates the tables in the connection's current schema; it runs
// only when called. Use a search_path to place them elsewhere.
//
// Keys, message IDs, types and header names and values are arbitrary bytes
// (NUL bytes, invalid UTF-8, keys of many kilobytes): the relay publishes
// them byte-exact. A value PostgreSQL text cannot hold is stored base64
// behind a "\x01b64:" marker (values that text holds are stored as they
// are), and a lane whose key is over 512 bytes is indexed by the key's
// SHA-256; migration 002 rewrites the long lanes of older rows (rows that
// an older version still adds during a rollout keep the old lane form, so a
// key over 512 bytes may then be split in two lanes until the rollout ends).
package outbox
