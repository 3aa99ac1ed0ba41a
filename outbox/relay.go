package outbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/reliable-go/reliable"
)

// ErrNotMigrated means the outbox tables do not exist in the connection's
// schema: call Migrate first.
var ErrNotMigrated = errors.New("outbox: tables missing, run outbox.Migrate")

// ErrRunning is returned by Run while the relay is already running.
var ErrRunning = errors.New("outbox: relay already running")

// Relay moves committed outbox rows to the broker. See the package
// documentation for its guarantees. Create it with NewRelay and start it with
// Run; several relays, in one process or many, may work the same tables.
type Relay struct {
	pool *pgxpool.Pool
	pub  reliable.Publisher
	cfg  Config
	// async is pub when it can confirm each message on its own (see
	// publishEach); asyncOff is set once it said it cannot after all.
	async    reliable.AsyncPublisher
	asyncOff atomic.Bool
	// pgStopping is set when a statement saw PostgreSQL shutting down: the
	// log reader then closes its replication connection, whose walsender
	// would otherwise hold up the shutdown until wal_sender_timeout (it
	// waits for a confirm the relay cannot give while it cannot delete).
	pgStopping atomic.Bool
	awaiting   sync.WaitGroup // awaitConfirms goroutines
	log        *slog.Logger

	running  atomic.Bool
	stopping atomic.Bool // Run's context ended; it is settling
	started  atomic.Bool // Run passed its start-up checks and holds its ID
	// idErr is why the relay's ID lock was lost and not retaken, or nil.
	idErr atomic.Pointer[error]

	mu          sync.Mutex
	lanes       map[string]*lane
	readyQ      []*lane
	refills     []*lane
	pausedUntil time.Time
	outages     int       // consecutive outage backoffs (calls in which nothing was confirmed)
	backedOffAt time.Time // when the last of them began
	buffered    int       // rows held by lanes, bounded by MaxBufferedRows
	stats       Stats

	// claimCursor is the key after which the next claim walk starts; only
	// the claim loop uses it.
	claimCursor string
	// leaseMu orders lease writes against the sweep of orphaned leases (see
	// sweepSQL): claims hold it shared from their statement until their
	// keys are lanes (and releaseIdle from drop to release), a sweep holds
	// it exclusively, so every lease this relay's statements wrote is in
	// lanes while it runs. lastSweep is when the claim loop last swept.
	leaseMu   sync.RWMutex
	lastSweep time.Time
	// newRows says rows were announced (NOTIFY) or keys released since the
	// last claim: one is due.
	newRows atomic.Bool
	// claimFull says the last claim found no room (MaxKeys or the buffer):
	// a backlog may wait beyond what the relay holds.
	claimFull atomic.Bool

	// logActive says the log reader streams (ModeLog): polling slows to
	// PollInterval and keys fed by the log stay leased while idle briefly.
	logActive atomic.Bool
	// tracker follows the log's transactions until their rows are done;
	// nil unless the log reader streams.
	tracker *logTracker

	kickWork  chan struct{}
	kickClaim chan struct{}
	marks     chan []markItem
}

// lane is one key (ordering lane) leased by this relay, with the rows read
// ahead for it. At most one of its rows is in flight, always rows[0].
type lane struct {
	name       string
	rows       []*row
	lastID     int64     // highest row ID read
	full       bool      // the last read returned Window rows: more may wait
	inflight   bool      // rows[0] is being published or marked
	queued     bool      // in readyQ
	refilling  bool      // in refills or being refilled
	lost       bool      // the lease is no longer ours: drop when not in flight
	releasing  bool      // a mark statement releases the lease: a new claim makes a new lane
	validUntil time.Time // publish only while the lease surely holds
	claimedAt  time.Time
	// snap is the snapshot of the lane's last read from the table (ModeLog
	// reads), nil when unknown; seen holds rows the log showed while a read
	// was under way or while the lane was full (or, for a lane a polling
	// claim made, a row skipped while it had none), so the lane reads until it
	// has them (see unread); idleSince is when the lane last
	// gained or finished a row.
	snap      *snapshot
	seen      []seenRow
	idleSince time.Time
}

