package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/time/rate"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/outbox"
)

// Message types. An order's events cycle through the statuses; a poison
// message is refused by the handler with a permanent error.
const typePoison = "order.poison"

var statuses = []string{"order.placed", "order.paid", "order.completed", "order.cancelled"}

// burstTx is how many orders one transaction of a burst writes, like a batch
// job committing in chunks.
const burstTx = 500

// writer is the order service: each order is a business row in soak_orders
// and an outbox message, committed in one transaction (outbox.Add).
type writer struct {
	cfg  *Config
	pool *pgxpool.Pool
	log  *slog.Logger
	name string
	// lockKeys serialises writers of one key; off when each goroutine owns
	// its keys (the backlog loader), which spares the lock table.
	lockKeys bool

	steadyLeft  atomic.Int64 // orders the steady writers may still write (Messages mode)
	steadyTaken atomic.Int64 // steady orders taken so far, held to Control.Quota
	burstLeft   atomic.Int64 // orders reserved for the first burst
	poisonN     atomic.Int64
	written     atomic.Int64
}

// runWriter writes the campaign's orders: steadily at cfg.Rate, plus a burst
// of cfg.Burst orders each time the control file asks for one. With
// cfg.Messages it stops after that many orders; otherwise after cfg.Duration.
func runWriter(ctx context.Context, cfg *Config, name string, log *slog.Logger) error {
	pool, err := openPool(ctx, cfg.PostgresDSN, cfg.Schema, name, 12)
	if err != nil {
		return err
	}
	defer pool.Close()
	w := &writer{cfg: cfg, pool: pool, log: log, name: name, lockKeys: true}
	bursts := slices.Contains(cfg.Faults, faultBurst) && cfg.Burst > 0
	if cfg.Messages > 0 {
		reserve := cfg.burstReserve()
		w.steadyLeft.Store(int64(cfg.Messages - reserve))
		w.burstLeft.Store(int64(reserve))
	} else {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.Duration)
		defer cancel()
		w.steadyLeft.Store(1 << 62)
	}
	ctlCtx, stopCtl := context.WithCancel(ctx)
	defer stopCtl()
	ctl := startControlWatcher(ctlCtx, cfg.Dir, Control{Quota: cfg.steadyQuota(0)})

	const goroutines = 8
	lim := rate.NewLimiter(rate.Limit(cfg.Rate), max(1, int(cfg.Rate/20)))
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(cfg.Seed, uint64(g)+1))
			w.steady(ctx, lim, rng, ctl)
		}()
	}
	burstDone := make(chan struct{})
	go func() {
		defer close(burstDone)
		if bursts {
			w.bursts(ctx, ctl)
		}
	}()
	wg.Wait()
	// In Messages mode the first burst is owed its reserve: wait for it.
	if cfg.Messages > 0 {
		<-burstDone
	}
	log.Info("writer done", slog.Int64("orders", w.written.Load()))
	if ctx.Err() != nil && cfg.Messages > 0 && w.steadyLeft.Load()+w.burstLeft.Load() > 0 {
		return ctx.Err()
	}
	return nil
}

// take reserves up to n orders from budget and returns how many it got.
func take(budget *atomic.Int64, n int64) int64 {
	for {
		left := budget.Load()
		if left <= 0 {
			return 0
		}
		got := min(left, n)
		if budget.CompareAndSwap(left, left-got) {
			return got
		}
	}
}

func (w *writer) steady(ctx context.Context, lim *rate.Limiter, rng *rand.Rand, ctl *controlWatcher) {
	for ctx.Err() == nil {
		if c := ctl.Load(); c.Paused || !w.underQuota(c.Quota) {
			_ = reliable.Sleep(ctx, 50*time.Millisecond)
			continue
		}
		if take(&w.steadyLeft, 1) == 0 {
			return
		}
		if err := lim.Wait(ctx); err != nil {
			return
		}
		n := w.poisonN.Add(1)
		var o order
		switch {
		case w.cfg.OversizeEvery > 0 && n%int64(w.cfg.OversizeEvery) == 0:
			o = order{key: "oversize-" + strconv.FormatInt(n, 10), oversize: true}
		case w.cfg.PoisonEvery > 0 && n%int64(w.cfg.PoisonEvery) == 0:
			o = order{key: "poison-" + strconv.FormatInt(n, 10), poison: true}
		default:
			o = order{key: orderKey(rng.IntN(w.cfg.Keys))}
		}
		w.writeRetrying(ctx, []order{o})
	}
}

