package outbox

import (
	"context"
	"log/slog"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/reliable-go/reliable/internal/pgplan"
)

// claimLoop leases keys with pending rows and reads their rows ahead, on
// every notification, every PollInterval, and whenever lanes were released
// or emptied.
func (r *Relay) claimLoop(ctx context.Context) {
	// Poll fast right after activity (Add notifies at most every
	// notifyEvery per process, so rows may arrive unannounced), slowing down
	// to PollInterval while idle.
	fast := min(25*time.Millisecond, r.cfg.PollInterval)
	idle := fast
	failures := 0
	// A claim is due when rows were announced or keys released, when the
	// last one found keys, and at least every fast interval. Refills alone
	// (a few deep keys read on every few milliseconds) do not make one due:
	// a claim then walks keys this relay holds already, and finds nothing
	// (seen: 210 empty claims a second, half a core of PostgreSQL).
	var lastClaim time.Time
	claimDue := true
	for ctx.Err() == nil {
		if r.cfg.Mode == ModeLog && !r.logActive.Load() {
			// Polling instead of the log: keys the log fed and left empty
			// go back, as planMark would have released them.
			r.releaseIdle(ctx, 0)
		}
		more, err := r.refill(ctx)
		claimed := 0
		// While the log reader streams it finds new rows; polling only
		// catches what it skipped, every PollInterval.
		every, log := fast, r.logActive.Load()
		if log && !r.claimFull.Load() {
			every = r.cfg.PollInterval // no backlog beyond what the relay holds
		}
		if r.newRows.Swap(false) && !log || time.Since(lastClaim) >= every {
			claimDue = true
		}
		if err == nil && claimDue {
			claimed, err = r.claim(ctx)
			lastClaim = time.Now()
			claimDue = err != nil || claimed > 0
			more = more || claimed > 0
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
			// There may be more right away; but while rows trickle in, a
			// claim per row would keep PostgreSQL and this process busy
			// (one transaction each) for nothing: gather for a moment.
			idle = fast
			if claimed > 0 && claimed < r.cfg.ClaimBatch/4 {
				sleepOrDone(ctx, claimGather)
			}
			continue
		}
		t := time.NewTimer(idle)
		select {
		case <-ctx.Done():
		case <-r.kickClaim:
			idle = fast
		case <-t.C:
			idle = min(idle*2, r.cfg.PollInterval)
		}
		t.Stop()
	}
}

// claimGather is how long the claim loop waits after a claim that found
// only a few keys: a few milliseconds of latency for far fewer claim
// transactions while rows trickle in.
const claimGather = 5 * time.Millisecond

// claimSQL leases up to $2 keys with pending rows, skipping keys leased by
// any live relay (this one included) and keys blocked by a dead row (unless
// $4). The upsert takes over only expired leases, so two relays never both
// win a key (L19).
//
// It walks the distinct keys, not the rows: a loose index scan of
// reliable_outbox_lane_id (the next key after the last one, one index probe
// each), starting after the cursor $3, and stops as soon as it found $2
// claimable keys. Each key costs a few index probes (its lease, a dead row,
// a pending row), however many rows it has, so a claim costs what it
// returns plus the leased keys it passes, never the depth of the backlog.
// (Before, the claim scanned rows in ID order: when every pending key was
// leased, 100 keys x 10k rows, each claim read the whole backlog and found
// nothing.) The probes are scalar subqueries inside CASE, so they run per
// key, in order, and stop at the first that rules the key out: the planner
// cannot turn them into joins that hash every lease or every dead row, which
// grows linear once the hash spills (about 100k dead rows). The pending
// probe orders by id so that it walks the key's (lane, id) index entries
// rather than the table from its start.
//
// Keys are claimed in key order from the cursor, round-robin: every key
// with pending rows is reached within one walk of the key space.
const claimSQL = `WITH RECURSIVE walk(lane) AS (
		(SELECT o.lane FROM reliable_outbox o WHERE o.lane > $3 ORDER BY o.lane LIMIT 1)
		UNION ALL
		SELECT (SELECT o.lane FROM reliable_outbox o WHERE o.lane > w.lane ORDER BY o.lane LIMIT 1)
		FROM walk w WHERE w.lane IS NOT NULL
	), cand AS (
		SELECT w.lane FROM walk w
		WHERE w.lane IS NOT NULL AND CASE
			WHEN (SELECT l.expires_at > now() FROM reliable_outbox_leases l WHERE l.lane = w.lane) THEN false
			WHEN NOT $4 AND (SELECT true FROM reliable_outbox d WHERE d.lane = w.lane AND d.dead_at IS NOT NULL LIMIT 1) THEN false
			ELSE coalesce((SELECT true FROM reliable_outbox p WHERE p.lane = w.lane AND p.dead_at IS NULL ORDER BY p.id LIMIT 1), false)
		END
		LIMIT $2
	)
	INSERT INTO reliable_outbox_leases AS l (lane, owner, expires_at)
	SELECT lane, $1, now() + $5 * interval '1 millisecond' FROM cand ORDER BY lane
	ON CONFLICT (lane) DO UPDATE SET owner = EXCLUDED.owner, expires_at = EXCLUDED.expires_at
	WHERE l.expires_at <= now()
	RETURNING lane`