// unread drops the rows the log showed that the lane has read or that are
// gone (visible to its last read, yet not read), and says whether some
// remain, to be read.
func (l *lane) unread() bool {
	keep := l.seen[:0]
	for _, s := range l.seen {
		if s.id > l.lastID && (l.snap == nil || !l.snap.visible(s.xid)) {
			keep = append(keep, s)
		}
	}
	l.seen = keep
	return len(keep) > 0
}

type row struct {
	id       int64
	l        *lane
	msg      *reliable.Message
	attempts int
	// freeFailures counts failures not charged because the whole call
	// failed (taken for an outage); publishedAt is the relay's Published
	// count at the last of them.
	freeFailures int
	publishedAt  uint64
}

type markKind int

const (
	markSent markKind = iota
	markDead
)

type markItem struct {
	row  *row
	kind markKind
	err  error // markDead: why
}

// NewRelay returns a relay that reads the outbox tables through pool and
// publishes through pub, which should be durable (an adapter's publisher or a
// producer.Producer): the relay deletes a row as soon as Publish returned nil
// for it. The relay uses up to three of pool's connections for itself (one
// for LISTEN), plus one per concurrent statement.
func NewRelay(pool *pgxpool.Pool, pub reliable.Publisher, cfg Config) (*Relay, error) {
	var p reliable.Problems
	p.Addf(pool == nil, "pool is nil")
	p.Addf(pub == nil, "publisher is nil")
	if err := p.Err("outbox relay"); err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	r := &Relay{
		pool:      pool,
		pub:       pub,
		cfg:       cfg,
		log:       cfg.Logger.With(slog.String("component", "outbox relay"), slog.String("relay", cfg.Instance)),
		lanes:     make(map[string]*lane),
		kickWork:  make(chan struct{}, 1),
		kickClaim: make(chan struct{}, 1),
		marks:     make(chan []markItem, cfg.Publishers*2),
	}
	r.async, _ = pub.(reliable.AsyncPublisher)
	if mc := pool.Config().MaxConns; mc < 4 {
		r.log.Warn("pool has fewer than 4 connections; the relay needs one for LISTEN and one per concurrent statement",
			slog.Int("max_conns", int(mc)))
	}
	return r, nil
}

// Instance returns the relay's instance name, as recorded in the lease table.
func (r *Relay) Instance() string { return r.cfg.Instance }

// Stats returns what the relay did so far.
func (r *Relay) Stats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.stats
	s.Keys = len(r.lanes)
	s.Buffered = r.buffered
	return s
}

// Run relays rows until ctx ends, then stops taking new work, waits up to
// Config.ShutdownTimeout for publishes in flight and for marking what was
// confirmed, releases its leases and returns nil. Rows confirmed but not yet
// marked when the timeout hits are published again later (consumers
// deduplicate by message ID). Database and broker failures are retried with
// backoff and never end Run; it returns an error only when it cannot start
// (ErrNotMigrated, ErrRunning, ErrSequenceCached, ErrDuplicateInstance).
func (r *Relay) Run(ctx context.Context) error {
	if !r.running.CompareAndSwap(false, true) {
		return ErrRunning
	}
	defer r.running.Store(false)
	r.stopping.Store(false)
	stopWatch := context.AfterFunc(ctx, func() { r.stopping.Store(true) })
	defer stopWatch()
	if _, err := r.pool.Exec(ctx, `SELECT 1 FROM reliable_outbox_leases LIMIT 0`); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("%w: %w", ErrNotMigrated, err)
	}
	if err := r.checkSequence(ctx); err != nil {
		return err
	}
	idConn, err := r.takeID(ctx)
	if err != nil {
		return err
	}
	r.idErr.Store(nil)
	r.started.Store(true)
	defer r.started.Store(false)

	// Publishing and marking outlive ctx by up to ShutdownTimeout.
	workCtx, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	stopShutdownTimer := context.AfterFunc(ctx, func() {
		time.AfterFunc(r.cfg.ShutdownTimeout, cancelWork)
	})
	defer stopShutdownTimer()

	var bg, workers, marker sync.WaitGroup
	bg.Go(func() { idConn = r.holdID(ctx, idConn) })
	bg.Go(func() { r.listen(ctx) })
	bg.Go(func() { r.claimLoop(ctx) })
	bg.Go(func() { r.renewLoop(ctx) })
	bg.Go(func() { r.cleanupLoop(ctx) })
	if r.cfg.Mode == ModeLog {
		r.ensureSlot(ctx)
		bg.Go(func() { r.logLoop(ctx) })
	} else {
		r.mu.Lock()
		r.stats.LogState = logStateOff
		r.mu.Unlock()
	}
	marker.Go(func() { r.markLoop(workCtx) })
	for range r.cfg.Publishers {
		workers.Go(func() { r.workLoop(ctx, workCtx) })
	}
	r.kick(r.kickClaim)

	<-ctx.Done()
	workers.Wait()
	r.awaiting.Wait()
	close(r.marks)
	marker.Wait()
	bg.Wait()

	relCtx, cancel := context.WithTimeout(workCtx, 5*time.Second)
	defer cancel()
	if _, err := r.execAsync(relCtx, `DELETE FROM reliable_outbox_leases WHERE owner = $1`, r.cfg.Instance); err != nil {
		r.log.Warn("releasing leases on shutdown failed; they expire by themselves",
			slog.Duration("lease_ttl", r.cfg.LeaseTTL), slog.Any("error", err))
	}
	if idConn != nil {
		_ = idConn.Close(relCtx) // the ID is free for the next run once the leases are gone
	}
	r.mu.Lock()
	r.lanes = make(map[string]*lane)
	r.readyQ, r.refills = nil, nil
	r.buffered = 0
	r.mu.Unlock()
	return nil
}

