package ordering

import (
	"fmt"
	"sort"
	"sync"
)

// Tracker computes the commit position of one partition when its messages
// complete out of order. Offsets must be tracked in increasing order (the
// order the broker delivers them); they need not be contiguous, since
// compaction and transaction markers leave gaps.
//
// The commit position is the offset of the oldest message that is not complete,
// or one past the last tracked offset when all are complete: the value Kafka
// expects as the committed offset ("the next offset to read"). It never passes
// an incomplete message.
//
// A Tracker is safe for concurrent use.
type Tracker struct {
	mu      sync.Mutex
	pending []entry // tracked, not yet committed past; offsets ascending
	head    int     // index of the first live entry in pending
	next    int64   // commit position when nothing is pending
}

type entry struct {
	offset int64
	done   bool
}

// NewTracker returns a tracker whose commit position starts at start (the
// partition's committed offset, where consumption begins).
func NewTracker(start int64) *Tracker {
	return &Tracker{next: start}
}

// Track records that offset was delivered and is now in flight.
func (t *Tracker) Track(offset int64) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if n := len(t.pending); n > t.head && offset <= t.pending[n-1].offset {
		return fmt.Errorf("ordering: offset %d tracked after %d", offset, t.pending[n-1].offset)
	}
	if len(t.pending) == t.head && offset < t.next {
		return fmt.Errorf("ordering: offset %d tracked below the commit position %d", offset, t.next)
	}
	t.pending = append(t.pending, entry{offset: offset})
	return nil
}

// Complete marks offset as complete and returns the new commit position. An
// offset that is not tracked (already committed past, or never tracked) is
// ignored.
func (t *Tracker) Complete(offset int64) int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	live := t.pending[t.head:]
	i := sort.Search(len(live), func(i int) bool { return live[i].offset >= offset })
	if i < len(live) && live[i].offset == offset {
		live[i].done = true
	}
	for t.head < len(t.pending) && t.pending[t.head].done {
		t.next = t.pending[t.head].offset + 1
		t.head++
	}
	t.compact()
	return t.commitPosition()
}

// CommitPosition returns the offset up to which (exclusive) every tracked
// message is complete.
func (t *Tracker) CommitPosition() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.commitPosition()
}

func (t *Tracker) commitPosition() int64 {
	if t.head < len(t.pending) {
		return t.pending[t.head].offset
	}
	return t.next
}

// InFlight returns the number of tracked offsets not yet committed past,
// complete or not. Consumers bound it to apply backpressure (L23).
func (t *Tracker) InFlight() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.pending) - t.head
}

// compact drops the consumed prefix once it dominates the slice, keeping
// memory proportional to what is in flight.
func (t *Tracker) compact() {
	if t.head == len(t.pending) {
		t.pending = t.pending[:0]
		t.head = 0
		return
	}
	if t.head > 1024 && t.head*2 > len(t.pending) {
		n := copy(t.pending, t.pending[t.head:])
		t.pending = t.pending[:n]
		t.head = 0
	}
}