// claimedRowsSQL reads the first $3 rows of each key leased by $1 in this
// transaction: the claim set their expiry to exactly now() + TTL, and now()
// is the transaction's start time.
const claimedRowsSQL = `SELECT o.id, o.lane, o.msg_id, o.topic, o.key, o.type, o.headers, o.payload, o.event_time, o.attempts
	FROM reliable_outbox_leases l
	CROSS JOIN LATERAL (
		SELECT * FROM reliable_outbox o
		WHERE o.lane = l.lane AND o.dead_at IS NULL
		ORDER BY o.id
		LIMIT $3
	) o
	WHERE l.owner = $1 AND l.expires_at = now() + $2 * interval '1 millisecond'
	ORDER BY o.lane, o.id`

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
	// Claims go on while publishing is paused for an outage: when the pause
	// ends, other keys' rows are ready beside a row that was failing, so
	// the next call tells a broker outage from a row that fails alone.
	// A claimed key reads at least one row, so claims stop while the
	// buffer is full.
	//
	// Every PollInterval the claim also sweeps: it deletes the leases under
	// this relay's Instance of keys it does not work, so they are claimed at
	// once (see sweepSQL). The sweep excludes every other lease write of
	// this relay meanwhile (leaseMu), so its list of the keys worked is
	// complete.
	sweep := time.Since(r.lastSweep) >= r.cfg.PollInterval
	if sweep {
		r.leaseMu.Lock()
		defer r.leaseMu.Unlock()
	} else {
		r.leaseMu.RLock()
		defer r.leaseMu.RUnlock()
	}
	r.mu.Lock()
	room := min(r.cfg.MaxKeys-len(r.lanes), r.cfg.ClaimBatch, r.cfg.MaxBufferedRows-r.buffered)
	window := r.windowLocked(room)
	held := len(r.lanes)
	var worked []string
	if sweep && room > 0 {
		worked = make([]string, 0, len(r.lanes))
		for name := range r.lanes {
			worked = append(worked, name)
		}
	}
	r.mu.Unlock()
	r.claimFull.Store(room <= 0)
	if room <= 0 {
		return 0, nil
	}

	start := time.Now()
	names, got, snap, swept, err := r.claimFrom(ctx, r.claimCursor, room, window, sweep, worked)
	if err == nil && sweep {
		r.lastSweep = time.Now()
		if swept > 0 {
			r.mu.Lock()
			r.stats.OrphanLeases += uint64(swept)
			r.mu.Unlock()
			r.log.Warn("took back leases held under this relay's Instance for keys it did not work (a statement of a killed run, or a claim whose reply was lost, committed late)",
				slog.Int("keys", swept))
		}
	}
	if err == nil && len(names) < room && r.claimCursor != "" {
		// The walk reached the last key: go on from the first (the first
		// walk's snapshot is the older one, which is safe for both).
		r.claimCursor = ""
		var more []string
		var moreGot map[string][]*row
		more, moreGot, _, _, err = r.claimFrom(ctx, "", room-len(names), window, false, nil)
		names = append(names, more...)
		for k, v := range moreGot {
			got[k] = v
		}
	}
	if err == nil && len(names) > 0 {
		r.claimCursor = slices.Max(names)
	}
	r.mu.Lock()
	r.stats.ClaimQueries++
	r.stats.ClaimTime += time.Since(start)
	r.mu.Unlock()
	r.log.Debug("claim", slog.Int("held", held), slog.Int("claimed", len(names)), slog.Duration("took", time.Since(start)))
	if err != nil || len(names) == 0 {
		return 0, err
	}
	return r.adopt(ctx, start, names, got, window, snap)
}

// sweepSQL deletes the leases under this relay's Instance ($1) of keys it
// does not work ($2): orphans, which nothing else frees before they expire.
// Claims skip them (a live relay's lease) and renewals do not extend them
// (they extend only the keys worked), so a key under one waited up to
// LeaseTTL. They come from statements that committed after their relay gave
// up on them: a killed relay's claim that was on the wire, behind a proxy
// or waiting on a lock, commits after the restarted relay took its
// Instance's leases over (issue 19); a claim whose reply was lost to a
// broken connection commits all the same. Run in the claim's transaction
// before claimSQL, so the keys are claimed again at once.
const sweepSQL = `DELETE FROM reliable_outbox_leases
	WHERE owner = $1 AND lane NOT IN (SELECT unnest($2::text[]))
	RETURNING lane`

