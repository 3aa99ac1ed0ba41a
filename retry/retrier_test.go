package retry_test

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/retry"
)

// stressCount is the number of messages in the two-instance test;
// RELIABLE_RETRY_STRESS_N changes it (default 5000).
func stressCount(t *testing.T) int {
	if s := os.Getenv("RELIABLE_RETRY_STRESS_N"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 50 {
			t.Fatalf("RELIABLE_RETRY_STRESS_N=%q: want a number >= 50", s)
		}
		return n
	}
	return 5000
}

// failures returns how many times message id fails transiently before it
// succeeds: 20% of messages fail once, a fifth of those twice. Deterministic,
// so a run never reaches MaxAttempts by bad luck.
func failures(id string) int {
	h := fnv.New32a()
	h.Write([]byte(id))
	switch v := h.Sum32() % 100; {
	case v < 4:
		return 2
	case v < 20:
		return 1
	}
	return 0
}

// L09, L11, L12: two consumer instances, each consuming half of the keys
// (their partitions) and running its own retrier on one shared table: 5k
// messages over 50 keys with 20% transient failures. Every message is applied
// exactly once, in order per key, and no key is ever handled by two handlers
// at once, across both consumers and both retriers.
func TestTwoInstancesApplyEveryMessageOnceInOrder(t *testing.T) {
	t.Parallel()
	n, keys := stressCount(t), 50
	b := setup(t, func(c *retry.TableConfig) {
		c.Backoff = reliable.Backoff{Initial: 10 * time.Millisecond, Max: 50 * time.Millisecond}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	l := newLedger()
	var mu sync.Mutex
	tries := map[string]int{}
	var transient atomic.Int64
	var next sync.Map // key -> next expected sequence
	handler := func(instance string) reliable.Handler {
		return reliable.HandlerFunc(func(ctx context.Context, msg *reliable.Message) error {
			l.enter(msg.Key)
			defer l.exit(msg.Key)
			mu.Lock()
			tries[msg.ID]++
			try := tries[msg.ID]
			mu.Unlock()
			if msg.Delivery.Attempt != try {
				return reliable.Permanent(fmt.Errorf("%s: attempt %d on try %d", msg.ID, msg.Delivery.Attempt, try))
			}
			if try <= failures(msg.ID) {
				transient.Add(1)
				return reliable.Retryable(errors.New("transient: " + instance))
			}
			seq, _ := strconv.Atoi(string(msg.Payload))
			want, _ := next.LoadOrStore(msg.Key, 0)
			if seq != want.(int) {
				return reliable.Permanent(fmt.Errorf("key %s: got seq %d, want %d", msg.Key, seq, want))
			}
			next.Store(msg.Key, seq+1)
			l.apply(msg)
			return nil
		})
	}

	// Two instances: a consumer (one lane per key it owns) and a retrier each.
	var replayed [2]atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	for inst := range 2 {
		name := fmt.Sprint("instance-", inst)
		h := handler(name)
		replays := &replayed[inst]
		startRetrier(t, b.table, reliable.HandlerFunc(func(ctx context.Context, msg *reliable.Message) error {
			replays.Add(1)
			return h.Handle(ctx, msg)
		}), retry.RetrierConfig{Instance: name, Workers: 4})
		for k := inst; k < keys; k += 2 {
			key := fmt.Sprintf("order-%02d", k)
			wg.Add(1)
			go func() {
				defer wg.Done()
				for seq := 0; seq < n/keys; seq++ {
					m := &reliable.Message{ID: fmt.Sprintf("%s/%04d", key, seq), Topic: "orders", Key: key,
						Type: "order.event", Payload: []byte(strconv.Itoa(seq))}
					if err := consume(ctx, b.table, h, m); err != nil {
						t.Error(err)
						return
					}
				}
			}()
		}
	}
	wg.Wait()
	consumed := time.Since(start)
	waitFor(t, 2*time.Minute, "every message to apply", func() bool {
		select {
		case e := <-b.dead:
			t.Fatalf("unexpected dead entry %s: %s", e.Message.ID, e.LastError)
		default:
		}
		return l.total() == n || t.Failed()
	})
	l.check(t)
	for k := range keys {
		key := fmt.Sprintf("order-%02d", k)
		if got := len(l.applied(key)); got != n/keys {
			t.Errorf("%s: %d applied, want %d", key, got, n/keys)
		}
	}
	// The last replays' outcomes commit just after their handlers return.
	var st retry.Status
	var err error
	waitFor(t, 10*time.Second, "the last outcomes to commit", func() bool {
		st, err = b.table.Status(context.Background())
		return err != nil || st.Pending == 0
	})
	if err != nil || st.Pending != 0 || st.Dead != 0 {
		t.Fatalf("stats after drain: %+v, %v", st, err)
	}
	if replayed[0].Load() == 0 || replayed[1].Load() == 0 {
		t.Errorf("replays per retrier %d and %d: both should have worked", replayed[0].Load(), replayed[1].Load())
	}
	t.Logf("%d messages over %d keys, %d transient failures, replays by retrier 0/1: %d/%d; consumed in %s, all applied after %s",
		n, keys, transient.Load(), replayed[0].Load(), replayed[1].Load(), consumed.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
}

// A retrier crashes in the middle of a key (its process dies holding the
// lease). Another retrier takes the key over once the lease expires, not
// before, and continues at the first message not applied: nothing reordered,
// nothing lost.
func TestCrashedRetrierKeyIsTakenOverInOrder(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const total, crashAt = 10, 4
	for i := range total {
		must(t, b.table.Park(ctx, orderMsg("order-1", strconv.Itoa(i)), nil))
	}
	l := newLedger()
	inHandler := make(chan struct{})
	var crashed atomic.Bool
	a := reliable.HandlerFunc(func(ctx context.Context, msg *reliable.Message) error {
		if msg.Type == "order."+strconv.Itoa(crashAt) {
			close(inHandler)
			<-ctx.Done() // the process dies here; the effect never happens
			return ctx.Err()
		}
		l.apply(msg)
		return nil
	})
	const leaseTTL = 1500 * time.Millisecond
	stopA := startRetrier(t, b.table, a, retry.RetrierConfig{Instance: "a", LeaseTTL: leaseTTL, ShutdownTimeout: time.Millisecond}, retry.SimulateCrash)
	<-inHandler
	stopA()
	crashedAt := time.Now()
	crashed.Store(true)

	var firstB time.Time
	var once sync.Once
	bh := reliable.HandlerFunc(func(ctx context.Context, msg *reliable.Message) error {
		once.Do(func() { firstB = time.Now() })
		if msg.Delivery.Attempt != 1 {
			t.Errorf("%s: attempt %d: the crash was counted as a failed attempt", msg.ID, msg.Delivery.Attempt)
		}
		l.apply(msg)
		return nil
	})
	startRetrier(t, b.table, bh, retry.RetrierConfig{Instance: "b", LeaseTTL: leaseTTL})
	waitFor(t, 10*time.Second, "b to finish the key", func() bool { return len(l.applied("order-1")) == total })
	want := make([]string, total)
	for i := range want {
		want[i] = "order." + strconv.Itoa(i)
	}
	if got := l.applied("order-1"); !equal(got, want) {
		t.Fatalf("applied %v, want %v", got, want)
	}
	l.check(t)
	// The lease was last renewed before the crash, at most LeaseTTL/3 earlier.
	if wait := firstB.Sub(crashedAt); wait < leaseTTL*2/3-50*time.Millisecond {
		t.Fatalf("b started %s after the crash, before a's lease (%s) could have expired", wait, leaseTTL)
	}
	waitFor(t, 5*time.Second, "the last entry to be done", func() bool {
		st, err := b.table.Status(ctx)
		return err == nil && st.Pending == 0
	})
}

// A graceful stop lets the in-flight replay finish and releases the lease,
// so another retrier continues at once.
func TestStoppedRetrierHandsOverAtOnce(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := range 5 {
		must(t, b.table.Park(ctx, orderMsg("order-1", strconv.Itoa(i)), nil))
	}
	l := newLedger()
	inHandler, release := make(chan struct{}), make(chan struct{})
	a := reliable.HandlerFunc(func(ctx context.Context, msg *reliable.Message) error {
		if msg.Type == "order.2" {
			close(inHandler)
			<-release
		}
		l.apply(msg)
		return nil
	})
	stopA := startRetrier(t, b.table, a, retry.RetrierConfig{Instance: "a", LeaseTTL: time.Minute})
	<-inHandler
	go func() { time.Sleep(100 * time.Millisecond); close(release) }()
	stopA() // returns after order.2 finished, without starting order.3
	if got := l.applied("order-1"); len(got) != 3 {
		t.Fatalf("after a graceful stop: applied %v, want order.0-2", got)
	}
	start := time.Now()
	startRetrier(t, b.table, reliable.HandlerFunc(func(ctx context.Context, msg *reliable.Message) error {
		l.apply(msg)
		return nil
	}), retry.RetrierConfig{Instance: "b", LeaseTTL: time.Minute})
	waitFor(t, 10*time.Second, "b to finish", func() bool { return len(l.applied("order-1")) == 5 })
	if time.Since(start) > 5*time.Second {
		t.Fatalf("b waited %s: the lease was not released", time.Since(start))
	}
	if got := l.applied("order-1"); !equal(got, []string{"order.0", "order.1", "order.2", "order.3", "order.4"}) {
		t.Fatalf("applied %v", got)
	}
	l.check(t)
}

// A retrier whose lease is taken away (it was paused past the lease's
// expiry and another retrier took over) has its handler's context cancelled
// and records nothing: the attempt does not count, the entry stays.
func TestLostLeaseCancelsTheHandlerAndIsFenced(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	msg := orderMsg("order-1", "placed")
	must(t, b.table.Park(ctx, msg, nil))
	inHandler, cancelled := make(chan struct{}), make(chan error, 1)
	h := reliable.HandlerFunc(func(ctx context.Context, msg *reliable.Message) error {
		close(inHandler)
		<-ctx.Done()
		cancelled <- ctx.Err()
		return errors.New("interrupted")
	})
	startRetrier(t, b.table, h, retry.RetrierConfig{Instance: "a", LeaseTTL: 600 * time.Millisecond})
	<-inHandler
	// Another retrier takes the key over.
	tag, err := b.pool.Exec(ctx, `UPDATE `+b.cfg.Table+`_leases SET owner = 'thief', expires_at = now() + interval '1 hour'`)
	if err != nil || tag.RowsAffected() != 1 {
		t.Fatalf("steal lease: %v, %d", err, tag.RowsAffected())
	}
	select {
	case err := <-cancelled:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("handler context ended with %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("handler context not cancelled after the lease was lost")
	}
	time.Sleep(100 * time.Millisecond)
	e, err := b.table.List(ctx, retry.ListFilter{})
	if err != nil || len(e) != 1 || e[0].Attempts != 0 || e[0].LastError != "" {
		t.Fatalf("entry after a lost lease: %+v, %v", e, err)
	}
	var owner string
	must(t, b.pool.QueryRow(ctx, `SELECT owner FROM `+b.cfg.Table+`_leases`).Scan(&owner))
	if owner != "thief" {
		t.Fatalf("the fenced retrier released the thief's lease: owner %q", owner)
	}
}

// A panicking handler is a failed attempt, not a dead retrier.
func TestHandlerPanicIsAFailedAttempt(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *retry.TableConfig) { c.MaxAttempts = 2 })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	must(t, b.table.Park(ctx, orderMsg("order-1", "placed"), errors.New("first")))
	startRetrier(t, b.table, reliable.HandlerFunc(func(context.Context, *reliable.Message) error { panic("nil map") }), retry.RetrierConfig{})
	select {
	case e := <-b.dead:
		if e.Attempts != 2 || e.LastError != "retry: handler panicked: nil map" {
			t.Fatalf("dead entry %+v", e)
		}
	case <-ctx.Done():
		t.Fatal("no dead entry")
	}
}

// L20: shutdown cannot cause a second application. The handler finishes
// just after the shutdown deadline cut its context (its effects are
// applied); the retrier still records the entry done, so no retrier replays
// it again.
func TestShutdownDeadlineDoesNotLeaveAHandledEntryPending(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	must(t, b.table.Park(ctx, orderMsg("order-1", "placed"), nil))
	inHandler, handled := make(chan struct{}), make(chan struct{})
	h := reliable.HandlerFunc(func(ctx context.Context, msg *reliable.Message) error {
		close(inHandler)
		<-ctx.Done() // the shutdown deadline passes while the handler commits
		close(handled)
		return nil
	})
	stop := startRetrier(t, b.table, h, retry.RetrierConfig{ShutdownTimeout: 100 * time.Millisecond})
	select {
	case <-inHandler:
	case <-ctx.Done():
		t.Fatal("handler not called")
	}
	stop()
	<-handled
	e, err := b.table.List(ctx, retry.ListFilter{})
	if err != nil || len(e) != 1 {
		t.Fatalf("entries: %+v, %v", e, err)
	}
	if e[0].State != retry.StateDone {
		t.Fatalf("entry handled successfully is %s after shutdown, want done: a retrier would apply it again", e[0].State)
	}
}
