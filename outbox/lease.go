package outbox

import (
	"context"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/reliable-go/reliable"
)

func newMessage() *reliable.Message { return &reliable.Message{} }

// renewLoop extends this relay's leases every LeaseTTL/3. A key whose lease
// is no longer ours (it expired and another relay took it) is dropped as
// soon as its in-flight row, if any, is done; a key whose lease could not be
// renewed in time stops being published (takeBatch checks validUntil).
func (r *Relay) renewLoop(ctx context.Context) {
	t := time.NewTicker(r.cfg.LeaseTTL / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := r.renew(ctx); err != nil && ctx.Err() == nil {
			r.noteError(err)
			r.log.Warn("renewing leases failed; publishing pauses when they near expiry", slog.Any("error", err))
		}
	}
}

func (r *Relay) renew(ctx context.Context) error {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, r.cfg.LeaseTTL/3)
	defer cancel()
	// Only the keys this relay works: a lease it forgot expires.
	r.mu.Lock()
	held := make([]string, 0, len(r.lanes))
	for name := range r.lanes {
		held = append(held, name)
	}
	r.mu.Unlock()
	names, err := r.queryStringsAsync(ctx, `UPDATE reliable_outbox_leases SET expires_at = now() + $2 * interval '1 millisecond'
		WHERE owner = $1 AND lane = ANY($3::text[]) RETURNING lane`, r.cfg.Instance, r.cfg.LeaseTTL.Milliseconds(), held)
	if err != nil {
		return err
	}
	ours := make(map[string]bool, len(names))
	for _, n := range names {
		ours[n] = true
	}
	valid := start.Add(r.cfg.LeaseTTL - r.cfg.LeaseTTL/10)
	r.mu.Lock()
	defer r.mu.Unlock()
	lost := 0
	for name, l := range r.lanes {
		switch {
		case ours[name]:
			l.validUntil = valid
		case l.claimedAt.After(start):
			// Claimed after the renewal started (not in held, or committed
			// after its snapshot): its lease is fresh.
		default:
			l.lost = true
			lost++
			if !l.inflight && !l.refilling {
				r.dropLaneLocked(l)
			}
		}
	}
	if lost > 0 {
		r.log.Warn("leases lost to another relay (this relay was too slow to renew)", slog.Int("keys", lost))
	}
	r.kick(r.kickWork)
	return nil
}

// listen wakes the claimer on every notification from Add, over a dedicated
// connection taken from the pool, and reconnects with backoff.
func (r *Relay) listen(ctx context.Context) {
	for attempt := 1; ctx.Err() == nil; attempt++ {
		err := r.listenOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		r.noteError(err)
		d := r.cfg.Backoff.Delay(attempt)
		r.log.Warn("LISTEN connection failed; polling until it is back",
			slog.Duration("backoff", d), slog.Any("error", err))
		sleepOrDone(ctx, d)
	}
}

func (r *Relay) listenOnce(ctx context.Context) error {
	pc, err := r.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	// A listening connection must not go back to the pool.
	conn := pc.Hijack()
	defer func() { _ = conn.Close(context.WithoutCancel(ctx)) }()
	var schema string
	if err := conn.QueryRow(ctx, `SELECT current_schema()`).Scan(&schema); err != nil {
		return err
	}
	if _, err := conn.Exec(ctx, `LISTEN `+pgx.Identifier{NotifyChannel}.Sanitize()); err != nil {
		return err
	}
	r.newRows.Store(true)
	r.kick(r.kickClaim) // rows added while nobody listened
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		if n.Payload == schema {
			r.newRows.Store(true)
			r.kick(r.kickClaim)
		}
	}
}
