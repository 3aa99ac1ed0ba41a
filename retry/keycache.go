package retry

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/internal/pgplan"
)

// KeyNotifyChannel is the LISTEN/NOTIFY channel on which the table announces
// a key that became blocked: Park and DeadLetter (in the transaction that
// stores the entry) and RetryNow of a released entry. The payload is the
// table's OID, the group and the key's lane, separated by "\x1f". A [KeyCache]
// listens on it.
const KeyNotifyChannel = "reliable_retry_keys"

// KeyCache is a consumer's knowledge of which keys have blocking entries
// (pending or dead) in the table, so that the check before each message
// costs no round trip when the key is not blocked, the common case.
//
// The cache holds a superset of the blocked keys the consumer needs to
// know about: a key it holds may no longer be blocked (the retrier drained
// it, an operator released or discarded its entries), and [KeyCache.Blocked]
// then asks the table, and forgets the key if the table says it is free. A
// key it does not hold is not blocked, as long as the caller keeps to the
// rule stated in the package documentation ("Blocked keys without a round
// trip"): it loads the cache ([KeyCache.Load]) after it took ownership of a
// partition or queue and before it trusts the cache for that partition's
// keys, and it parks and dead-letters through the cache.
//
// Keys blocked by other processes (an operator's RetryNow of a released
// entry, another consumer group member that still handles a revoked
// partition) reach the cache through [KeyNotifyChannel] while
// [KeyCache.Run] listens; a new connection of the listener reloads the
// cache, since notifications may have been missed while it was down.
type KeyCache struct {
	t *Table

	mu      sync.Mutex
	lanes   map[string]uint64 // lane -> version at which it was marked
	version uint64            // bumped by every mark

	listening atomic.Bool
}

// NewKeyCache returns an empty cache of the table's blocked keys. Load it
// before use.
func (t *Table) NewKeyCache() *KeyCache {
	return &KeyCache{t: t, lanes: make(map[string]uint64)}
}

// Table returns the table the cache knows about.
func (c *KeyCache) Table() *Table { return c.t }

func (c *KeyCache) mark(lane string) {
	c.mu.Lock()
	c.version++
	c.lanes[lane] = c.version
	c.mu.Unlock()
}

// MaybeBlocked reports, without a round trip, whether key may have blocking
// entries: false means it has none that the cache's owner must wait for (see
// KeyCache), true that Blocked must ask the table. The empty key is never
// blocked.
func (c *KeyCache) MaybeBlocked(key string) bool {
	if key == "" {
		return false
	}
	c.mu.Lock()
	_, ok := c.lanes[keyLane(key)]
	c.mu.Unlock()
	return ok
}

