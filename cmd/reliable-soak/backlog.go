package main

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
)

// loadChunk is how many orders one loader transaction writes.
const loadChunk = 5000

// backlog is the memory mode: it measures the peak RSS of a relay draining
// cfg.Backlog pending outbox rows, then of one consumer draining as many
// messages from the topic, each alone, so nothing but the backlog drives
// its memory (L05, L23: nothing may buffer the backlog in memory).
func (r *runner) backlog(ctx context.Context) (*Report, error) {
	cfg := r.cfg
	rep := &Report{Mode: "backlog", Broker: cfg.Broker, Seed: cfg.Seed, RunID: cfg.RunID}

	start := time.Now()
	if err := r.load(ctx, cfg.Backlog); err != nil {
		return rep, err
	}
	rep.Phases = append(rep.Phases, phase("load orders+outbox (relay stopped)", time.Since(start), cfg.Backlog))

	start = time.Now()
	if err := r.procs.start("relay-1", roleRelay, 1); err != nil {
		return rep, err
	}
	err := r.waitFor(ctx, rep, "relay drain", func(p progress) bool { return p.outboxPending == 0 })
	if err != nil {
		return r.finish(ctx, rep, err)
	}
	rep.Phases = append(rep.Phases, phase("relay drains the outbox (no consumer)", time.Since(start), cfg.Backlog))
	if err := r.procs.stop("relay-1", time.Minute); err != nil {
		return r.finish(ctx, rep, err)
	}
	// Known now, while the consumer's drain can take many minutes more.
	for _, p := range r.procs.stats() {
		if p.Name == "relay-1" {
			r.log.Info("relay drained the backlog", slog.Int("rows", cfg.Backlog),
				slog.Duration("took", time.Since(start).Round(time.Second)),
				slog.String("peak_rss", fmt.Sprintf("%.1f MiB", float64(p.PeakRSS)/(1<<20))))
		}
	}

	start = time.Now()
	if err := r.procs.start("consumer-1", roleConsumer, 1); err != nil {
		return rep, err
	}
	err = r.waitFor(ctx, rep, "consumer drain", func(p progress) bool { return p.settled() })
	if err == nil {
		rep.Phases = append(rep.Phases, phase("consumer drains the topic (relay stopped)", time.Since(start), cfg.Backlog))
	}
	return r.finish(ctx, rep, err)
}

func phase(name string, d time.Duration, n int) Phase {
	return Phase{Name: name, Duration: d, Rate: float64(n) / d.Seconds()}
}

// waitFor polls progress until done, failing when nothing changes for
// StallTimeout; crashed processes are restarted and recorded.
func (r *runner) waitFor(ctx context.Context, rep *Report, what string, done func(progress) bool) error {
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	var last progress
	lastChange, lastLog := time.Now(), time.Now()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
		r.restartCrashed(rep)
		p, err := readProgress(ctx, r.pool, r.cfg.Group, false)
		if err != nil {
			r.log.Warn("reading progress", slog.String("error", err.Error()))
			continue
		}
		if done(p) {
			return nil
		}
		if p != last {
			last, lastChange = p, time.Now()
		}
		if time.Since(lastLog) >= 30*time.Second {
			lastLog = time.Now()
			r.log.Info(what, slog.Int64("orders", p.orders), slog.Int64("applied", p.appliedUnique),
				slog.Int64("outbox_pending", p.outboxPending), slog.Int64("retry_pending", p.retryPending))
		}
		if time.Since(lastChange) > r.cfg.StallTimeout {
			return fmt.Errorf("%s stalled: nothing changed for %s", what, r.cfg.StallTimeout)
		}
	}
}

// load writes n orders and their outbox messages, loadChunk per
// transaction, from a few goroutines that each own a share of the keys.
func (r *runner) load(ctx context.Context, n int) error {
	const loaders = 4
	pool, err := openPool(ctx, r.cfg.PostgresDSN, r.cfg.Schema, "reliable-soak-loader", loaders+1)
	if err != nil {
		return err
	}
	defer pool.Close()
	w := &writer{cfg: r.cfg, pool: pool, log: r.log, name: "loader"}
	var left, done atomic.Int64
	left.Store(int64(n))
	g, gctx := errgroup.WithContext(ctx)
	var logMu sync.Mutex
	lastLog := time.Now()
	for l := range loaders {
		g.Go(func() error {
			rng := rand.New(rand.NewPCG(r.cfg.Seed, uint64(l)))
			// Keys l, l+loaders, ...: no other loader writes them, so no
			// key locks are needed.
			share := max(1, (r.cfg.Keys-l+loaders-1)/loaders)
			for {
				k := take(&left, loadChunk)
				if k == 0 {
					return nil
				}
				orders := make([]order, k)
				for i := range orders {
					orders[i] = order{key: orderKey(l + loaders*rng.IntN(share))}
				}
				if _, err := w.write(gctx, orders); err != nil {
					return fmt.Errorf("loading orders: %w", err)
				}
				total := done.Add(k)
				logMu.Lock()
				if time.Since(lastLog) > 10*time.Second {
					lastLog = time.Now()
					r.log.Info("loading", slog.Int64("orders", total), slog.Int("of", n))
				}
				logMu.Unlock()
			}
		})
	}
	return g.Wait()
}
