package ordering

import (
	"context"
	"errors"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// ErrLanesClosed is returned by Submit after Close.
var ErrLanesClosed = errors.New("ordering: lanes closed")

// LanesConfig configures Lanes. The zero value is valid.
type LanesConfig struct {
	// Concurrency is how many keys run at once. Defaults to 16. Change it
	// while running with SetConcurrency (L16).
	Concurrency int
	// MaxInFlight bounds the tasks submitted and not finished; Submit blocks
	// beyond it, so a backlog stays in the broker, not in memory (L05, L23).
	// Defaults to 1024.
	MaxInFlight int
	// Rate limits task starts per second across all keys; 0 means no limit.
	// Change it while running with SetRate (L16).
	Rate float64
}

// Task is the work of one submitted item. It returns 0 when it is finished,
// a positive delay to be run again after that delay, or [Abandon].
//
// A task that asks to run again holds its key: none of the key's later tasks
// starts before it finished, yet it takes no concurrency slot while it waits,
// so a failing key delays only itself (L09, L10).
type Task func(ctx context.Context) (again time.Duration)

// Abandon, returned by a Task, ends the task and marks the key's tasks
// queued behind it: they run with a context for which AfterAbandon reports
// true, so that each can give up too instead of being applied before the
// task that gave up (its delivery will come again from the broker). Tasks
// submitted later run normally.
const Abandon time.Duration = -1

type abandonedKey struct{}

// AfterAbandon reports whether an earlier task of the key returned Abandon
// while this task was queued behind it.
func AfterAbandon(ctx context.Context) bool {
	return ctx.Value(abandonedKey{}) != nil
}

// Lanes runs tasks in parallel across keys and strictly in sequence within
// a key: a key's next task starts only after its previous one returned
// (L08, L12). Keys take turns, so one busy key cannot starve the others.
//
// Unlike a fixed number of hash-selected queues, the concurrency can change
// at any moment without reordering a key, because a key's pending tasks stay
// in the key's own queue whatever the number of workers.
type Lanes struct {
	mu       sync.Mutex
	space    *sync.Cond // signalled when inFlight drops or on close
	idle     *sync.Cond // signalled when inFlight reaches 0
	keys     map[string]*keyQueue
	ready    []string // keys with pending tasks and nothing running, FIFO
	running  int
	limit    int
	inFlight int
	max      int
	held     int // keys whose task waits to run again
	closed   bool
	closing  chan struct{} // closed by Close: held tasks run again at once
	limiter  *rate.Limiter
	ctx      context.Context
}

type keyQueue struct {
	tasks   []Task
	running bool // a task of the key runs or waits to run again
	giveUp  int  // how many of the first tasks run marked AfterAbandon
}

// NewLanes returns lanes whose tasks run with ctx; cancel ctx to make running
// tasks stop early.
func NewLanes(ctx context.Context, cfg LanesConfig) *Lanes {
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 16
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = 1024
	}
	l := &Lanes{
		keys:    make(map[string]*keyQueue),
		limit:   cfg.Concurrency,
		max:     cfg.MaxInFlight,
		limiter: rate.NewLimiter(limitOf(cfg.Rate), 1),
		closing: make(chan struct{}),
		ctx:     ctx,
	}
	l.space = sync.NewCond(&l.mu)
	l.idle = sync.NewCond(&l.mu)
	return l
}

func limitOf(r float64) rate.Limit {
	if r <= 0 {
		return rate.Inf
	}
	return rate.Limit(r)
}

