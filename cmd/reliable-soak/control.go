package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"
)

// Control is what the parent changes while children run: the fault windows
// that act inside a child (handler failures, latency, bursts). The parent
// writes it to control.json in the run directory (write, then rename, so a
// reader never sees half a file); children poll it.
type Control struct {
	FailRate float64       // fraction of early attempts failing transiently
	Latency  time.Duration // extra handler latency (slow downstream)
	Outage   bool          // every handler call fails retryably (downstream outage)
	Bursts   int           // bursts requested so far; the writer runs each once
	// Paused holds the writer while a fault waits for testenv's lock
	// (another package's test holds it), so the orders are not all written
	// before the fault can strike.
	Paused bool
	// Quota bounds the steady orders written so far (-1: no bound); the
	// parent raises it as faults begin (Config.steadyQuota).
	Quota int64
	// BrokerCuts counts connection cuts of the Kafka connections; each
	// consumer and relay resets its own when it grows (see cutDialer).
	BrokerCuts int
}

const controlFile = "control.json"

func writeControl(dir string, c Control) error {
	b, err := json.Marshal(c)
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, controlFile+".tmp")
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, controlFile))
}

// controlWatcher holds the latest Control a child read.
type controlWatcher struct {
	cur atomic.Pointer[Control]
}

func newControlWatcher(initial Control) *controlWatcher {
	w := &controlWatcher{}
	w.cur.Store(&initial)
	return w
}

// startControlWatcher reads dir's control file at once (a restarted child
// must see the current state before acting on changes) and then keeps
// watching it until ctx ends.
func startControlWatcher(ctx context.Context, dir string, initial Control) *controlWatcher {
	w := newControlWatcher(initial)
	w.read(filepath.Join(dir, controlFile))
	go w.watch(ctx, dir, 200*time.Millisecond)
	return w
}

func (w *controlWatcher) read(path string) {
	if b, err := os.ReadFile(path); err == nil {
		var c Control
		if json.Unmarshal(b, &c) == nil {
			w.cur.Store(&c)
		}
	}
}

func (w *controlWatcher) Load() Control { return *w.cur.Load() }

// watch re-reads the control file every interval until ctx ends. A file that
// is missing or unreadable keeps the last value.
func (w *controlWatcher) watch(ctx context.Context, dir string, interval time.Duration) {
	path := filepath.Join(dir, controlFile)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		// The file is tiny: read it every time rather than trust mtimes,
		// whose granularity may hide two writes in a row.
		w.read(path)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
