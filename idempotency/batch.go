package idempotency

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultMaxBatch is how many concurrent calls of one operation a store
// sends in one round trip by default (RedisConfig.MaxBatch,
// PostgresConfig.MaxBatch).
const DefaultMaxBatch = 128

// batchesInFlight is how many round trips of one operation a store has in
// flight at once. Calls that arrive while they all run wait and go together
// in the next one: under load each round trip carries many calls, and a
// lone call is sent at once, with no delay added.
const batchesInFlight = 4

// abandonTimeout bounds releasing a claim made for a caller that stopped
// waiting; the claim expires by itself otherwise.
const abandonTimeout = 5 * time.Second

// batcher sends concurrent calls of one operation together: each call adds
// its ID and waits; a flush carries up to max waiting IDs in one round trip
// and hands each call its own result. A call whose context ends stops
// waiting at once; the flush then reports its result to abandoned, so that
// a claim nobody will use can be released.
type batcher[R any] struct {
	max       int
	flush     func(ctx context.Context, ids []string) ([]R, []error)
	abandoned func(id string, r R, err error) // may be nil

	mu       sync.Mutex
	pending  []*call[R]
	inFlight int
}

type call[R any] struct {
	id    string
	state atomic.Int32 // callWaiting, callDone or callAbandoned
	res   R
	err   error
	done  chan struct{}
	// flight is the round trip carrying the call; counted is set once an
	// abandoned call was counted out of it.
	flight  atomic.Pointer[flight]
	counted atomic.Bool
}

const (
	callWaiting int32 = iota
	callDone
	callAbandoned
)

// do runs the operation for id in a batch and returns its own result.
func (b *batcher[R]) do(ctx context.Context, id string) (R, error) {
	c := &call[R]{id: id, done: make(chan struct{})}
	b.mu.Lock()
	b.pending = append(b.pending, c)
	var batch []*call[R]
	if b.inFlight < batchesInFlight {
		b.inFlight++
		batch = b.take()
	}
	b.mu.Unlock()
	if batch != nil {
		// The caller leads its own round trip, so a lone call costs what
		// an unbatched one does; calls queued meanwhile go on in a
		// goroutine. Its context ending abandons its call, as below.
		stop := context.AfterFunc(ctx, func() {
			if c.state.CompareAndSwap(callWaiting, callAbandoned) {
				c.drop()
			}
		})
		b.send(batch)
		stop()
		b.mu.Lock()
		next := b.pending
		if len(next) > 0 {
			next = b.take()
		} else {
			b.inFlight--
		}
		b.mu.Unlock()
		if len(next) > 0 {
			go b.run(next)
		}
		if c.state.Load() == callAbandoned {
			var zero R
			return zero, ctx.Err()
		}
		return c.res, c.err
	}
	select {
	case <-c.done:
		return c.res, c.err
	case <-ctx.Done():
		if c.state.CompareAndSwap(callWaiting, callAbandoned) {
			c.drop()
			var zero R
			return zero, ctx.Err()
		}
		<-c.done
		return c.res, c.err
	}
}

// take removes up to max waiting calls. The caller holds b.mu.
func (b *batcher[R]) take() []*call[R] {
	n := min(len(b.pending), b.max)
	batch := make([]*call[R], n)
	copy(batch, b.pending)
	b.pending = append(b.pending[:0:0], b.pending[n:]...)
	return batch
}

// run flushes batch, then the calls that queued meanwhile, until none wait.
func (b *batcher[R]) run(batch []*call[R]) {
	for {
		b.send(batch)
		b.mu.Lock()
		if len(b.pending) == 0 {
			b.inFlight--
			b.mu.Unlock()
			return
		}
		batch = b.take()
		b.mu.Unlock()
	}
}

// flight is one round trip of a batch. Its context ends when every call
// of the batch stopped waiting, as a lone call's statement ends with its
// context.
type flight struct {
	live   atomic.Int32
	cancel context.CancelFunc
}

// drop counts c out of its flight once it was abandoned.
func (c *call[R]) drop() {
	f := c.flight.Load()
	if f != nil && c.state.Load() == callAbandoned && c.counted.CompareAndSwap(false, true) && f.live.Add(-1) == 0 {
		f.cancel()
	}
}

// send flushes one batch.
func (b *batcher[R]) send(batch []*call[R]) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f := &flight{cancel: cancel}
	f.live.Store(int32(len(batch)))
	ids := make([]string, len(batch))
	for i, c := range batch {
		ids[i] = c.id
		c.flight.Store(f)
	}
	for _, c := range batch {
		c.drop() // abandoned before the flight was set
	}
	res, errs := b.flush(ctx, ids)
	for i, c := range batch {
		c.res, c.err = res[i], errs[i]
		if c.state.CompareAndSwap(callWaiting, callDone) {
			close(c.done)
			continue
		}
		if b.abandoned != nil {
			b.abandoned(c.id, c.res, c.err)
		}
	}
}
