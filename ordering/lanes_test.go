package ordering

import (
	"context"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestLanesKeepOrderPerKeyUnderRandomLatency(t *testing.T) {
	// L08, L12: many lanes in parallel, random handler latency, and every key's
	// tasks still run strictly in submission order, never two at once.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l := NewLanes(ctx, LanesConfig{Concurrency: 64, MaxInFlight: 512})
	const n, keys = 10000, 200
	var mu sync.Mutex
	last := make(map[string]int)
	active := make(map[string]bool)
	var violations atomic.Int64
	seq := make([]int, keys)
	for i := 0; i < n; i++ {
		k := i % keys
		key, s := "order-"+strconv.Itoa(k), seq[k]
		seq[k]++
		err := l.Submit(ctx, key, once(func() {
			mu.Lock()
			if active[key] || (s > 0 && last[key] != s-1) {
				violations.Add(1)
			}
			active[key] = true
			mu.Unlock()
			if d := rand.IntN(200); d < 20 {
				time.Sleep(time.Duration(d) * 50 * time.Microsecond)
			}
			mu.Lock()
			active[key] = false
			last[key] = s
			mu.Unlock()
		}))
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if v := violations.Load(); v != 0 {
		t.Fatalf("%d order violations", v)
	}
	for k := 0; k < keys; k++ {
		if got := last["order-"+strconv.Itoa(k)]; got != seq[k]-1 {
			t.Fatalf("key %d ended at %d, want %d", k, got, seq[k]-1)
		}
	}
}

func TestLanesLowerConcurrencyAtRuntime(t *testing.T) {
	// L16: 50 workers knocked over the service they called; the concurrency
	// must drop while running, within a second.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l := NewLanes(ctx, LanesConfig{Concurrency: 50, MaxInFlight: 4096})
	var running, peak atomic.Int64
	task := once(func() {
		n := running.Add(1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		time.Sleep(20 * time.Millisecond)
		running.Add(-1)
	})
	go func() {
		for i := 0; i < 3000 && ctx.Err() == nil; i++ {
			_ = l.Submit(ctx, strconv.Itoa(i), task)
		}
	}()
	deadline := time.Now().Add(5 * time.Second)
	for running.Load() < 50 {
		if time.Now().After(deadline) {
			t.Fatalf("never reached 50 running, at %d", running.Load())
		}
		time.Sleep(time.Millisecond)
	}
	l.SetConcurrency(8)
	changed := time.Now()
	for running.Load() > 8 {
		time.Sleep(time.Millisecond)
	}
	took := time.Since(changed)
	if took > time.Second {
		t.Fatalf("lowering concurrency took %s", took)
	}
	// It must stay at or below 8 from now on.
	peak.Store(0)
	time.Sleep(200 * time.Millisecond)
	if p := peak.Load(); p > 8 {
		t.Fatalf("peak %d running after lowering to 8", p)
	}
	t.Logf("concurrency 50 -> 8 took effect in %s", took)
	cancel()
}

func TestLanesBoundInFlight(t *testing.T) {
	// L23: a backlog must stay in the broker: Submit blocks at MaxInFlight.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	l := NewLanes(ctx, LanesConfig{Concurrency: 2, MaxInFlight: 5})
	release := make(chan struct{})
	for i := 0; i < 5; i++ {
		if err := l.Submit(ctx, "k", once(func() { <-release })); err != nil {
			t.Fatal(err)
		}
	}
	short, cancelShort := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancelShort()
	if err := l.Submit(short, "other", once(func() {})); err == nil {
		t.Fatal("Submit past MaxInFlight did not block")
	}
	close(release)
	if err := l.Submit(ctx, "other", once(func() {})); err != nil {
		t.Fatal(err)
	}
	if err := l.Wait(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestLanesRateLimit(t *testing.T) {
	// L16: a rate limit, adjustable while running, paces task starts.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	l := NewLanes(ctx, LanesConfig{Concurrency: 8, Rate: 100})
	start := time.Now()
	for i := 0; i < 21; i++ {
		_ = l.Submit(ctx, strconv.Itoa(i), once(func() {}))
	}
	_ = l.Wait(ctx)
	if took := time.Since(start); took < 150*time.Millisecond {
		t.Fatalf("21 tasks at 100/s took %s, want about 200ms", took)
	}
	l.SetRate(0)
	start = time.Now()
	for i := 0; i < 200; i++ {
		_ = l.Submit(ctx, strconv.Itoa(i), once(func() {}))
	}
	_ = l.Wait(ctx)
	if took := time.Since(start); took > time.Second {
		t.Fatalf("unlimited rate took %s for 200 tasks", took)
	}
}

func TestLanesCloseRefusesSubmit(t *testing.T) {
	l := NewLanes(context.Background(), LanesConfig{})
	l.Close()
	if err := l.Submit(context.Background(), "k", once(func() {})); err != ErrLanesClosed {
		t.Fatalf("got %v, want ErrLanesClosed", err)
	}
}

// once is a task that runs f and is finished.
func once(f func()) Task {
	return func(context.Context) time.Duration {
		f()
		return 0
	}
}

func TestLanesHeldTaskHoldsOnlyItsKey(t *testing.T) {
	// L09, L10: a task that fails and asks to run again keeps its key's later
	// tasks waiting behind it, but not other keys, and it does not take a
	// concurrency slot while it waits: with one slot, another key's tasks all
	// run during the wait.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	l := NewLanes(ctx, LanesConfig{Concurrency: 1})
	var mu sync.Mutex
	var order []string
	record := func(s string) {
		mu.Lock()
		order = append(order, s)
		mu.Unlock()
	}
	var tries atomic.Int64
	otherDone := make(chan struct{})
	if err := l.Submit(ctx, "a", func(context.Context) time.Duration {
		if tries.Add(1) < 3 {
			record("a1-failed")
			return 20 * time.Millisecond
		}
		record("a1")
		return 0
	}); err != nil {
		t.Fatal(err)
	}
	if err := l.Submit(ctx, "a", once(func() { record("a2") })); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		last := i == 4
		if err := l.Submit(ctx, "b", once(func() {
			record("b")
			if last {
				close(otherDone)
			}
		})); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-otherDone:
	case <-ctx.Done():
		t.Fatal("key b did not run while key a was held")
	}
	if err := l.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	var a []string
	bBeforeA1 := 0
	seenA1 := false
	for _, s := range order {
		switch s {
		case "b":
			if !seenA1 {
				bBeforeA1++
			}
		default:
			a = append(a, s)
			if s == "a1" {
				seenA1 = true
			}
		}
	}
	if got, want := strings.Join(a, ","), "a1-failed,a1-failed,a1,a2"; got != want {
		t.Fatalf("key a ran %s, want %s", got, want)
	}
	if bBeforeA1 != 5 {
		t.Fatalf("%d of key b's 5 tasks ran while a was held, want all (the held task took the only slot)", bBeforeA1)
	}
	if l.Held() != 0 || l.InFlight() != 0 {
		t.Fatalf("held %d, in flight %d after Wait", l.Held(), l.InFlight())
	}
}

func TestLanesAbandonMakesTheKeysQueuedTasksGiveUp(t *testing.T) {
	// A task that gives up (its delivery will come again) must not let its
	// key's queued tasks take effect: they would apply out of order. They
	// run marked AfterAbandon, so each can give up too; other keys and tasks
	// submitted later are not affected.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	l := NewLanes(ctx, LanesConfig{Concurrency: 4})
	release := make(chan struct{})
	var applied, gaveUp atomic.Int64
	task := func(c context.Context) time.Duration {
		if AfterAbandon(c) {
			gaveUp.Add(1)
			return Abandon
		}
		applied.Add(1)
		return 0
	}
	_ = l.Submit(ctx, "a", func(context.Context) time.Duration { <-release; return Abandon })
	_ = l.Submit(ctx, "a", task)
	_ = l.Submit(ctx, "a", task)
	_ = l.Submit(ctx, "b", task)
	close(release)
	if err := l.Wait(ctx); err != nil {
		t.Fatalf("Wait: %v (in flight %d)", err, l.InFlight())
	}
	if applied.Load() != 1 || gaveUp.Load() != 2 {
		t.Fatalf("applied %d (want key b's 1), gave up %d (want key a's 2)", applied.Load(), gaveUp.Load())
	}
	// The key works again for new tasks.
	_ = l.Submit(ctx, "a", task)
	if err := l.Wait(ctx); err != nil || applied.Load() != 2 {
		t.Fatalf("new task of the abandoned key: applied %d, err %v", applied.Load(), err)
	}
}

func TestLanesCloseWakesHeldTasks(t *testing.T) {
	// Shutdown must not wait out a held key's backoff: Close runs it again
	// at once so it can give up.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	l := NewLanes(ctx, LanesConfig{})
	var closed atomic.Bool
	_ = l.Submit(ctx, "a", func(context.Context) time.Duration {
		if closed.Load() {
			return Abandon
		}
		return time.Hour
	})
	for l.Held() == 0 && ctx.Err() == nil {
		time.Sleep(time.Millisecond)
	}
	closed.Store(true)
	l.Close()
	wctx, wcancel := context.WithTimeout(ctx, 2*time.Second)
	defer wcancel()
	if err := l.Wait(wctx); err != nil {
		t.Fatalf("held task still in flight 2s after Close: %v", err)
	}
}