func (r *Relay) kick(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// noteError records err in the stats.
func (r *Relay) noteError(err error) {
	if shuttingDown(err) {
		r.pgStopping.Store(true)
	}
	r.mu.Lock()
	r.stats.LastError = err.Error()
	r.stats.LastErrorAt = time.Now()
	r.mu.Unlock()
}

// shuttingDown reports whether err says PostgreSQL is shutting down or
// terminated the session (SQLSTATE class 57: admin_shutdown, crash_shutdown,
// cannot_connect_now).
func shuttingDown(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == "57P01" || pe.Code == "57P02" || pe.Code == "57P03")
}

// enqueueLocked makes l's head row publishable.
func (r *Relay) enqueueLocked(l *lane) {
	if l.queued || l.inflight || l.lost || l.refilling || len(l.rows) == 0 {
		return
	}
	l.queued = true
	r.readyQ = append(r.readyQ, l)
}

// dropLaneLocked forgets l; its lease, if still ours, was released or
// expires.
func (r *Relay) dropLaneLocked(l *lane) {
	if r.lanes[l.name] == l {
		delete(r.lanes, l.name)
	}
	r.buffered -= len(l.rows)
	l.rows = nil
}

// windowLocked is how many rows to read ahead for each of n lanes: Window,
// or less so that the rows held stay within MaxBufferedRows, at least one.
func (r *Relay) windowLocked(n int) int {
	free := r.cfg.MaxBufferedRows - r.buffered
	return max(1, min(r.cfg.Window, free/max(n, 1)))
}

// workLoop publishes batches of head rows until ctx ends.
func (r *Relay) workLoop(ctx, workCtx context.Context) {
	for ctx.Err() == nil {
		batch, wait := r.takeBatch(time.Now())
		if len(batch) == 0 {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
			case <-r.kickWork:
			case <-t.C:
			}
			t.Stop()
			continue
		}
		r.publish(workCtx, batch)
	}
}

// takeBatch takes the head rows of up to BatchSize ready lanes, or says how
// long to wait.
func (r *Relay) takeBatch(now time.Time) ([]*row, time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if now.Before(r.pausedUntil) {
		return nil, r.pausedUntil.Sub(now)
	}
	var batch []*row
	keep := r.readyQ[:0]
	for _, l := range r.readyQ {
		switch {
		case len(batch) >= r.cfg.BatchSize:
			keep = append(keep, l)
		case l.lost || l.inflight || len(l.rows) == 0:
			l.queued = false
			if l.lost && !l.inflight {
				r.dropLaneLocked(l)
			}
		case now.Add(r.cfg.PublishTimeout).After(l.validUntil):
			// The lease may lapse during the publish: wait for renewal.
			keep = append(keep, l)
		default:
			l.queued = false
			l.inflight = true
			batch = append(batch, l.rows[0])
		}
	}
	clear(r.readyQ[len(keep):])
	r.readyQ = keep
	r.stats.InFlight += len(batch)
	if len(batch) > 0 && len(r.readyQ) > 0 {
		r.kick(r.kickWork) // let another worker take the rest
	}
	return batch, 50 * time.Millisecond
}

