package idempotency

import (
	"context"
	"sync"
	"time"
)

// MemoryStore is an in-memory [Store]. It is a TEST DOUBLE: records vanish
// with the process and are not shared between processes, so it proves
// nothing about durability. Use it in unit tests and demos.
type MemoryStore struct {
	// ClaimTTL defaults to DefaultClaimTTL, Retention to DefaultRetention.
	// Set them before first use.
	ClaimTTL, Retention time.Duration
	// Now is the clock, for tests of expiry. Defaults to time.Now.
	Now func() time.Time

	mu      sync.Mutex
	records map[string]memRecord
}

type memRecord struct {
	done    bool
	expires time.Time
}

// NewMemory returns an empty in-memory store (a test double).
func NewMemory() *MemoryStore {
	return &MemoryStore{records: make(map[string]memRecord)}
}

func (m *MemoryStore) now() time.Time {
	if m.Now != nil {
		return m.Now()
	}
	return time.Now()
}

// ClaimDuration returns how long a claim made by Begin lives.
func (m *MemoryStore) ClaimDuration() time.Duration { return orDefault(m.ClaimTTL, DefaultClaimTTL) }

// Begin implements [Store].
func (m *MemoryStore) Begin(ctx context.Context, id string) (Status, error) {
	if id == "" {
		return 0, ErrEmptyID
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	if r, ok := m.records[id]; ok && now.Before(r.expires) {
		if r.done {
			return StatusDone, nil
		}
		return StatusInProgress, nil
	}
	m.records[id] = memRecord{expires: now.Add(orDefault(m.ClaimTTL, DefaultClaimTTL))}
	return StatusNew, nil
}

// Done implements [Store].
func (m *MemoryStore) Done(ctx context.Context, id string) error {
	if id == "" {
		return ErrEmptyID
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.records[id] = memRecord{done: true, expires: m.now().Add(orDefault(m.Retention, DefaultRetention))}
	return nil
}

// Abort implements [Store].
func (m *MemoryStore) Abort(ctx context.Context, id string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if r, ok := m.records[id]; ok && !r.done {
		delete(m.records, id)
	}
	return nil
}

// Len returns the number of records, including expired ones not yet
// overwritten.
func (m *MemoryStore) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.records)
}