// claimFrom runs one claim walk from cursor: one round trip, one
// transaction: lease, then read the leased keys' first rows with a snapshot
// taken after the lease was won, so a key that another relay just drained
// is read without the rows it deleted. With sweep it first deletes the
// orphaned leases (see sweepSQL; worked lists every key the relay works)
// and returns how many.
//
// In ModeLog it also returns a snapshot taken by a statement before the
// read (so older than the read's), which lets log rows join the lanes
// (see feed): a row visible to it is visible to the read.
func (r *Relay) claimFrom(ctx context.Context, cursor string, room, window int, sweep bool, worked []string) ([]string, map[string][]*row, *snapshot, int, error) {
	logMode := r.cfg.Mode == ModeLog
	b := &pgx.Batch{}
	b.Queue(asyncCommit)
	if sweep {
		if worked == nil {
			worked = []string{}
		}
		b.Queue(sweepSQL, r.cfg.Instance, worked)
	}
	b.Queue(claimSQL, r.cfg.Instance, room, cursor, r.cfg.ReleaseOnDead, r.cfg.LeaseTTL.Milliseconds())
	if logMode {
		b.Queue(`SELECT pg_current_snapshot()::text`)
	}
	b.Queue(claimedRowsSQL, r.cfg.Instance, r.cfg.LeaseTTL.Milliseconds(), window)
	br := r.pool.SendBatch(ctx, b)
	return func() ([]string, map[string][]*row, *snapshot, int, error) {
		defer br.Close()
		if _, err := br.Exec(); err != nil {
			return nil, nil, nil, 0, err
		}
		swept := 0
		if sweep {
			tag, err := br.Exec()
			if err != nil {
				return nil, nil, nil, 0, err
			}
			swept = int(tag.RowsAffected())
		}
		rows, err := br.Query()
		if err != nil {
			return nil, nil, nil, 0, err
		}
		names, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return nil, nil, nil, 0, err
		}
		var snap *snapshot
		if logMode {
			var text string
			if err := br.QueryRow().Scan(&text); err != nil {
				return nil, nil, nil, 0, err
			}
			if snap, err = parseSnapshot(text); err != nil {
				return nil, nil, nil, 0, err
			}
		}
		rows, err = br.Query()
		if err != nil {
			return nil, nil, nil, 0, err
		}
		got, err := scanRows(rows)
		if err != nil {
			return nil, nil, nil, 0, err
		}
		return names, got, snap, swept, br.Close()
	}()
}

// adopt makes lanes of the keys a claim leased.
func (r *Relay) adopt(ctx context.Context, start time.Time, names []string, got map[string][]*row, window int, snap *snapshot) (int, error) {
	// claimedAt is after the commit, so a renewal that starts later sees
	// the lease; validUntil counts from before the statement, conservatively.
	// It is read under r.mu: a renewal that started before it could have
	// listed the keys worked before these lanes joined, and must not take
	// them for lost (they would be dropped with their lease still ours).
	valid := start.Add(r.cfg.LeaseTTL - r.cfg.LeaseTTL/10)
	lanes := make([]*lane, 0, len(names))
	r.mu.Lock()
	claimed := time.Now()
	r.stats.KeysLeased += uint64(len(names))
	for _, name := range names {
		// A lane whose release is being marked is done: the mark committed
		// (the key was free to claim) and drops it once it returns, so the
		// key gets a new lane.
		if l := r.lanes[name]; l != nil && !l.releasing {
			// Our own lease had lapsed (renewals failed) and nobody took the
			// key meanwhile: it is ours again, rows and all.
			l.validUntil, l.claimedAt, l.lost = valid, claimed, false
			r.catchUpLocked(l)
			continue
		}
		l := &lane{name: name, claimedAt: claimed, validUntil: valid, refilling: true}
		if s, ok := r.tracker.skippedRow(name); ok {
			// The log reader skipped a row of the key (it had no lane),
			// perhaps after this claim's read: the lane reads until it
			// has it before it takes later rows from the log, or those
			// would be published first (placeSnap drops it if read or
			// gone).
			l.seen = append(l.seen, s)
		}
		r.lanes[name] = l
		lanes = append(lanes, l)
	}
	r.mu.Unlock()
	if len(lanes) == 0 {
		return len(names), nil
	}
	return len(names), r.placeSnap(ctx, lanes, got, window, snap, true)
}

