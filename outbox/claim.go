package outbox

import (
	"context"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
)

// claimLoop leases keys with pending rows and reads their rows ahead, on
// every notification, every PollInterval, and whenever lanes were released
// or emptied.
func (r *Relay) claimLoop(ctx context.Context) {
	poll := time.NewTicker(r.cfg.PollInterval)
	defer poll.Stop()
	failures := 0
	for ctx.Err() == nil {
		more, err := r.refill(ctx)
		if err == nil {
			var n int
			n, err = r.claim(ctx)
			more = more || n > 0
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			failures++
			r.noteError(err)
			d := r.cfg.Backoff.Delay(failures)
			r.log.Warn("claiming keys failed", slog.Duration("backoff", d), slog.Any("error", err))
			sleepOrDone(ctx, d)
			continue
		}
		failures = 0
		if more {
			continue // there may be more right away
		}
		select {
		case <-ctx.Done():
		case <-r.kickClaim:
		case <-poll.C:
		}
	}
}

// claimSQL leases up to $3 keys whose oldest pending row is oldest, skipping
// keys leased by any live relay, keys this relay holds ($2), and keys blocked
// by a dead row (unless $5). The upsert takes over only expired leases, so
// two relays never both win a key (L19).
const claimSQL = `WITH cand AS (
		SELECT lane FROM (
			SELECT o.lane, o.id FROM reliable_outbox o
			WHERE o.dead_at IS NULL
			  AND o.lane <> ALL($2::text[])
			  AND NOT EXISTS (SELECT 1 FROM reliable_outbox_leases l WHERE l.lane = o.lane AND l.expires_at > now())
			  AND ($5 OR NOT EXISTS (SELECT 1 FROM reliable_outbox d WHERE d.lane = o.lane AND d.dead_at IS NOT NULL))
			ORDER BY o.id
			LIMIT $4
		) s
		GROUP BY lane
		ORDER BY min(id)
		LIMIT $3
	)
	INSERT INTO reliable_outbox_leases AS l (lane, owner, expires_at)
	SELECT lane, $1, now() + $6 * interval '1 millisecond' FROM cand ORDER BY lane
	ON CONFLICT (lane) DO UPDATE SET owner = EXCLUDED.owner, expires_at = EXCLUDED.expires_at
	WHERE l.expires_at <= now()
	RETURNING lane`

// fetchSQL reads up to $3 pending rows per lane after the given row IDs.
const fetchSQL = `SELECT o.id, o.lane, o.msg_id, o.topic, o.key, o.type, o.headers, o.payload, o.event_time, o.attempts
	FROM unnest($1::text[], $2::bigint[]) AS c(lane, after)
	CROSS JOIN LATERAL (
		SELECT * FROM reliable_outbox o
		WHERE o.lane = c.lane AND o.id > c.after AND o.dead_at IS NULL
		ORDER BY o.id
		LIMIT $3
	) o
	ORDER BY o.lane, o.id`

