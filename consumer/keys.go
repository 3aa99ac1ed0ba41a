package consumer

import (
	"context"
	"log/slog"
	"strconv"
	"time"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/retry"
)

// StaleReporting is implemented by a subscriber whose deliveries report,
// through reliable.Delivery.Stale, that their partition or queue changed
// hands, for as long as the delivery lives (settled or not). The consumer
// then keeps the retry table's blocked keys in memory (retry.KeyCache) and
// checks a key without a round trip; with any other subscriber every
// message asks the table. The SDK's Kafka and RabbitMQ subscribers and the
// reliabletest broker qualify.
type StaleReporting interface {
	ReportsStale() bool
}

// keyCache returns a cache of rt's blocked keys when both rt and sub allow
// one, else nil.
func keyCache(sub reliable.Subscriber, rt RetryTable) *retry.KeyCache {
	// Exactly *retry.Table: a type that embeds it may override Park, which
	// the cache's Park would bypass.
	t, ok := rt.(*retry.Table)
	if !ok {
		return nil
	}
	switch s := sub.(type) {
	case StaleReporting:
		if !s.ReportsStale() {
			return nil
		}
	case reliable.StaleReporter:
	default:
		return nil
	}
	return t.NewKeyCache()
}

// anchor is the latest delivery of a partition or queue, and the load of the
// blocked-key cache that answers for its keys.
type anchor struct {
	d    *reliable.Delivery
	load uint64
}

// ownership returns the load of the blocked-key cache after which the cache
// may answer for d's key, and records d as its source's latest delivery.
//
// While the source's previous delivery is unsettled and not stale, the
// partition or queue has stayed ours since that delivery came (a claim
// ends, or a channel closes, before the broker gives the source to another
// consumer; RabbitMQ moves a single-active queue only once the active
// consumer has nothing unacked), so d needs the same load as that delivery.
// Otherwise ownership may have changed meanwhile: d needs a load that starts
// now, and one is requested. Run calls it from its loop only.
func (c *Consumer) ownership(owned map[string]anchor, d *reliable.Delivery) uint64 {
	if c.keys == nil {
		return 0
	}
	m := d.Message
	src := m.Topic + "\x00" + m.Delivery.Queue + "\x00" + strconv.Itoa(int(m.Delivery.Partition))
	a, ok := owned[src]
	if !ok || a.d.Settled() || a.d.Stale() {
		a.load = c.loadStarted.Load() + 1
		select {
		case c.loadReq <- struct{}{}:
		default: // a request is pending; its load starts after now
		}
	}
	a.d = d
	owned[src] = a
	return a.load
}

// isBlocked reports whether j's key has entries waiting in the retry table.
// The cache answers "not blocked" without a round trip once the load j
// needs succeeded; otherwise, and for a key the cache holds, the table is
// asked.
func (c *Consumer) isBlocked(ctx context.Context, j *job) (bool, error) {
	key := j.d.Message.Key
	if c.keys == nil {
		return c.cfg.RetryTable.Blocked(ctx, key)
	}
	// Only while the listener hears other processes' announcements: a key
	// parked by a consumer of another topic sharing the table, or re-blocked
	// by an operator's RetryNow, reaches the cache that way alone. Listening
	// is asked after the wait for the load, so that the deliveries that
	// arrive at start-up, before the listener listens, wait for the first
	// load (which waits for the listener, see startKeyCache) instead of
	// asking the table one by one, each on a new connection.
	if c.awaitLoad(ctx, j.keysLoad) && c.keys.Listening() && !c.keys.MaybeBlocked(key) {
		return false, nil
	}
	return c.keys.Blocked(ctx, key)
}

// loadWait bounds how long a delivery waits for the load of the blocked-key
// cache it needs before it asks the table itself: one load answers for all
// the deliveries that wait for it (after a rebalance, at start-up).
const loadWait = time.Second

// awaitLoad waits until the load n of the blocked-key cache succeeded, up
// to loadWait, and reports whether it did.
func (c *Consumer) awaitLoad(ctx context.Context, n uint64) bool {
	if c.loadDone.Load() >= n {
		return true
	}
	timer := time.NewTimer(loadWait)
	defer timer.Stop()
	for {
		ch := *c.loaded.Load()
		if c.loadDone.Load() >= n {
			return true
		}
		select {
		case <-ch:
		case <-timer.C:
			return false
		case <-ctx.Done():
			return false
		}
	}
}

// listenerWait bounds how long after start-up a load of the blocked-key
// cache that succeeded waits for the listener to listen before it lets the
// deliveries that need it go on; it is below loadWait, so that a listener
// that is slow or cannot listen at all holds them once, half a second at
// most, and they then ask the table as they would have (isBlocked).
const listenerWait = 500 * time.Millisecond

// awaitListener waits until the blocked-key cache's listener listens or
// until deadline, polling (this runs once, at start-up). It returns false
// when ctx ended first.
func (c *Consumer) awaitListener(ctx context.Context, deadline time.Time) bool {
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !c.keys.Listening() && time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return false
		case <-tick.C:
		}
	}
	return true
}

// startKeyCache runs the blocked-key cache's loads and its listener until
// ctx ends; the returned channel closes when both stopped.
//
// At start-up the first load that succeeds is published only once the
// listener listens (or after listenerWait): the cache answers only while
// the listener hears (isBlocked), so publishing it earlier would send the
// first deliveries to the table one by one. Delaying the publication of a
// load delays the cache's answers, never widens them: the load still
// started after the deliveries that wait for it arrived.
func (c *Consumer) startKeyCache(ctx context.Context) <-chan struct{} {
	done := make(chan struct{})
	if c.keys == nil {
		close(done)
		return done
	}
	listened := make(chan struct{})
	go func() {
		defer close(listened)
		_ = c.keys.Run(ctx, c.cfg.Logger)
	}()
	go func() {
		defer close(done)
		defer func() { <-listened }()
		listenBy := time.Now().Add(listenerWait)
		startedUp := false // the listener listened once, or listenBy passed
		for {
			select {
			case <-ctx.Done():
				return
			case <-c.loadReq:
			}
			for attempt := 1; ; attempt++ {
				n := c.loadStarted.Add(1)
				err := c.keys.Load(ctx)
				if err == nil {
					if !startedUp {
						if startedUp = c.awaitListener(ctx, listenBy); !startedUp {
							return
						}
					}
					c.loadDone.Store(n)
					next := make(chan struct{})
					close(*c.loaded.Swap(&next))
					break
				}
				if ctx.Err() != nil {
					return
				}
				// Until a load succeeds every message asks the table.
				c.cfg.Logger.Warn("consumer: loading the retry table's blocked keys failed", slog.String("error", err.Error()))
				if reliable.Sleep(ctx, c.cfg.Backoff.Delay(attempt)) != nil {
					return
				}
			}
		}
	}()
	return done
}