// catchUpLocked makes a lane taken back "rows and all" read the row of its
// key that the log reader skipped while the lane was lost (see feed), if it
// has not read it, before it takes later rows of the log, as feed does for
// a lane that is full.
func (r *Relay) catchUpLocked(l *lane) {
	s, ok := r.tracker.skippedRow(l.name)
	if !ok || s.id <= l.lastID {
		return
	}
	l.seen = append(l.seen, s)
	if l.refilling {
		return // placeSnap reads on
	}
	l.full = true
	if len(l.rows) == 0 && !l.inflight && !l.queued {
		l.refilling = true
		r.refills = append(r.refills, l)
		r.kick(r.kickClaim)
	}
}

// refill reads on for lanes whose read-ahead ran out. It reports whether
// there was anything to do.
func (r *Relay) refill(ctx context.Context) (bool, error) {
	// Only as many lanes as the buffer has room for, one row each at
	// least; the rest wait until marks free room.
	r.mu.Lock()
	n := min(len(r.refills), r.cfg.MaxBufferedRows-r.buffered)
	var lanes []*lane
	if n > 0 {
		lanes = append(lanes, r.refills[:n]...)
		r.refills = append(r.refills[:0], r.refills[n:]...)
	}
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
	r.mu.Lock()
	for i, l := range lanes {
		names[i], after[i] = l.name, l.lastID
	}
	window := r.windowLocked(len(lanes))
	r.mu.Unlock()

	start := time.Now()
	defer func() {
		r.log.Debug("read", slog.Int("lanes", len(lanes)), slog.Duration("took", time.Since(start)))
	}()
	if r.cfg.Mode == ModeLog {
		// The snapshot lets log rows join the lanes (see feed).
		got, snap, err := r.readSnapshot(ctx, names, after, window)
		if err != nil {
			return err
		}
		return r.placeSnap(ctx, lanes, got, window, snap, true)
	}
	var got map[string][]*row
	err := pgplan.Query(ctx, r.pool, func(rows pgx.Rows) (err error) {
		got, err = scanRows(rows)
		return err
	}, fetchSQL, names, after, window)
	if err != nil {
		return err
	}
	return r.place(ctx, lanes, got, window)
}

// scanRows reads outbox rows into messages, grouped by lane in ID order.
func scanRows(rows pgx.Rows) (map[string][]*row, error) {
	defer rows.Close()
	got := map[string][]*row{}
	for rows.Next() {
		var (
			rw        row
			laneName  string
			m         = newMessage()
			eventTime time.Time
		)
		if err := rows.Scan(&rw.id, &laneName, &m.ID, &m.Topic, &m.Key, &m.Type, &m.Headers, &m.Payload, &eventTime, &rw.attempts); err != nil {
			return nil, err
		}
		decodeStored(m)
		m.Time = eventTime
		rw.msg = m
		got[laneName] = append(got[laneName], &rw)
	}
	return got, rows.Err()
}

// place hands rows read with the given window to their lanes and releases
// the lanes that turned out empty.
func (r *Relay) place(ctx context.Context, lanes []*lane, got map[string][]*row, window int) error {
	return r.placeSnap(ctx, lanes, got, window, nil, true)
}

// placeSnap is place for a read with the given snapshot (nil: unknown);
// release says whether lanes that read nothing are released (a key the
// log reader just leased stays, for the log rows that follow).
func (r *Relay) placeSnap(ctx context.Context, lanes []*lane, got map[string][]*row, window int, snap *snapshot, release bool) error {
	var empty []string
	now := time.Now()
	r.mu.Lock()
	for _, l := range lanes {
		l.refilling = false
		rs := got[l.name]
		if snap != nil {
			l.snap = snap
		}
		if len(rs) > 0 {
			l.lastID = rs[len(rs)-1].id
		}
		more := l.unread()
		if l.lost {
			r.dropLaneLocked(l)
			continue
		}
		if len(rs) == 0 {
			switch {
			case more:
				// The log showed rows during the read: read again.
				l.refilling = true
				r.refills = append(r.refills, l)
			case !release || r.logActive.Load():
				l.full = false
				l.idleSince = now
			default:
				empty = append(empty, l.name)
			}
			continue
		}
		for _, rw := range rs {
			rw.l = l
		}
		l.rows = append(l.rows, rs...)
		r.buffered += len(rs)
		l.full = len(rs) == window || more
		l.idleSince = now
		r.enqueueLocked(l)
	}
	r.mu.Unlock()
	r.kick(r.kickWork)
	if len(empty) == 0 {
		return nil
	}
	// Release in the database first: until then the lanes stay ours, so a
	// claim of this relay does not take them again meanwhile.
	if _, err := r.execAsync(ctx, `DELETE FROM reliable_outbox_leases WHERE owner = $1 AND lane = ANY($2::text[])`, r.cfg.Instance, empty); err != nil {
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
	r.stats.KeysReturned += uint64(len(empty))
	for _, name := range empty {
		if l := r.lanes[name]; l != nil && !l.inflight {
			r.dropLaneLocked(l)
		}
	}
	r.mu.Unlock()
	return nil
}
