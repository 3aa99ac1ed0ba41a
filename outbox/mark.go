package outbox

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"time"

	"github.com/reliable-go/reliable"
)

// markLoop records the outcome of published rows: confirmed rows are deleted
// or archived, dead rows marked, and emptied keys released, in one statement
// per batch. Only then does a key's next row become publishable, so a key
// never has two rows in flight and a row is never marked before its confirm.
func (r *Relay) markLoop(ctx context.Context) {
	for items := range r.marks {
		// Gather what else is waiting, so one statement marks many batches.
	more:
		for len(items) < 4*r.cfg.BatchSize {
			select {
			case next, ok := <-r.marks:
				if !ok {
					break more
				}
				items = append(items, next...)
			default:
				break more
			}
		}
		if ctx.Err() != nil {
			r.abandon(items) // shutdown timed out; keep draining so workers finish
			continue
		}
		p := r.planMark(items)
		marked := false
		for attempt := 1; ; attempt++ {
			err := r.execMark(ctx, p)
			if err == nil {
				marked = true
				break
			}
			if ctx.Err() != nil {
				// Shutdown timed out: the rows stay pending and are published
				// again by whoever leases their keys next.
				r.log.Warn("rows confirmed but not marked at shutdown; they will be published again",
					slog.Int("rows", len(items)), slog.Any("error", err))
				r.abandon(items)
				break
			}
			r.noteError(err)
			d := r.cfg.Backoff.Delay(attempt)
			r.log.Warn("marking rows failed, retrying", slog.Int("rows", len(items)),
				slog.Duration("backoff", d), slog.Any("error", err))
			_ = reliable.Sleep(ctx, d)
		}
		if !marked {
			continue
		}
		r.applyMark(p)
		for _, it := range p.dead {
			err := r.cfg.Notifier.Notify(ctx, DeadRow{
				ID: it.row.id, Message: it.row.msg.Clone(), Attempts: it.row.attempts + 1,
				Err: it.err, KeyBlocked: !r.cfg.ReleaseOnDead,
			})
			if err != nil {
				r.log.Error("notifier failed", slog.Int64("row", it.row.id), slog.Any("error", err))
			}
		}
	}
}

type markPlan struct {
	items    []markItem
	sent     []int64
	dead     []markItem
	deadIDs  []int64
	deadErrs []string
	release  []string
}

// planMark decides, before the statement runs, which keys the statement
// releases: those left with no row to publish and none known to wait. The
// lanes are in flight, so nothing else changes them meanwhile.
func (r *Relay) planMark(items []markItem) markPlan {
	p := markPlan{items: items}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, it := range items {
		l := it.row.l
		switch it.kind {
		case markSent:
			p.sent = append(p.sent, it.row.id)
		case markDead:
			p.dead = append(p.dead, it)
			p.deadIDs = append(p.deadIDs, it.row.id)
			p.deadErrs = append(p.deadErrs, errString(it.err))
			if !r.cfg.ReleaseOnDead {
				l.releasing = true
				p.release = append(p.release, l.name)
				continue
			}
		}
		// While the log reader streams, an emptied key stays leased for a
		// moment, for the rows the log brings next (see releaseIdle).
		if len(l.rows) <= 1 && !l.full && !r.logActive.Load() {
			l.releasing = true
			p.release = append(p.release, l.name)
		}
	}
	return p
}

// errString is err's message as text PostgreSQL holds: an error may quote a
// key's raw bytes, and one NUL would fail the whole mark statement. It is a
// reason, not data, so the lossy rendering is fine.
func errString(err error) string {
	if err == nil {
		return "unknown error"
	}
	return strings.ToValidUTF8(strings.ReplaceAll(err.Error(), "\x00", `\x00`), "\uFFFD")
}