// Blocked asks the table whether key has blocking entries, as Table.Blocked
// does, and keeps the answer: a key found free is forgotten, one found
// blocked is kept.
func (c *KeyCache) Blocked(ctx context.Context, key string) (bool, error) {
	if key == "" {
		return false, nil
	}
	l := keyLane(key)
	c.mu.Lock()
	v := c.version
	c.mu.Unlock()
	blocked, err := c.t.Blocked(ctx, key)
	if err != nil {
		return false, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if blocked {
		if _, ok := c.lanes[l]; !ok {
			c.version++
			c.lanes[l] = c.version
		}
		return true, nil
	}
	// A mark made after the question was asked (a park of the key, a
	// notification) is newer than the answer: keep it.
	if mv, ok := c.lanes[l]; ok && mv <= v {
		delete(c.lanes, l)
	}
	return false, nil
}

// Load reads the group's blocked keys from the table, one query, and makes
// them the cache's content, keeping the keys marked while it ran. A caller
// that took ownership of a partition or queue trusts the cache for its keys
// only after a Load that started after it took ownership returned nil.
func (c *KeyCache) Load(ctx context.Context) error {
	c.mu.Lock()
	v0 := c.version
	c.mu.Unlock()
	var lanes []string
	err := pgplan.Query(ctx, c.t.pool, func(rows pgx.Rows) (err error) {
		lanes, err = pgx.CollectRows(rows, pgx.RowTo[string])
		return err
	}, `SELECT DISTINCT lane FROM `+c.t.table+`
WHERE grp = $1 AND state IN ('pending', 'dead') AND lane LIKE 'k:%'`, c.t.cfg.Group)
	if err != nil {
		return fmt.Errorf("retry: load blocked keys: %w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	// The keys found get a version newer than every question asked so far:
	// a Blocked call that asked the table before this load (and heard
	// "free", before another process parked the key) must not forget a key
	// the load found blocked.
	c.version++
	loaded := c.version
	next := make(map[string]uint64, len(lanes)+len(c.lanes)/4)
	for _, l := range lanes {
		next[l] = loaded
	}
	for l, v := range c.lanes {
		if _, found := next[l]; !found && v > v0 {
			next[l] = v // marked while the load ran, after its snapshot maybe
		}
	}
	c.lanes = next
	return nil
}

// Listening reports whether Run is listening, so that announcements of
// keys blocked by other processes reach the cache.
func (c *KeyCache) Listening() bool { return c.listening.Load() }

// Len returns how many keys the cache holds as maybe blocked.
func (c *KeyCache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.lanes)
}

// Park marks the message's key as blocked, parks it ([Table.Park]) and
// marks the key again.
func (c *KeyCache) Park(ctx context.Context, msg *reliable.Message, cause error) error {
	return c.marked(msg, func() error { return c.t.Park(ctx, msg, cause) })
}

// DeadLetter marks the message's key as blocked, stores it dead
// ([Table.DeadLetter]) and marks the key again.
func (c *KeyCache) DeadLetter(ctx context.Context, msg *reliable.Message, cause error) error {
	return c.marked(msg, func() error { return c.t.DeadLetter(ctx, msg, cause) })
}

// Marking runs store, which may block the message's key in the table by a
// path of its own (a dead-letter store that wraps this table, another Table
// value of the same table and group), between two marks of the key, as Park
// and DeadLetter do. Marking a key that ends up free costs one table query
// at its next message, no more.
func (c *KeyCache) Marking(msg *reliable.Message, store func() error) error {
	return c.marked(msg, store)
}

// marked runs store between two marks of the message's key. The first
// covers the key while the entry is being stored; the second, made once it
// is committed, survives a Load that started in between, whose snapshot may
// not hold the entry yet and would otherwise drop the first mark.
func (c *KeyCache) marked(msg *reliable.Message, store func() error) error {
	if msg.Key == "" {
		return store()
	}
	l := keyLane(msg.Key)
	c.mark(l)
	err := store()
	c.mark(l)
	return err
}

// Run listens on KeyNotifyChannel until ctx ends and marks the keys the
// table announces for this table and group. Each time the listening
// connection is (re)established it reloads the cache, since announcements
// made while it was down are lost. It holds one connection of the table's
// pool. Errors are logged on logger (the table's when nil) and retried;
// Run returns nil when ctx ends.
func (c *KeyCache) Run(ctx context.Context, logger *slog.Logger) error {
	if logger == nil {
		logger = c.t.log
	}
	for attempt := 1; ctx.Err() == nil; attempt++ {
		err := c.listen(ctx, func() { attempt = 0 })
		if ctx.Err() != nil {
			return nil
		}
		delay := min(time.Duration(attempt)*200*time.Millisecond, 5*time.Second)
		logger.WarnContext(ctx, "retry: blocked-key notifications lost; listening again", "error", err, "retry_in", delay)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(delay):
		}
	}
	return nil
}

func (c *KeyCache) listen(ctx context.Context, connected func()) error {
	pooled, err := c.t.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	// The connection leaves the pool: one that stopped listening midway must
	// not go back still subscribed.
	conn := pooled.Hijack()
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
		_ = conn.Close(cctx)
	}()
	if _, err := conn.Exec(ctx, `LISTEN `+pgx.Identifier{KeyNotifyChannel}.Sanitize()); err != nil {
		return err
	}
	var oid string
	if err := conn.QueryRow(ctx, `SELECT $1::text::regclass::oid::text`, c.t.table).Scan(&oid); err != nil {
		return fmt.Errorf("retry: resolve the table for notifications: %w", err)
	}
	prefix := oid + c.t.notifySuffix("")
	if err := c.Load(ctx); err != nil {
		return err
	}
	connected()
	c.listening.Store(true)
	defer c.listening.Store(false)
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		if l, ok := strings.CutPrefix(n.Payload, prefix); ok {
			c.mark(l)
		}
	}
}

// notifySQL announces that a lane became blocked; it runs inside the
// transaction that blocked it, so listeners hear of it when it commits. The
// payload names the table by its OID ($2 is the table's identifier), not by
// its spelling: a consumer that names it "rt" (search_path) and an operator
// tool that names it "public"."rt" must hear each other.
const notifySQL = `SELECT pg_notify($1, $2::text::regclass::oid::text || $3)`

// notifySuffix is the payload after the table's OID: group and lane.
func (t *Table) notifySuffix(lane string) string {
	return "\x1f" + t.cfg.Group + "\x1f" + lane
}