// underQuota takes a steady-order ticket when fewer than quota were taken
// (quota -1: no bound).
func (w *writer) underQuota(quota int64) bool {
	for {
		n := w.steadyTaken.Load()
		if quota >= 0 && n >= quota {
			return false
		}
		if w.steadyTaken.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// bursts runs a burst each time the control file's Bursts count grows: a
// batch job writing cfg.Burst orders over random keys as fast as it can.
func (w *writer) bursts(ctx context.Context, ctl *controlWatcher) {
	done := 0
	rng := rand.New(rand.NewPCG(w.cfg.Seed, 0xb0057))
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		if w.cfg.Messages > 0 && w.burstLeft.Load() == 0 && w.steadyLeft.Load() == 0 {
			return
		}
		if ctl.Load().Bursts > done {
			done++
			budget := &w.burstLeft
			if budget.Load() == 0 {
				budget = &w.steadyLeft // later bursts take from what is left
			}
			start, total := time.Now(), int64(0)
			for total < int64(w.cfg.Burst) && ctx.Err() == nil {
				n := take(budget, min(burstTx, int64(w.cfg.Burst)-total))
				if n == 0 {
					break
				}
				orders := make([]order, n)
				for i := range orders {
					orders[i] = order{key: orderKey(rng.IntN(w.cfg.Keys))}
				}
				w.writeRetrying(ctx, orders)
				total += n
			}
			w.log.Info("burst written", slog.Int64("orders", total), slog.Duration("took", time.Since(start)))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func orderKey(i int) string { return "order-" + strconv.Itoa(i) }

type order struct {
	key      string
	poison   bool
	oversize bool
}

// oversizeBytes is the payload of an oversize order: above the producers'
// default 1 MiB limit.
const oversizeBytes = 3 << 19

// writeRetrying writes orders in one transaction, retrying until it
// committed or ctx ended. When a commit failed ambiguously, the first
// message's row tells whether it went through.
func (w *writer) writeRetrying(ctx context.Context, orders []order) {
	for attempt := 1; ctx.Err() == nil; attempt++ {
		firstID, err := w.write(ctx, orders)
		if err == nil {
			w.written.Add(int64(len(orders)))
			return
		}
		if firstID != "" {
			var exists bool
			if qerr := w.pool.QueryRow(context.WithoutCancel(ctx), `SELECT EXISTS (SELECT 1 FROM soak_orders WHERE msg_id = $1)`,
				firstID).Scan(&exists); qerr == nil && exists {
				w.written.Add(int64(len(orders)))
				return
			}
		}
		if ctx.Err() != nil {
			return
		}
		w.log.Warn("writing orders failed, retrying", slog.Int("orders", len(orders)), slog.Int("attempt", attempt),
			slog.String("error", err.Error()))
		_ = reliable.Sleep(ctx, reliable.Backoff{Initial: 50 * time.Millisecond, Max: 2 * time.Second}.Delay(attempt))
	}
}

// write commits orders and their outbox messages in one transaction. Each
// key is locked first (sorted, so transactions never deadlock) and its next
// sequence number read under the lock, so a key's numbers follow commit
// order whichever goroutine writes it. It returns the first message's ID once
// the commit was attempted.
func (w *writer) write(ctx context.Context, orders []order) (string, error) {
	keys := make([]string, len(orders))
	for i, o := range orders {
		keys[i] = o.key
	}
	slices.Sort(keys)
	keys = slices.Compact(keys)

	tx, err := w.pool.Begin(ctx)
	if err != nil {
		return "", err
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	if w.lockKeys {
		// unnest yields the sorted keys in order, so the locks are taken in
		// that order.
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended('soak-key:' || k, 0))
			FROM unnest($1::text[]) AS k`, keys); err != nil {
			return "", fmt.Errorf("lock keys: %w", err)
		}
	}
	last := make(map[string]int, len(keys))
	rows, err := tx.Query(ctx, `SELECT key, max(seq) FROM soak_orders WHERE key = ANY($1) GROUP BY key`, keys)
	if err != nil {
		return "", err
	}
	for rows.Next() {
		var k string
		var s int
		if err := rows.Scan(&k, &s); err != nil {
			rows.Close()
			return "", err
		}
		last[k] = s
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return "", err
	}

	n := len(orders)
	msgs := make([]*reliable.Message, n)
	ids, okeys, poison, oversize := make([]string, n), make([]string, n), make([]bool, n), make([]bool, n)
	seqs := make([]int32, n)
	for i, o := range orders {
		last[o.key]++
		seq := last[o.key]
		typ := statuses[(seq-1)%len(statuses)]
		if o.poison {
			typ = typePoison
		}
		m := &reliable.Message{
			Topic:   w.cfg.Topic,
			Key:     o.key,
			Type:    typ,
			Headers: map[string]string{"seq": strconv.Itoa(seq)},
			Payload: fmt.Appendf(nil, `{"order":%q,"seq":%d,"status":%q}`, o.key, seq, typ),
		}
		if o.oversize {
			m.Payload = make([]byte, oversizeBytes)
		}
		m.EnsureID()
		msgs[i] = m
		ids[i], okeys[i], seqs[i], poison[i], oversize[i] = m.ID, o.key, int32(seq), o.poison, o.oversize
	}
	if _, err := tx.Exec(ctx, `INSERT INTO soak_orders (msg_id, key, seq, poison, oversize)
		SELECT * FROM unnest($1::text[], $2::text[], $3::int[], $4::bool[], $5::bool[])`, ids, okeys, seqs, poison, oversize); err != nil {
		return "", fmt.Errorf("insert orders: %w", err)
	}
	if err := outbox.Add(ctx, tx, msgs...); err != nil {
		return "", err
	}
	if err := tx.Commit(ctx); err != nil {
		if errors.Is(err, pgx.ErrTxCommitRollback) {
			return "", err
		}
		return ids[0], err
	}
	return ids[0], nil
}