const markSQLDelete = `WITH sent AS (
		DELETE FROM reliable_outbox WHERE id = ANY($1::bigint[])
	), dead AS (
		UPDATE reliable_outbox o SET dead_at = now(), attempts = o.attempts + 1, last_error = e.err
		FROM unnest($2::bigint[], $3::text[]) AS e(id, err) WHERE o.id = e.id
	), released AS (
		DELETE FROM reliable_outbox_leases WHERE owner = $4 AND lane = ANY($5::text[])
	)
	SELECT 1`

const markSQLArchive = `WITH sent AS (
		DELETE FROM reliable_outbox WHERE id = ANY($1::bigint[])
		RETURNING id, lane, msg_id, topic, key, type, headers, payload, event_time, created_at, attempts, last_error
	), archived AS (
		INSERT INTO reliable_outbox_archive (id, lane, msg_id, topic, key, type, headers, payload, event_time, created_at, attempts, last_error)
		SELECT * FROM sent
		ON CONFLICT (id) DO NOTHING
	), dead AS (
		UPDATE reliable_outbox o SET dead_at = now(), attempts = o.attempts + 1, last_error = e.err
		FROM unnest($2::bigint[], $3::text[]) AS e(id, err) WHERE o.id = e.id
	), released AS (
		DELETE FROM reliable_outbox_leases WHERE owner = $4 AND lane = ANY($5::text[])
	)
	SELECT 1`

func (r *Relay) execMark(ctx context.Context, p markPlan) error {
	q := markSQLDelete
	if r.cfg.Sent == Archive {
		q = markSQLArchive
	}
	ctx, cancel := context.WithTimeout(ctx, r.cfg.PublishTimeout)
	defer cancel()
	start := time.Now()
	_, err := r.execAsync(ctx, q, p.sent, p.deadIDs, p.deadErrs, r.cfg.Instance, p.release)
	r.log.Debug("mark", slog.Int("sent", len(p.sent)), slog.Int("released", len(p.release)), slog.Duration("took", time.Since(start)))
	if err != nil {
		return errors.Join(errors.New("outbox: marking rows"), err)
	}
	return nil
}

// applyMark advances the lanes once the statement committed.
func (r *Relay) applyMark(p markPlan) {
	released := make(map[string]bool, len(p.release))
	for _, name := range p.release {
		released[name] = true
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stats.Marked += uint64(len(p.sent))
	r.stats.Dead += uint64(len(p.dead))
	r.stats.KeysReturned += uint64(len(p.release))
	refill := false
	r.tracker.done(p.sent)
	r.tracker.done(p.deadIDs)
	now := time.Now()
	for _, it := range p.items {
		l := it.row.l
		l.inflight = false
		r.stats.InFlight--
		if l.lost || released[l.name] {
			r.dropLaneLocked(l)
			continue
		}
		l.idleSince = now
		l.rows[0] = nil // the backing array must not keep it alive
		l.rows = l.rows[1:]
		r.buffered--
		if len(l.rows) > 0 {
			r.enqueueLocked(l)
			continue
		}
		if !l.full && r.cfg.Mode == ModeLog {
			// Kept for the log's next rows (see planMark): the log
			// reader, or polling's releaseIdle, gives it back when idle.
			continue
		}
		// Emptied but the last read was full: read on.
		l.refilling = true
		r.refills = append(r.refills, l)
		refill = true
	}
	if len(p.release) > 0 {
		r.newRows.Store(true) // a released key may have gained rows: claim
	}
	if len(p.release) > 0 || refill || len(r.refills) > 0 {
		// A released key may have gained rows since it was read, and lanes
		// may wait for buffer room to read on: claim and refill again.
		r.kick(r.kickClaim)
	}
	r.kick(r.kickWork)
}

// abandon forgets lanes whose rows could not be marked.
func (r *Relay) abandon(items []markItem) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, it := range items {
		it.row.l.inflight = false
		r.stats.InFlight--
		r.dropLaneLocked(it.row.l)
	}
}

// sleepOrDone waits d or until ctx ends.
func sleepOrDone(ctx context.Context, d time.Duration) bool {
	return reliable.Sleep(ctx, d) == nil
}