// publish sends one batch and routes each row to the marker or to failure
// handling.
func (r *Relay) publish(ctx context.Context, batch []*row) {
	if r.async != nil && !r.asyncOff.Load() {
		if r.publishEach(ctx, batch) {
			return
		}
		r.asyncOff.Store(true)
		r.log.Info("publisher cannot confirm messages one by one, publishing in batches")
	}
	msgs := make([]*reliable.Message, len(batch))
	for i, rw := range batch {
		msgs[i] = rw.msg.Clone()
	}
	before := r.publishedCount()
	pctx, cancel := context.WithTimeout(ctx, r.cfg.PublishTimeout)
	start := time.Now()
	err := r.pub.Publish(pctx, msgs...)
	cancel()
	elapsed := time.Since(start)
	r.log.Debug("publish", slog.Int("messages", len(msgs)), slog.Duration("took", elapsed), slog.Bool("ok", err == nil))

	var ok, failed []*row
	var errs []error
	if err == nil {
		ok = batch
	} else {
		byID := map[string]error{}
		var pe *reliable.PublishError
		if errors.As(err, &pe) && len(pe.Failed) > 0 {
			for _, f := range pe.Failed {
				byID[f.MessageID] = f.Err
			}
		}
		for _, rw := range batch {
			e, listed := byID[rw.msg.ID]
			switch {
			case listed:
			case len(byID) == 0: // not a per-message report: nothing confirmed
				e = err
			default:
				ok = append(ok, rw)
				continue
			}
			failed = append(failed, rw)
			errs = append(errs, e)
		}
	}
	if len(ok) > 0 {
		r.mu.Lock()
		r.stats.Published += uint64(len(ok))
		r.mu.Unlock()
	}
	r.recordCall(len(failed), elapsed, err)

	var items []markItem
	for _, rw := range ok {
		items = append(items, markItem{row: rw, kind: markSent})
	}
	items = append(items, r.handleFailures(ctx, failed, errs, before, start)...)
	if len(items) > 0 {
		r.marks <- items
	}
}

// publishEach publishes batch with one PublishAsync per row and hands each
// confirmed row to the marker as soon as its own confirm arrives. The rows
// of a batch belong to different keys, so partitions and brokers: with one
// Publish call every row would wait for the slowest confirm of the batch,
// which made the relay's latency tail several times the broker's. The
// confirms are awaited in a goroutine (tracked by r.awaiting), so the worker
// goes back to take more rows at once; the rows in flight stay bounded by
// MaxBufferedRows. publishEach returns false, having sent nothing, when the
// publisher cannot publish asynchronously.
func (r *Relay) publishEach(ctx context.Context, batch []*row) bool {
	c := &confirmWait{
		batch:    batch,
		outcomes: make(chan outcome, len(batch)), // room for every done: it never blocks
		errs:     make([]error, len(batch)),
		settled:  make([]bool, len(batch)),
		start:    time.Now(),
		before:   r.publishedCount(),
	}
	pctx, cancel := context.WithTimeout(ctx, r.cfg.PublishTimeout)
	for i, rw := range batch {
		err := r.async.PublishAsync(pctx, rw.msg.Clone(), func(_ *reliable.Message, err error) {
			c.outcomes <- outcome{i, err}
		})
		switch {
		case err == nil:
			c.waiting++
		case i == 0 && errors.Is(err, errors.ErrUnsupported):
			cancel()
			return false
		default:
			c.errs[i] = err
		}
	}
	r.awaiting.Go(func() {
		defer cancel()
		r.awaitConfirms(ctx, pctx, c)
	})
	return true
}

// confirmWait is one publishEach call waiting for its confirms.
type confirmWait struct {
	batch    []*row
	outcomes chan outcome
	errs     []error
	settled  []bool
	waiting  int
	start    time.Time
	before   uint64 // the relay's Published count when the rows were sent
}

type outcome struct {
	i   int
	err error
}