// Submit queues task behind the key's earlier tasks. It blocks while
// MaxInFlight tasks are in flight, until ctx ends (returning its error) or
// the lanes close.
func (l *Lanes) Submit(ctx context.Context, key string, task Task) error {
	stop := context.AfterFunc(ctx, func() {
		l.mu.Lock()
		l.space.Broadcast()
		l.mu.Unlock()
	})
	defer stop()
	l.mu.Lock()
	defer l.mu.Unlock()
	for l.inFlight >= l.max && !l.closed && ctx.Err() == nil {
		l.space.Wait()
	}
	if l.closed {
		return ErrLanesClosed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	l.inFlight++
	q, ok := l.keys[key]
	if !ok {
		q = &keyQueue{}
		l.keys[key] = q
	}
	q.tasks = append(q.tasks, task)
	if !q.running && len(q.tasks) == 1 {
		l.ready = append(l.ready, key)
	}
	l.dispatch()
	return nil
}

// dispatch starts ready keys while below the concurrency limit. The caller
// holds l.mu.
func (l *Lanes) dispatch() {
	for l.running < l.limit && len(l.ready) > 0 {
		key := l.ready[0]
		l.ready = l.ready[1:]
		q := l.keys[key]
		task := q.tasks[0]
		q.tasks = q.tasks[1:]
		q.running = true
		l.running++
		ctx := l.ctx
		if q.giveUp > 0 {
			q.giveUp--
			ctx = context.WithValue(ctx, abandonedKey{}, true)
		}
		go l.run(ctx, key, q, task)
	}
}

func (l *Lanes) run(ctx context.Context, key string, q *keyQueue, task Task) {
	// A Wait error means ctx ended: the task still runs, sees the ended
	// context and gives up quickly, so its key's bookkeeping stays right.
	_ = l.limiter.Wait(ctx)
	again := task(ctx)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.running--
	switch {
	case again == Abandon:
		l.inFlight--
		q.giveUp = len(q.tasks)
	case again > 0:
		// The key stays running, so Submit does not make it ready; the slot
		// goes to other keys meanwhile.
		l.held++
		go l.hold(key, q, task, again)
		l.dispatch()
		return
	default:
		l.inFlight--
	}
	q.running = false
	if len(q.tasks) > 0 {
		l.ready = append(l.ready, key)
	} else {
		delete(l.keys, key)
	}
	l.space.Broadcast()
	if l.inFlight == 0 {
		l.idle.Broadcast()
	}
	l.dispatch()
}

// hold runs task again after d, ahead of its key's later tasks. Close or
// the end of the lanes' context cut the wait short.
func (l *Lanes) hold(key string, q *keyQueue, task Task, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-l.closing:
	case <-l.ctx.Done():
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.held--
	q.tasks = append([]Task{task}, q.tasks...)
	q.running = false
	l.ready = append(l.ready, key)
	l.dispatch()
}

// SetConcurrency changes how many keys run at once. Lowering it lets running
// tasks finish; no new task starts until the count is below the new limit.
func (l *Lanes) SetConcurrency(n int) {
	if n < 1 {
		n = 1
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.limit = n
	l.dispatch()
}

// Concurrency returns the current limit.
func (l *Lanes) Concurrency() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.limit
}

// SetRate changes the start rate limit in tasks per second; 0 removes it.
func (l *Lanes) SetRate(perSecond float64) {
	l.limiter.SetLimit(limitOf(perSecond))
}

// Running returns how many tasks are executing now.
func (l *Lanes) Running() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.running
}

// Held returns how many keys wait for a task to run again.
func (l *Lanes) Held() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.held
}

// InFlight returns how many tasks are queued, running or held.
func (l *Lanes) InFlight() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.inFlight
}

// Wait blocks until no task is in flight or ctx ends.
func (l *Lanes) Wait(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() {
		l.mu.Lock()
		l.idle.Broadcast()
		l.mu.Unlock()
	})
	defer stop()
	l.mu.Lock()
	defer l.mu.Unlock()
	for l.inFlight > 0 && ctx.Err() == nil {
		l.idle.Wait()
	}
	return ctx.Err()
}

// Close makes Submit fail from now on. Tasks already submitted still run,
// and held tasks run again at once (so they can give up); use Wait to wait
// for them.
func (l *Lanes) Close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return
	}
	l.closed = true
	close(l.closing)
	l.space.Broadcast()
}
