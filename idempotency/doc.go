// Package idempotency records which messages were processed, so a duplicate
// delivery completes without calling the handler again (L20).
//
// Brokers deliver at least once: a consumer that crashes after its handler
// succeeded but before the commit or ack gets the message again. A [Store]
// turns that into "applied once in effect":
//
//  1. [Store.Begin] claims the message ID for a limited time (the claim TTL).
//     StatusNew: process it. StatusDone: it was processed already, complete
//     the delivery without calling the handler. StatusInProgress: another
//     consumer holds a live claim, try later.
//  2. After the handler succeeded, [Store.Done] records the ID as processed,
//     kept for the retention period. Never before: recording first would
//     lose the message if the handler then failed.
//  3. After a failure, [Store.Abort] releases the claim so a retry may run.
//
// A consumer that crashes between Begin and Done leaves a claim that expires
// after the claim TTL, so the message is processed again, never lost. Keep
// handlers well below the claim TTL: a claim that expires while its handler
// still runs lets a second delivery run concurrently. Every store reports
// its claim TTL ([ClaimReporter]), so callers can bound handlers below it
// (consumer.Deduplicated does for replays), and [PostgresStore.DoneTx]
// fails with [ErrClaimLost] when the claim was taken over meanwhile.
//
// Implementations: [RedisStore] (SET NX PX and a Lua script: atomic, no
// check-then-insert race, L19), [PostgresStore] (an upsert on a primary key),
// and [MemoryStore], a test double for unit tests.
//
// # Batching
//
// Concurrent Begin calls of one store, and concurrent Done calls, share a
// round trip: the Redis store sends them in one pipeline (the Begin script
// per ID), the PostgreSQL store in one statement over unnest($2::text[])
// that locks the IDs in sorted order, so concurrent batches cannot deadlock.
// Nothing waits for a batch to fill: a call goes at once when fewer than
// four round trips of its kind are in flight, else with the calls that
// queued meanwhile (up to MaxBatch). Each call gets the result it would have
// got alone: of concurrent Begins of one ID exactly one gets StatusNew, a
// failure of one ID's command is that call's alone (an ID PostgreSQL
// refuses makes its batch go again one by one, so its neighbours are not
// refused with it), and an ID is recorded done only by its own Done call,
// made after its own handler succeeded (L20). A caller whose context ends
// stops waiting at once; a claim its batch then made for it is released.
// ProcessTx and DoneTx are never batched: each is the caller's own
// transaction. Set MaxBatch to 1 to send every call alone.
//
// # Any message ID
//
// Message IDs are arbitrary bytes on the wire: foreign producers send NUL
// bytes, invalid UTF-8 and IDs of many kilobytes. Every store deduplicates
// them byte-exact. Redis keys are binary-safe; the PostgreSQL store keys a
// record by an injective text form of the ID (the ID itself when text holds
// it and it is at most 512 bytes, base64 behind a "\x01b64:" marker when
// text cannot hold it, and its SHA-256 behind "\x01sha256:" when longer).
// Migration 002 rewrites the records of long IDs written by older versions.
// An error the database returns for a value it refuses (a data exception or
// a program limit) matches reliable.IsPermanent and names the SQLSTATE; an
// outage stays a retryable error.
//
// # Exactly-once effects for database handlers
//
// Begin/Done leaves a window: the handler's effect committed, then a crash
// before Done. The handler runs again after the claim expires. When the
// handler writes to the same PostgreSQL database, record the ID in the
// handler's own transaction instead: [PostgresStore.DoneTx] or, simpler,
// [PostgresStore.ProcessTx], which claims the ID inside the transaction so the
// effect and the record commit or roll back together.
//
// # Operations
//
// The PostgreSQL store deletes expired records by itself: the first Begin
// or ProcessTx after each PostgresConfig.CleanupInterval starts one Cleanup
// in the background (L17). The Redis store lets Redis expire them; it needs
// maxmemory-policy noeviction and a primary that does not lose acknowledged
// writes on failover ([RedisStore.Verify], run once on the first Begin,
// warns otherwise). Both stores have Ready for readiness probes.
//
// The PostgreSQL store's lookups (Begin, Abort, Cleanup) run with
// plan_cache_mode set to force_custom_plan for their transaction
// (PostgreSQL 12+), in the same round trip: a generic plan that PostgreSQL
// caches for a prepared statement while the table is nearly empty reads the
// whole table for every duplicate Begin and Abort once it has filled, until
// an ANALYZE replaces it. The pool's own settings stay untouched.
//
// # Natural idempotency
//
// Often the effect itself can be made idempotent, which needs no store at
// all: an upsert (INSERT ... ON CONFLICT DO UPDATE) guarded by a version or
// status rank so that a replayed or older event never overwrites a newer one,
// or a Redis SET of the final value. See the package examples.
package idempotency
