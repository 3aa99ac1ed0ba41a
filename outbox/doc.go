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
// restarted with the same Config.Instance).
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
// Config.ReleaseOnDead, the key goes on). A publisher that returns
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
// ClaimTime. The relay's statements run with plan_cache_mode set to
// force_custom_plan for their transaction (PostgreSQL 12+): the outbox
// swings between a page of rows and a backlog, and a generic plan cached
// during the first (sequential scans per key) made each claim read the
// whole backlog once per key in the second, stalling the relay for up to a
// minute until autovacuum's ANALYZE replaced the plan (issue 19). The
// pool's own settings stay untouched.
//
// A running relay holds a PostgreSQL advisory lock on its Config.Instance: Run
// returns [ErrDuplicateInstance] when another live relay uses the ID, and a relay
// restarted with the ID takes its leases over at once. A statement of the
// killed run can still commit a claim after that (it was on the wire, or
// waiting on a lock, when the process died), and a claim whose reply a
// broken connection lost commits all the same: such a lease names the live
// relay, so no claim takes its key, yet no lane works it. Every
// PollInterval a claim therefore first deletes the leases under its
// Instance of keys the relay does not work, and claims them again in the
// same transaction (Stats.OrphanLeases counts them); before, their rows
// waited up to LeaseTTL. Run also refuses a
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
// # Reading the write-ahead log (ModeLog)
//
// With Config.Mode set to [ModeLog] a relay learns of committed rows from
// PostgreSQL's write-ahead log instead of polling: a logical replication
// slot with the built-in pgoutput plugin and a publication of the outbox
// table's INSERTs (both named Config.Slot, created by [CreateSlot] or by
// Run when missing at start). Everything else stays as described above:
// [Add] writes rows as before, the table remains the source of truth, keys
// are leased, a key has one row in flight, rows are deleted only after
// their confirm, and polling can take over at any moment.
//
// Why pgoutput on the table rather than pg_logical_emit_message: the
// insert that Add writes anyway is the log record, so the WAL carries each
// payload once (an emitted message would write it a second time, doubling
// the outbox's WAL); the publication limits decoding output to this table's
// inserts; the rows the log carries have the IDs the relay deletes, so log
// and table cannot disagree; pgoutput ships with PostgreSQL and is the one
// plugin every managed service supports; and a database without a slot (or
// an old relay) keeps working from the same rows. Logical messages would
// also need a second code path in Add and could not be replayed from the
// table when a slot is lost.
//
// The log reader decodes committed transactions in commit order and hands
// their rows to lanes: a key without a lane is leased (the same lease
// table, one round trip for all new keys of two milliseconds'
// transactions) and its pending rows read from the table in the same
// repeatable-read transaction, whose snapshot the lane keeps. A row from the log then joins
// its lane only when the lane holds every earlier pending row of its key:
// the lane's last read was complete (not cut by Window or the buffer), and
// the row is newer than it (its transaction was not visible to the read's
// snapshot) and than every row the lane holds. A row visible to that
// snapshot but not read is gone already (another relay sent it) and is
// skipped; a row the lane cannot take now (its read is cut or under way)
// makes the lane read on until it has it. A row no lane takes (its key has
// none) is remembered until done: a polling claim may have read the key
// before the row was visible and make its lane after the row was skipped,
// and that lane reads on until it has the row too. So the log changes where rows
// come from, never the order argument above: per key, rows are published
// in ID order from the lowest pending one, one at a time. PostgreSQL sends
// a commit a moment before it makes it visible (milliseconds on a busy
// machine); the reader waits until a transaction is visible before handing
// over its rows, or a row could be published and then survive the delete
// that could not see it yet (Stats.LogVisibilityWaits counts the waits).
// Keys the log fed stay leased for a second after their last row, so the
// next row needs no claim (at once when the relay is full). Memory stays
// bounded (L05): lanes hold at most MaxBufferedRows rows as before, and the
// reader tracks the IDs of at most 4 x MaxBufferedRows rows of the log not
// yet done; past that it stops reading and PostgreSQL keeps the rest in
// the slot (the WAL budget below still applies). Polling goes on beside the log, only every
// PollInterval: it relays what the log reader did not take (keys another
// relay held, rows pending before the slot existed, a retried dead row).
//
// The slot's confirmed position advances only past transactions whose rows
// are all done: deleted (or archived) after their confirm, or dead (they
// stay in the table, blocked, for an operator). Rows this relay publishes
// are done when marked; for the others (sent by another relay or by
// polling) the reader asks the table after a second. A crash therefore
// replays from the slot, never skips: the new reader gets every
// transaction after the confirmed position again, skips the rows already
// deleted (visible to its read, yet not there), and publishes again only
// rows confirmed but not yet deleted at the crash (duplicates, dropped by
// consumers).
//
// Fallback. The relay polls by itself, logs why at warn level (component
// "outbox relay", reason) and counts the switch in Stats.LogFallbacks,
// whenever the slot is missing (dropped by an operator, not yet created on
// a promoted standby), invalidated (pg_replication_slots.wal_status =
// 'lost': max_slot_wal_keep_size removed WAL it needed; drop and create
// it), retains more WAL than Config.SlotWALBudget, or the stream fails. It
// checks again every Config.SlotCheckInterval and reads the log as soon as
// the slot is healthy. Over the budget it also moves the slot to the
// current WAL position, releasing the WAL (a stuck relay must not fill the
// database's disk); the rows of the skipped transactions are in the table,
// which polling relays, and it reads the log again after Config.SlotRetry.
// Nothing is lost in any of these: the table holds every pending row.
// Stats.LogState says what the reader does now.
//
// One reader per slot. PostgreSQL lets one walsender stream from a slot
// at a time (its active_pid): a second relay's START_REPLICATION fails, and
// that relay stands by (Stats.LogState "standby"), polling beside the
// reader (safe: leases) and trying the slot every SlotCheckInterval. When
// the reader dies, PostgreSQL ends its walsender as soon as it sees the
// connection close (at once after kill -9; after wal_sender_timeout, 60s by
// default, when its host vanished) and a standby reads on from the
// confirmed position; its keys wait for their leases to pass, or go at
// once to a reader restarted with the same Config.Instance.
//
// Operating it. [SlotStatus] reports the slot (exists, active pid,
// wal_status, retained and unconfirmed WAL in bytes, safe_wal_size,
// PostgreSQL 17's failover flag); [CreateSlot] and [DropSlot] create and
// drop slot and publication (reliablectl outbox slot status|create|drop
// wraps them).
// Stats.SlotRetainedBytes and Stats.SlotLagBytes carry the same figures
// while the relay reads the log; observability's WatchOutboxSlot exports the
// slot's (from SlotStatus, whatever the relay does) and WatchRelay the
// relay's log state and fallbacks, and deploy/prometheus/alerts.yml has alert
// rules on them. PostgreSQL needs:
//
//   - wal_level = logical (a restart), and max_replication_slots and
//     max_wal_senders with room for one slot and one sender per outbox
//     schema (plus a standby's attempts).
//   - max_slot_wal_keep_size (PostgreSQL 13+) set, so a forgotten slot
//     cannot fill the disk: past it PostgreSQL invalidates the slot and
//     the relay polls. Keep Config.SlotWALBudget below it, so the relay
//     gives up first, on its own terms.
//   - A role with the REPLICATION attribute (or the service's equivalent)
//     that owns the outbox table (CREATE PUBLICATION ... FOR TABLE).
//   - Failover: a slot lives on one server. On PostgreSQL 17 create it as a
//     failover slot (SELECT pg_create_logical_replication_slot('reliable_outbox',
//     'pgoutput', false, false, true)) and set sync_replication_slots = on
//     and hot_standby_feedback = on on the standby and
//     synchronized_standby_slots on the primary, so the promoted standby
//     has it. Before 17 (or without that) the relay polls after a
//     failover until an operator calls CreateSlot on the new primary;
//     nothing is lost.
//   - Amazon RDS and Aurora PostgreSQL: rds.logical_replication = 1 in the
//     parameter group (a reboot) and GRANT rds_replication TO the role.
//     Google Cloud SQL: the cloudsql.logical_decoding = on flag and ALTER
//     ROLE ... WITH REPLICATION. Azure Database for PostgreSQL (flexible
//     server): wal_level = logical in the server parameters (a restart) and
//     a role WITH REPLICATION. All three support pgoutput and
//     max_slot_wal_keep_size.
//
// scripts/services.sh sets up the local PostgreSQL this way (wal_level =
// logical, max_replication_slots = 20, max_slot_wal_keep_size = 1GB, the
// reliable role WITH REPLICATION).
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