// claim leases new keys and reads their first rows. It returns the number of
// keys claimed.
func (r *Relay) claim(ctx context.Context) (int, error) {
	r.mu.Lock()
	room := min(r.cfg.MaxKeys-len(r.lanes), r.cfg.ClaimBatch)
	paused := time.Now().Before(r.pausedUntil)
	held := make([]string, 0, len(r.lanes))
	for name := range r.lanes {
		held = append(held, name)
	}
	r.mu.Unlock()
	if room <= 0 || paused {
		return 0, nil
	}

	start := time.Now()
	rows, err := r.pool.Query(ctx, claimSQL, r.cfg.ID, held, room, room*4,
		r.cfg.DeadReleasesKey, r.cfg.LeaseTTL.Milliseconds())
	if err != nil {
		return 0, err
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil || len(names) == 0 {
		return 0, err
	}
	// claimedAt is after the commit, so a renewal that starts later sees
	// the lease; validUntil counts from before the statement, conservatively.
	claimed := time.Now()
	lanes := make([]*lane, len(names))
	for i, name := range names {
		lanes[i] = &lane{name: name, claimedAt: claimed, validUntil: start.Add(r.cfg.LeaseTTL - r.cfg.LeaseTTL/10)}
	}
	r.mu.Lock()
	r.stats.Claims += uint64(len(lanes))
	for _, l := range lanes {
		l.refilling = true
		r.lanes[l.name] = l
	}
	r.mu.Unlock()
	if err := r.read(ctx, lanes); err != nil {
		// Keep the lanes; their leases expire or the next refill reads them.
		r.mu.Lock()
		r.refills = append(r.refills, lanes...)
		r.mu.Unlock()
		return len(lanes), err
	}
	return len(lanes), nil
}

// refill reads on for lanes whose read-ahead ran out. It reports whether
// there was anything to do.
func (r *Relay) refill(ctx context.Context) (bool, error) {
	r.mu.Lock()
	lanes := r.refills
	r.refills = nil
	r.mu.Unlock()
	if len(lanes) == 0 {
		return false, nil
	}
	if err := r.read(ctx, lanes); err != nil {
		r.mu.Lock()
		r.refills = append(r.refills, lanes...)
		r.mu.Unlock()
		return true, err
	}
	return true, nil
}

// read loads the next Window rows of each lane; lanes that turn out empty
// are released.
func (r *Relay) read(ctx context.Context, lanes []*lane) error {
	names := make([]string, len(lanes))
	after := make([]int64, len(lanes))
	byName := make(map[string]*lane, len(lanes))
	r.mu.Lock()
	for i, l := range lanes {
		names[i], after[i] = l.name, l.lastID
		byName[l.name] = l
	}
	r.mu.Unlock()

	rows, err := r.pool.Query(ctx, fetchSQL, names, after, r.cfg.Window)
	if err != nil {
		return err
	}
	got := make(map[string][]*row, len(lanes))
	for rows.Next() {
		var (
			rw        row
			laneName  string
			m         = newMessage()
			eventTime time.Time
		)
		if err := rows.Scan(&rw.id, &laneName, &m.ID, &m.Topic, &m.Key, &m.Type, &m.Headers, &m.Payload, &eventTime, &rw.attempts); err != nil {
			rows.Close()
			return err
		}
		m.Time = eventTime
		rw.msg = m
		rw.l = byName[laneName]
		got[laneName] = append(got[laneName], &rw)
	}
	if err := rows.Err(); err != nil {
		return err
	}

	var empty []string
	r.mu.Lock()
	for _, l := range lanes {
		l.refilling = false
		rs := got[l.name]
		if l.lost {
			r.dropLaneLocked(l)
			continue
		}
		if len(rs) == 0 {
			empty = append(empty, l.name)
			continue
		}
		l.rows = append(l.rows, rs...)
		l.lastID = rs[len(rs)-1].id
		l.full = len(rs) == r.cfg.Window
		r.enqueueLocked(l)
	}
	r.mu.Unlock()
	r.kick(r.kickWork)
	if len(empty) == 0 {
		return nil
	}
	// Release in the database first: until then the lanes stay ours, so a
	// claim of this relay does not take them again meanwhile.
	if _, err := r.pool.Exec(ctx, `DELETE FROM reliable_outbox_leases WHERE owner = $1 AND lane = ANY($2::text[])`, r.cfg.ID, empty); err != nil {
		r.mu.Lock()
		for _, name := range empty {
			if l := r.lanes[name]; l != nil {
				l.refilling = true
				r.refills = append(r.refills, l)
			}
		}
		r.mu.Unlock()
		return err
	}
	r.mu.Lock()
	r.stats.Released += uint64(len(empty))
	for _, name := range empty {
		if l := r.lanes[name]; l != nil && !l.inflight {
			r.dropLaneLocked(l)
		}
	}
	r.mu.Unlock()
	return nil
}
