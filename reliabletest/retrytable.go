package reliabletest

import (
	"context"
	"sync"
	"time"

	"github.com/reliable-go/reliable"
)

// RetryTable is an in-memory ordered per-key retry table with the semantics
// of the retry package's PostgreSQL table: a key's entries replay in park
// order, a key with entries blocks its later messages, and after MaxAttempts
// an entry is dead and keeps its key blocked. It is a TEST DOUBLE: entries
// vanish with the process. Use the retry package in production.
type RetryTable struct {
	// MaxAttempts defaults to 7; Backoff to reliable.Backoff{}. Set them
	// before first use.
	MaxAttempts int
	Backoff     reliable.Backoff

	mu   sync.Mutex
	keys map[string][]*RetryEntry
	ids  map[string]bool
	dead []*RetryEntry
	busy map[string]bool // keys being replayed, so concurrent replays never share a key
}

// RetryEntry is a parked message.
type RetryEntry struct {
	Message   *reliable.Message
	Attempts  int
	NextAt    time.Time
	LastError string
	Dead      bool
}

// NewRetryTable returns an empty table.
func NewRetryTable() *RetryTable {
	return &RetryTable{keys: make(map[string][]*RetryEntry), ids: make(map[string]bool), busy: make(map[string]bool)}
}

// Blocked reports whether key has entries, pending or dead.
func (t *RetryTable) Blocked(_ context.Context, key string) (bool, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.keys[key]) > 0, nil
}

// Park appends msg behind its key's entries. Parking the same message ID
// twice keeps one entry.
func (t *RetryTable) Park(_ context.Context, msg *reliable.Message, cause error) error {
	t.add(msg, cause, false)
	return nil
}

// DeadLetter stores msg as dead; its key stays blocked.
func (t *RetryTable) DeadLetter(_ context.Context, msg *reliable.Message, cause error) error {
	t.add(msg, cause, true)
	return nil
}

func (t *RetryTable) add(msg *reliable.Message, cause error, dead bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.ids[msg.ID] {
		return
	}
	t.ids[msg.ID] = true
	e := &RetryEntry{Message: msg.Clone(), Dead: dead,
		NextAt: time.Now().Add(max(t.Backoff.Delay(1), reliable.RetryDelay(cause)))}
	if cause != nil {
		e.LastError = cause.Error()
	}
	t.keys[msg.Key] = append(t.keys[msg.Key], e)
	if dead {
		t.dead = append(t.dead, e)
	}
}

// Len returns the number of entries, pending and dead.
func (t *RetryTable) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for _, es := range t.keys {
		n += len(es)
	}
	return n
}

// Dead returns the dead entries.
func (t *RetryTable) Dead() []*RetryEntry {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]*RetryEntry(nil), t.dead...)
}

// Discard removes a dead entry, unblocking its key if it was the head.
func (t *RetryTable) Discard(id string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for key, es := range t.keys {
		for i, e := range es {
			if e.Message.ID == id {
				t.keys[key] = append(es[:i:i], es[i+1:]...)
				if len(t.keys[key]) == 0 {
					delete(t.keys, key)
				}
			}
		}
	}
}

// ReplayDue replays, for every key whose head entry is due and not dead, the
// key's entries in order through h until one fails. It returns how many
// entries succeeded. Call it from a loop, or use RunRetrier.
func (t *RetryTable) ReplayDue(ctx context.Context, h reliable.Handler) int {
	t.mu.Lock()
	var keys []string
	now := time.Now()
	for k, es := range t.keys {
		if !es[0].Dead && !es[0].NextAt.After(now) && !t.busy[k] {
			keys = append(keys, k)
			t.busy[k] = true
		}
	}
	t.mu.Unlock()
	done := 0
	for _, k := range keys {
		done += t.replayKey(ctx, k, h)
	}
	return done
}

// replayKey replays k's entries in order until one fails, then releases k.
func (t *RetryTable) replayKey(ctx context.Context, k string, h reliable.Handler) int {
	done := 0
	defer func() {
		t.mu.Lock()
		delete(t.busy, k)
		t.mu.Unlock()
	}()
	{
		for ctx.Err() == nil {
			t.mu.Lock()
			es := t.keys[k]
			if len(es) == 0 || es[0].Dead {
				t.mu.Unlock()
				break
			}
			e := es[0]
			e.Attempts++
			msg := e.Message.Clone()
			msg.Delivery.Attempt = e.Attempts + 1
			t.mu.Unlock()

			err := h.Handle(ctx, msg)

			t.mu.Lock()
			if err == nil {
				t.keys[k] = t.keys[k][1:]
				if len(t.keys[k]) == 0 {
					delete(t.keys, k)
				}
				done++
				t.mu.Unlock()
				continue
			}
			e.LastError = err.Error()
			maxAttempts := t.MaxAttempts
			if maxAttempts <= 0 {
				maxAttempts = 7
			}
			if reliable.IsPermanent(err) || e.Attempts >= maxAttempts {
				e.Dead = true
				t.dead = append(t.dead, e)
			} else {
				e.NextAt = time.Now().Add(max(t.Backoff.Delay(e.Attempts+1), reliable.RetryDelay(err)))
			}
			t.mu.Unlock()
			break
		}
	}
	return done
}

// RunRetrier calls ReplayDue every interval until ctx ends.
func (t *RetryTable) RunRetrier(ctx context.Context, h reliable.Handler, interval time.Duration) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		t.ReplayDue(ctx, h)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// Replay replays due entries every 10ms until ctx ends; the consumer
// package's Run calls it for this table. It returns nil.
func (t *RetryTable) Replay(ctx context.Context, h reliable.Handler) error {
	t.RunRetrier(ctx, h, 10*time.Millisecond)
	return nil
}