// awaitConfirms marks each row of c as its confirm arrives, until all came
// or pctx (PublishTimeout) ends, then handles the failures.
func (r *Relay) awaitConfirms(ctx, pctx context.Context, c *confirmWait) {
	for c.waiting > 0 {
		select {
		case o := <-c.outcomes:
			// Take every outcome already there, so that one mark statement
			// covers the confirms of a whole broker response.
			group := []outcome{o}
			for more := true; more && len(group) < c.waiting; {
				select {
				case o := <-c.outcomes:
					group = append(group, o)
				default:
					more = false
				}
			}
			c.waiting -= len(group)
			var sent []markItem
			for _, o := range group {
				c.settled[o.i] = true
				if o.err != nil {
					c.errs[o.i] = o.err
					continue
				}
				sent = append(sent, markItem{row: c.batch[o.i], kind: markSent})
			}
			if len(sent) > 0 {
				r.mu.Lock()
				r.stats.Published += uint64(len(sent))
				r.mu.Unlock()
				r.marks <- sent
			}
		case <-pctx.Done():
			for i := range c.batch {
				if !c.settled[i] && c.errs[i] == nil {
					c.errs[i] = fmt.Errorf("outbox: no confirm within %s: %w: %w", r.cfg.PublishTimeout, reliable.ErrNotConfirmed, pctx.Err())
				}
			}
			c.waiting = 0
		}
	}
	elapsed := time.Since(c.start)

	var failed []*row
	var failedErrs []error
	for i, err := range c.errs {
		if err != nil {
			failed = append(failed, c.batch[i])
			failedErrs = append(failedErrs, err)
		}
	}
	var callErr error
	if len(failed) > 0 {
		callErr = fmt.Errorf("%d of %d messages not confirmed, first: %w", len(failed), len(c.batch), failedErrs[0])
	}
	r.log.Debug("publish each", slog.Int("messages", len(c.batch)), slog.Duration("took", elapsed), slog.Int("failed", len(failed)))
	r.recordCall(len(failed), elapsed, callErr)
	if dead := r.handleFailures(ctx, failed, failedErrs, c.before, c.start); len(dead) > 0 {
		r.marks <- dead
	}
}

// publishedCount is the number of rows confirmed so far.
func (r *Relay) publishedCount() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stats.Published
}

// recordCall counts one publish call in the stats.
func (r *Relay) recordCall(failed int, elapsed time.Duration, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stats.Batches++
	r.stats.Failures += uint64(failed)
	if err == nil {
		r.stats.PublishLatency = elapsed
	} else {
		r.stats.LastError = err.Error()
		r.stats.LastErrorAt = time.Now()
	}
}

