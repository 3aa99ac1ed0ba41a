package outbox

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/reliable-go/reliable"
)

// NotifyChannel is the LISTEN/NOTIFY channel Add signals on commit; the
// payload is the schema of the outbox tables, so relays of other schemas in
// the same database ignore it.
const NotifyChannel = "reliable_outbox"

// notifyEvery spaces the notifications of one process. PostgreSQL commits
// the transactions that issued NOTIFY one at a time, each holding a
// database-wide lock across its WAL flush, which would cap the commit rate
// of every transaction calling Add at one per fsync. A transaction that
// skips the notification is found by the relay's next poll, which comes
// within milliseconds while rows keep arriving (the relay polls fast after
// activity and only slows down to Config.PollInterval when idle).
const notifyEvery = 10 * time.Millisecond

var lastNotify atomic.Int64 // unix nanoseconds of the last notification queued

func shouldNotify(now time.Time) bool {
	n := now.UnixNano()
	last := lastNotify.Load()
	return n-last >= int64(notifyEvery) && lastNotify.CompareAndSwap(last, n)
}

// Add writes msgs to the outbox in the caller's transaction, so they are
// published if and only if tx commits. It sets each empty Message.ID to a new
// UUIDv7 and a zero Message.Time to now, in place, so the caller learns the
// IDs that consumers will deduplicate on.
//
// Per key, messages are published in commit order, and within one call in
// the order given. To make the order of row IDs equal commit order, Add first
// locks each key of msgs for the rest of tx (a row lock in
// reliable_outbox_keys): a second transaction adding to the same key waits in
// Add until tx commits or rolls back. Keep transactions that add to hot keys
// short. Add locks a call's keys in sorted order; a transaction that calls
// Add several times may, like any transaction locking rows in varying order,
// be aborted by PostgreSQL's deadlock detector, and should then be retried.
// Under REPEATABLE READ or SERIALIZABLE, a concurrent Add of the same key
// fails with a serialization error: retry the transaction, as those levels
// require anyway.
//
// Messages without a key are not ordered and take no lock.
//
// Nothing is written when a message is invalid (nil, no topic, or the same
// ID as another message of the call). Keys,
// IDs and headers may hold any bytes; a value PostgreSQL still refuses (such
// as a time before 4713 BC) fails Add with an error that matches
// reliable.IsPermanent and names the SQLSTATE. On any error the transaction
// is unusable and must be rolled back.
func Add(ctx context.Context, tx pgx.Tx, msgs ...*reliable.Message) error {
	if len(msgs) == 0 {
		return nil
	}
	now := time.Now()
	n := len(msgs)
	var (
		lanes   = make([]string, n)
		ids     = make([]string, n)
		topics  = make([]string, n)
		keys    = make([]string, n)
		types   = make([]string, n)
		headers = make([]*string, n)
		payload = make([][]byte, n)
		times   = make([]time.Time, n)
		locks   = make([]string, 0, n)
	)
	seen := make(map[string]int, n)
	for i, m := range msgs {
		if m == nil {
			return &reliable.InvalidMessageError{Problems: []string{fmt.Sprintf("message %d is nil", i)}}
		}
		if err := m.Validate(); err != nil {
			return err
		}
		// Two messages with one ID would be deduplicated into one by every
		// consumer: the second would be lost silently.
		if m.ID == "" {
			continue
		}
		if j, dup := seen[m.ID]; dup {
			return &reliable.InvalidMessageError{MessageID: m.ID[:min(len(m.ID), 64)],
				Problems: []string{fmt.Sprintf("messages %d and %d have the same ID: consumers would drop one as a duplicate", j, i)}}
		}
		seen[m.ID] = i
	}
	for i, m := range msgs {
		m.EnsureID()
		if m.Time.IsZero() {
			m.Time = now
		}
		lanes[i] = laneOf(m)
		// Stored in text form (see encode.go): any bytes, read back exactly.
		ids[i], topics[i], keys[i], types[i] = storedText(m.ID), storedText(m.Topic), storedText(m.Key), storedText(m.Type)
		payload[i], times[i] = m.Payload, m.Time
		if len(m.Headers) > 0 {
			b, err := json.Marshal(storedHeaders(m.Headers))
			if err != nil {
				return fmt.Errorf("outbox: add: headers of %s: %w", m, err)
			}
			s := string(b)
			headers[i] = &s
		}
		if m.Key != "" {
			locks = append(locks, lanes[i])
		}
	}
	// Sorted and unique, so that two Adds never lock the same keys in
	// opposite orders, and ON CONFLICT never meets one key twice.
	slices.Sort(locks)
	locks = slices.Compact(locks)

	b := &pgx.Batch{}
	if len(locks) > 0 {
		b.Queue(`INSERT INTO reliable_outbox_keys AS k (lane)
			SELECT unnest($1::text[])
			ON CONFLICT (lane) DO UPDATE SET locked_at = now()`, locks)
	}
	b.Queue(`INSERT INTO reliable_outbox (lane, msg_id, topic, key, type, headers, payload, event_time)
		SELECT t.lane, t.msg_id, t.topic, t.key, t.type, t.headers::jsonb, t.payload, t.event_time
		FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bytea[], $8::timestamptz[])
			WITH ORDINALITY AS t(lane, msg_id, topic, key, type, headers, payload, event_time, ord)
		ORDER BY t.ord`,
		lanes, ids, topics, keys, types, headers, payload, times)
	if shouldNotify(now) {
		b.Queue(`SELECT pg_notify($1, current_schema())`, NotifyChannel)
	}

	br := tx.SendBatch(ctx, b)
	for range b.Len() {
		if _, err := br.Exec(); err != nil {
			_ = br.Close()
			return storeError(fmt.Errorf("outbox: add %d messages: %w", n, err))
		}
	}
	if err := br.Close(); err != nil {
		return fmt.Errorf("outbox: add %d messages: %w", n, err)
	}
	return nil
}

// laneOf is the ordering lane of a message: "k:" and its key, or, without a
// key, "m:" and its ID, a lane of its own, so that unordered messages are
// published in parallel. Key and ID are in indexedText form (see
// encode.go), so any bytes make a lane the index can hold.
func laneOf(m *reliable.Message) string {
	if m.Key != "" {
		return "k:" + indexedText(m.Key)
	}
	return "m:" + indexedText(m.ID)
}
