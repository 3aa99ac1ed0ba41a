package ordering

import (
	"context"
	"math/rand/v2"
	"strconv"
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
		err := l.Submit(ctx, key, func(context.Context) {
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
		})
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
	task := func(context.Context) {
		n := running.Add(1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		time.Sleep(20 * time.Millisecond)
		running.Add(-1)
	}
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
		if err := l.Submit(ctx, "k", func(context.Context) { <-release }); err != nil {
			t.Fatal(err)
		}
	}
	short, cancelShort := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancelShort()
	if err := l.Submit(short, "other", func(context.Context) {}); err == nil {
		t.Fatal("Submit past MaxInFlight did not block")
	}
	close(release)
	if err := l.Submit(ctx, "other", func(context.Context) {}); err != nil {
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
		_ = l.Submit(ctx, strconv.Itoa(i), func(context.Context) {})
	}
	_ = l.Wait(ctx)
	if took := time.Since(start); took < 150*time.Millisecond {
		t.Fatalf("21 tasks at 100/s took %s, want about 200ms", took)
	}
	l.SetRate(0)
	start = time.Now()
	for i := 0; i < 200; i++ {
		_ = l.Submit(ctx, strconv.Itoa(i), func(context.Context) {})
	}
	_ = l.Wait(ctx)
	if took := time.Since(start); took > time.Second {
		t.Fatalf("unlimited rate took %s for 200 tasks", took)
	}
}

func TestLanesCloseRefusesSubmit(t *testing.T) {
	l := NewLanes(context.Background(), LanesConfig{})
	l.Close()
	if err := l.Submit(context.Background(), "k", func(context.Context) {}); err != ErrLanesClosed {
		t.Fatalf("got %v, want ErrLanesClosed", err)
	}
}