// handleFailures decides per failed row: dead (returned, for the marker),
// charged an attempt and retried after backoff, or retried without charge:
// after a relay-wide pause when the broker looked unavailable (nothing was
// confirmed while the rows were in flight), after a backoff of its key alone
// when only its destination did not confirm (a partition without leader, a
// queue whose node restarts) while other messages, of this call or of any
// other, were confirmed. before is the relay's Published count when the
// rows were sent, at sentAt: a call may hold a single row, so "others were
// confirmed" cannot be judged from the call alone.
func (r *Relay) handleFailures(ctx context.Context, failed []*row, errs []error, before uint64, sentAt time.Time) []markItem {
	if len(failed) == 0 {
		r.mu.Lock()
		r.outages = 0
		r.mu.Unlock()
		return nil
	}
	var dead []markItem
	var charged, free, parked []*row
	var chargedErrs []string
	transient, closed := false, false
	published := r.publishedCount()
	someConfirmed := published > before
	for i, rw := range failed {
		// A row is charged when other messages went through while it was in
		// flight, or since its previous uncharged failure (the broker was up
		// meanwhile), or when it was charged before: otherwise a row that
		// fails alone would pass for an outage forever. A publish the broker
		// never confirmed is not the message's fault and is never charged.
		suspect := someConfirmed || rw.attempts > 0 || (rw.freeFailures > 0 && published > rw.publishedAt)
		switch {
		case errors.Is(errs[i], reliable.ErrClosed):
			// The application closed the publisher while the relay runs (or
			// a pool recycled it): nothing is wrong with the row, so it is an
			// outage, never an attempt or a dead row, although ErrClosed
			// counts as permanent for a caller of Publish.
			closed = true
			transient = true
			free = append(free, rw)
		case reliable.IsPermanent(errs[i]):
			dead = append(dead, markItem{row: rw, kind: markDead, err: errs[i]})
		case unconfirmed(errs[i]) && someConfirmed:
			parked = append(parked, rw)
		case !suspect || unconfirmed(errs[i]):
			transient = true
			free = append(free, rw)
		case rw.attempts+1 >= r.cfg.MaxAttempts:
			dead = append(dead, markItem{row: rw, kind: markDead, err: errs[i]})
		default:
			charged = append(charged, rw)
			chargedErrs = append(chargedErrs, errString(errs[i]))
		}
	}
	if len(charged) > 0 {
		ids := make([]int64, len(charged))
		for i, rw := range charged {
			ids[i] = rw.id
		}
		_, err := r.execAsync(ctx, `UPDATE reliable_outbox o SET attempts = o.attempts + 1, last_error = e.err
			FROM unnest($1::bigint[], $2::text[]) AS e(id, err) WHERE o.id = e.id`, ids, chargedErrs)
		if err != nil {
			r.log.Warn("recording failed attempts", slog.Any("error", err))
			r.noteError(err)
		}
	}

	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if transient { // only when nothing was confirmed: see the cases above
		// The calls in flight when the broker went away fail together, one
		// outage seen by many calls (with per-message confirms, one call per
		// few rows): only a call sent after the last backoff began counts as
		// another consecutive failure, or one outage would reach
		// Backoff.Max at once and hold the relay that long after it ended.
		if r.outages == 0 || sentAt.After(r.backedOffAt) {
			r.outages++
			r.stats.Outages++
			r.backedOffAt = now
			d := r.cfg.Backoff.Delay(r.outages)
			if until := now.Add(d); until.After(r.pausedUntil) {
				r.pausedUntil = until
			}
			if closed {
				r.log.Error("publisher closed while the relay runs: rows wait; close the relay before its publisher",
					slog.Int("rows", len(failed)), slog.Int("consecutive", r.outages), slog.Duration("backoff", d))
			} else {
				r.log.Warn("broker unavailable, backing off", slog.Int("rows", len(failed)),
					slog.Int("consecutive", r.outages), slog.Duration("backoff", d), slog.Any("error", errs[0]))
			}
		}
	} else {
		r.outages = 0
	}
	for _, rw := range free {
		rw.freeFailures++
		rw.publishedAt = published
		r.releaseInflightLocked(rw.l)
		r.enqueueLocked(rw.l)
	}
	for _, rw := range parked {
		rw.freeFailures++
		rw.publishedAt = published
		r.backoffLaneLocked(rw, rw.freeFailures)
	}
	for _, rw := range charged {
		rw.attempts++
		r.backoffLaneLocked(rw, rw.attempts)
	}
	if len(parked) > 0 {
		r.log.Warn("destination did not confirm while others did, its keys back off", slog.Int("rows", len(parked)),
			slog.Any("error", errs[0]))
	}
	r.kick(r.kickWork)
	return dead
}

// backoffLaneLocked ends rw's failed publish and requeues its lane after the
// backoff for the nth failure. The lane stays leased, so its later rows wait
// too.
func (r *Relay) backoffLaneLocked(rw *row, n int) {
	l := rw.l
	r.releaseInflightLocked(l)
	if l.lost {
		return
	}
	l.queued = true // not in readyQ until the backoff passes
	time.AfterFunc(r.cfg.Backoff.Delay(n), func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		l.queued = false
		r.enqueueLocked(l)
		r.kick(r.kickWork)
	})
}

// unconfirmed reports whether err says the broker never confirmed the
// message in time (unavailable, not a fault of the message).
func unconfirmed(err error) bool {
	return errors.Is(err, reliable.ErrNotConfirmed) || errors.Is(err, context.DeadlineExceeded)
}

// releaseInflightLocked ends l's in-flight publish without advancing it.
func (r *Relay) releaseInflightLocked(l *lane) {
	l.inflight = false
	r.stats.InFlight--
	if l.lost {
		r.dropLaneLocked(l)
	}
}
