package ordering

import (
	"context"
	"sync"
)

// Slots bounds how many callers hold a slot at once, granting waiting
// callers in arrival order. The limit can change at any time (L16): raising
// it admits waiters at once; lowering it lets holders finish and admits no
// one until the count is below the new limit.
//
// The consumer holds a slot only while its handler runs, so that the store
// steps around the handler (dedupe claims and done records, the retry-table
// check) do not take handler concurrency from other keys: a key waiting for
// a round trip still keeps its own order, in its lane, while other keys
// are handled.
type Slots struct {
	mu      sync.Mutex
	limit   int
	used    int
	waiters []chan struct{}
}

// NewSlots returns slots with limit n (at least 1).
func NewSlots(n int) *Slots {
	return &Slots{limit: max(n, 1)}
}

// Acquire waits for a slot, in arrival order, until ctx ends (returning its
// error). Release the slot when done.
func (s *Slots) Acquire(ctx context.Context) error {
	s.mu.Lock()
	if s.used < s.limit && len(s.waiters) == 0 {
		s.used++
		s.mu.Unlock()
		return nil
	}
	ch := make(chan struct{})
	s.waiters = append(s.waiters, ch)
	s.mu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		defer s.mu.Unlock()
		for i, w := range s.waiters {
			if w == ch {
				s.waiters = append(s.waiters[:i], s.waiters[i+1:]...)
				return ctx.Err()
			}
		}
		// Granted meanwhile: hand the slot on.
		s.used--
		s.grant()
		return ctx.Err()
	}
}

// Release returns a slot taken by Acquire.
func (s *Slots) Release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.used--
	s.grant()
}

// grant admits waiters while below the limit. The caller holds s.mu.
func (s *Slots) grant() {
	for s.used < s.limit && len(s.waiters) > 0 {
		s.used++
		close(s.waiters[0])
		s.waiters = s.waiters[1:]
	}
}

// SetLimit changes the limit (at least 1).
func (s *Slots) SetLimit(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.limit = max(n, 1)
	s.grant()
}

// Limit returns the current limit.
func (s *Slots) Limit() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.limit
}

// InUse returns how many slots are held.
func (s *Slots) InUse() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.used
}
