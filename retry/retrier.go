package retry

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/internal/pgplan"
)

// Retrier replays a table's parked entries through a handler.
//
// Its workers claim keys (lanes) whose head entry is due by taking a lease
// on the key, then replay the key's entries in their original order: an
// entry that succeeds is deleted (or kept as done), and the next one runs; an
// entry that fails is rescheduled with exponential backoff and jitter and the
// key waits for it; after MaxAttempts failures, or at once for a permanent
// error, the entry is dead and the notifier is called.
//
// Several retriers, in one process or many, may run on one table and group:
// a key's lease admits one retrier at a time, and every change a retrier
// makes to an entry is fenced by its lease, so a retrier that lost its lease
// (paused, partitioned) cannot apply a stale outcome. The retrier renews its
// leases while it works and cancels the handler's context when a lease is
// lost; a crashed retrier's keys are taken over when its leases expire.
type Retrier struct {
	t       *Table
	h       reliable.Handler
	cfg     RetrierConfig
	log     *slog.Logger
	claims  atomic.Uint64
	owner   string
	running atomic.Bool
	// stopping is set when Run's context ends, stopped when Run returned.
	stopping, stopped atomic.Bool

	// releaseOnStop is false only in tests that simulate a crash.
	releaseOnStop bool
}

// NewRetrier returns a retrier replaying t's entries through h.
func NewRetrier(t *Table, h reliable.Handler, cfg RetrierConfig) (*Retrier, error) {
	var p reliable.Problems
	p.Addf(t == nil, "table is nil")
	p.Addf(h == nil, "handler is nil")
	if err := p.Err("retrier"); err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults(t)
	if cfg.Instance == "" {
		host, _ := os.Hostname()
		cfg.Instance = host + ":" + strconv.Itoa(os.Getpid())
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	return &Retrier{
		t: t, h: h, cfg: cfg, log: cfg.Logger.With("component", "retrier", "group", t.cfg.Group, "owner", cfg.Instance),
		owner: cfg.Instance + "/" + hex.EncodeToString(b[:]), releaseOnStop: true,
	}, nil
}

// Run replays due entries until ctx ends, then lets in-flight handlers finish
// (up to ShutdownTimeout), releases its leases and returns nil. Database
// errors are logged and retried, never returned. Run may be called once.
func (r *Retrier) Run(ctx context.Context) error {
	if !r.running.CompareAndSwap(false, true) {
		return errors.New("retry: Retrier.Run called twice")
	}
	defer r.stopped.Store(true)
	stopWatch := context.AfterFunc(ctx, func() { r.stopping.Store(true) })
	defer stopWatch()
	if r.cfg.CleanupInterval > 0 {
		go r.cleanupLoop(ctx)
	}
	var (
		wg     sync.WaitGroup
		done   = make(chan string, r.cfg.Workers)
		active = make(map[string]bool, r.cfg.Workers)
		poll   = time.NewTimer(0)
	)
	defer poll.Stop()
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			return nil
		case lane := <-done:
			delete(active, lane)
		case <-poll.C:
		}
		// Drain finished workers, then claim as many keys as there are free
		// workers. A full claim means more may be due: look again as soon as a
		// worker frees up; otherwise wait for the poll interval.
		for drained := false; !drained; {
			select {
			case lane := <-done:
				delete(active, lane)
			default:
				drained = true
			}
		}
		free := r.cfg.Workers - len(active)
		if free == 0 {
			continue
		}
		owner := r.owner + "/" + strconv.FormatUint(r.claims.Add(1), 10)
		lanes, err := r.claim(ctx, free, owner)
		if err != nil && ctx.Err() == nil {
			r.log.ErrorContext(ctx, "claiming due keys failed", "error", err)
		}
		for _, l := range lanes {
			if active[l] {
				continue // cannot happen: our own lease is live while we work on l
			}
			active[l] = true
			wg.Add(1)
			go func() {
				defer wg.Done()
				r.runLane(ctx, l, owner)
				done <- l
			}()
		}
		if len(lanes) < free {
			poll.Reset(r.cfg.PollInterval)
		} else {
			poll.Reset(r.cfg.PollInterval * 10) // a worker finishing wakes us first
		}
	}
}

// claim leases up to n lanes whose head entry is pending and due, and that no
// live lease covers. The lease upsert only replaces an expired lease, so of
// two retriers claiming one lane at once exactly one gets it.
func (r *Retrier) claim(ctx context.Context, n int, owner string) ([]string, error) {
	t := r.t
	// Only heads have a due time, so the due index yields candidates that are
	// (almost always) heads; the NOT EXISTS guards against an operator having
	// made a later entry due.
	var lanes []string
	err := pgplan.Query(ctx, t.pool, func(rows pgx.Rows) (err error) {
		lanes, err = pgx.CollectRows(rows, pgx.RowTo[string])
		return err
	}, `WITH due AS (
  SELECT e.lane FROM `+t.table+` e
  WHERE e.grp = $1 AND e.state = 'pending' AND e.next_attempt_at <= now()
    AND NOT EXISTS (SELECT 1 FROM `+t.table+` p
      WHERE p.grp = $1 AND p.lane = e.lane AND p.state IN ('pending', 'dead') AND p.id < e.id)
    AND NOT EXISTS (SELECT 1 FROM `+t.leases+` l WHERE l.grp = $1 AND l.lane = e.lane AND l.expires_at > now())
  ORDER BY e.next_attempt_at LIMIT $2
)
INSERT INTO `+t.leases+` AS l (grp, lane, owner, expires_at)
SELECT $1, lane, $3, now() + $4 * interval '1 microsecond' FROM due
ON CONFLICT (grp, lane) DO UPDATE SET owner = EXCLUDED.owner, expires_at = EXCLUDED.expires_at
  WHERE l.expires_at <= now()
RETURNING lane`, t.cfg.Group, n, owner, r.cfg.LeaseTTL.Microseconds())
	if err != nil {
		return nil, fmt.Errorf("retry: claim: %w", err)
	}
	return lanes, nil
}

// recordTimeout bounds recording a successful replay, which runs on a
// context that shutdown does not cancel.
const recordTimeout = 5 * time.Second

// errLeaseLost stops work on a lane whose lease another retrier took.
var errLeaseLost = errors.New("retry: lease lost")

// runLane replays lane's entries in order while it holds the lease.
func (r *Retrier) runLane(ctx context.Context, lane, owner string) {
	// The handler's context outlives ctx by up to ShutdownTimeout so an
	// in-flight replay can finish; it ends at once when the lease is lost.
	work, cancelWork := context.WithCancelCause(context.WithoutCancel(ctx))
	defer cancelWork(nil)
	stopShutdown := context.AfterFunc(ctx, func() {
		time.AfterFunc(r.cfg.ShutdownTimeout, func() { cancelWork(context.Cause(ctx)) })
	})
	defer stopShutdown()
	hbDone := make(chan struct{})
	go func() {
		defer close(hbDone)
		r.heartbeat(work, lane, owner, cancelWork)
	}()
	defer func() {
		cancelWork(nil)
		<-hbDone
		if context.Cause(work) == errLeaseLost || !r.releaseOnStop {
			return
		}
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if _, err := r.t.pool.Exec(rctx, `DELETE FROM `+r.t.leases+` WHERE grp = $1 AND lane = $2 AND owner = $3`,
			r.t.cfg.Group, lane, owner); err != nil {
			r.log.WarnContext(rctx, "releasing a lease failed; it expires by itself", "lane", lane, "error", err)
		}
	}()

	for ctx.Err() == nil && work.Err() == nil {
		entries, err := r.head(work, lane)
		if err != nil {
			if work.Err() == nil {
				r.log.ErrorContext(ctx, "reading a key's entries failed", "lane", lane, "error", err)
			}
			return
		}
		if len(entries) == 0 {
			return
		}
		for i, e := range entries {
			if ctx.Err() != nil || work.Err() != nil {
				return // shutting down: never start the next entry
			}
			// The first entry read is the head; each later one became the
			// head, due at once, when the one before it succeeded or was
			// released.
			if e.state == StateDead || (i == 0 && !e.due) {
				return // blocked by a dead head, or the head waits for its backoff
			}
			next, err := r.replay(ctx, work, e.Entry, owner)
			if err != nil {
				if errors.Is(err, errLeaseLost) {
					cancelWork(errLeaseLost)
				} else if work.Err() == nil {
					r.log.ErrorContext(ctx, "recording a replay outcome failed", "entry", e.ID, "error", err)
				}
				return
			}
			if !next {
				return
			}
		}
	}
}

type headEntry struct {
	Entry
	state State
	due   bool
}

// head reads the lane's blocking entries in order, with whether each is due
// by the database's clock.
func (r *Retrier) head(ctx context.Context, lane string) ([]headEntry, error) {
	var entries []headEntry
	err := pgplan.Query(ctx, r.t.pool, func(rows pgx.Rows) (err error) {
		entries, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (headEntry, error) {
			var he headEntry
			var due bool
			e, err := scanEntry(dueScanner{row, &due})
			he.Entry, he.state, he.due = e, e.State, due
			return he, err
		})
		return err
	}, `SELECT `+entryColumns+`, coalesce(next_attempt_at <= now(), false) FROM `+r.t.table+`
WHERE grp = $1 AND lane = $2 AND state IN ('pending', 'dead') ORDER BY id LIMIT $3`, r.t.cfg.Group, lane, r.cfg.BatchSize)
	return entries, err
}

// dueScanner appends the "due" column to scanEntry's destinations.
type dueScanner struct {
	row pgx.Row
	due *bool
}

func (s dueScanner) Scan(dest ...any) error { return s.row.Scan(append(dest, s.due)...) }

// replay runs one entry through the handler and records the outcome, fenced
// by the lease. next reports whether the lane's following entry may run now.
func (r *Retrier) replay(ctx, work context.Context, e Entry, owner string) (next bool, err error) {
	r.log.DebugContext(ctx, "replaying", "entry", e.ID, "message_id", e.Message.ID, "attempt", e.Message.Delivery.Attempt)
	herr := r.handle(work, e.Message)
	if herr == nil {
		// The handler's effects are applied: record it even when shutdown's
		// deadline has just cut work, or the entry stays pending and is
		// applied a second time later. The lease still fences the outcome.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(work), recordTimeout)
		defer cancel()
		return true, r.succeed(rctx, e, owner)
	}
	if work.Err() != nil {
		// Shutdown or a lost lease interrupted the handler: not the
		// message's fault, so the attempt does not count.
		return false, nil
	}
	attempts := e.Attempts + 1
	state, delay := StatePending, max(r.t.cfg.Backoff.Delay(attempts), reliable.RetryDelay(herr))
	if IsStoreUnavailable(herr) {
		// The store failed, not the message: look again later, uncharged.
		attempts, delay = e.Attempts, r.t.cfg.Backoff.Delay(1)
	} else if reliable.IsPermanent(herr) || attempts >= r.t.cfg.MaxAttempts {
		state, delay = StateDead, 0
		if r.t.cfg.ReleaseOnDead {
			state = StateReleased
		}
	}
	updated, err := r.fail(work, e, owner, attempts, state, delay, herr)
	if err != nil {
		return false, err
	}
	if updated == nil {
		return false, nil // an operator changed the entry meanwhile: re-read the lane later
	}
	r.log.InfoContext(ctx, "replay failed", "entry", e.ID, "message_id", e.Message.ID, "attempt", attempts,
		"state", state, "next_attempt_at", updated.NextAttemptAt, "error", herr)
	if state != StatePending {
		r.t.notify(ctx, *updated)
	}
	return state == StateReleased, nil
}

// handle calls the handler, turning a panic into an error so one bad message
// cannot kill the retrier.
func (r *Retrier) handle(ctx context.Context, msg *reliable.Message) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("retry: handler panicked: %v", p)
		}
	}()
	return r.h.Handle(ctx, msg)
}

// leaseCTE renews the lease and yields a row only while owner holds it.
func (r *Retrier) leaseCTE() string {
	return `lease AS (UPDATE ` + r.t.leases + ` SET expires_at = now() + $5 * interval '1 microsecond'
  WHERE grp = $1 AND lane = $2 AND owner = $3 RETURNING 1)`
}

// renewSQL extends owner's lease; it affects no row once the lease is lost.
func (r *Retrier) renewSQL() string {
	return `UPDATE ` + r.t.leases + ` SET expires_at = now() + $4 * interval '1 microsecond'
WHERE grp = $1 AND lane = $2 AND owner = $3`
}

func (r *Retrier) succeed(ctx context.Context, e Entry, owner string) error {
	fin := `UPDATE ` + r.t.table + ` SET state = 'done', next_attempt_at = NULL, finished_at = now(), updated_at = now()
  WHERE id = $4 AND state = 'pending' AND EXISTS (SELECT 1 FROM lease)`
	if r.t.cfg.DeleteSucceeded {
		fin = `DELETE FROM ` + r.t.table + ` WHERE id = $4 AND state = 'pending' AND EXISTS (SELECT 1 FROM lease)`
	}
	// The entry after this one becomes the head: it is due now. (Sibling
	// statements share a snapshot, so "after" is by ID, not "first left".)
	promote := `UPDATE ` + r.t.table + ` SET next_attempt_at = now(), updated_at = now()
  WHERE id = (SELECT id FROM ` + r.t.table + ` WHERE grp = $1 AND lane = $2 AND state IN ('pending', 'dead') AND id > $4
    ORDER BY id LIMIT 1)
  AND state = 'pending' AND next_attempt_at IS NULL AND EXISTS (SELECT 1 FROM fin)`
	var held bool
	err := r.t.withLaneLock(ctx, lane(e.Message), false, `WITH `+r.leaseCTE()+`, fin AS (`+fin+` RETURNING 1), promote AS (`+promote+` RETURNING 1)
SELECT EXISTS (SELECT 1 FROM lease), (SELECT count(*) FROM promote)`,
		[]any{r.t.cfg.Group, lane(e.Message), owner, e.ID, r.cfg.LeaseTTL.Microseconds()},
		func(row pgx.Row) error { return row.Scan(&held, new(int64)) })
	if err != nil {
		return fmt.Errorf("retry: record success of entry %d: %w", e.ID, err)
	}
	if !held {
		return errLeaseLost
	}
	return nil
}

// fail records a failed attempt. It returns the updated entry, or nil when
// the entry was no longer pending (an operator discarded it).
func (r *Retrier) fail(ctx context.Context, e Entry, owner string, attempts int, state State, delay time.Duration, cause error) (*Entry, error) {
	var (
		held    bool
		updated *Entry
	)
	err := pgx.BeginFunc(ctx, r.t.pool, func(tx pgx.Tx) error {
		if err := r.t.lockLane(ctx, tx, lane(e.Message)); err != nil {
			return err
		}
		// Renewing the lease inside the transaction also locks it, so no
		// retrier can take the key over until this outcome is committed.
		tag, err := tx.Exec(ctx, r.renewSQL(), r.t.cfg.Group, lane(e.Message), owner, r.cfg.LeaseTTL.Microseconds())
		if held = err == nil && tag.RowsAffected() == 1; !held {
			return err
		}
		u, err := scanEntry(tx.QueryRow(ctx, `UPDATE `+r.t.table+` SET attempts = $3, state = $4,
  next_attempt_at = CASE WHEN $4 = 'pending' THEN now() + $5 * interval '1 microsecond' END, last_error = $6, updated_at = now(),
  finished_at = CASE WHEN $4 = 'pending' THEN NULL ELSE now() END
WHERE grp = $1 AND id = $2 AND state = 'pending'
RETURNING `+entryColumns, r.t.cfg.Group, e.ID, attempts, string(state), delay.Microseconds(), errorText(cause.Error())))
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		updated = &u
		if state == StateReleased {
			return r.t.fixHead(ctx, tx, lane(e.Message))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("retry: record failure of entry %d: %w", e.ID, err)
	}
	if !held {
		return nil, errLeaseLost
	}
	return updated, nil
}

// heartbeat renews the lane's lease every LeaseTTL/3 until ctx ends. When
// the lease is gone, or cannot be renewed before it would expire, it cancels
// the lane's work so the handler stops.
//
// Each renewal has a deadline: two thirds of LeaseTTL after the start of the
// last renewal that succeeded (the database's now() of that renewal is no
// earlier, so the lease lives at least LeaseTTL/3 longer). A renewal that
// hangs (an exhausted pool, a black-holed connection) therefore cancels the
// handler while the lease still holds, before another retrier can take the
// key and replay its later entries.
func (r *Retrier) heartbeat(ctx context.Context, lane, owner string, cancel context.CancelCauseFunc) {
	tick := time.NewTicker(r.cfg.LeaseTTL / 3)
	defer tick.Stop()
	renewed := time.Now() // the claim that took the lease started earlier still
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		start, deadline := time.Now(), renewed.Add(r.cfg.LeaseTTL*2/3)
		rctx, rcancel := context.WithDeadline(ctx, deadline)
		tag, err := r.t.pool.Exec(rctx, r.renewSQL(), r.t.cfg.Group, lane, owner, r.cfg.LeaseTTL.Microseconds())
		rcancel()
		switch {
		case ctx.Err() != nil:
			return
		case err == nil && tag.RowsAffected() == 1:
			renewed = start
		case err == nil:
			r.log.WarnContext(ctx, "lease lost: another retrier took the key over", "lane", lane)
			cancel(errLeaseLost)
			return
		case !time.Now().Before(deadline):
			r.log.ErrorContext(ctx, "lease not renewable: stopping the key's work", "lane", lane, "error", err)
			cancel(errLeaseLost)
			return
		}
	}
}

func (r *Retrier) cleanupLoop(ctx context.Context) {
	tick := time.NewTicker(r.cfg.CleanupInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		n, err := r.t.Cleanup(ctx)
		if err != nil && ctx.Err() == nil {
			r.log.ErrorContext(ctx, "retry table cleanup failed", "error", err)
		} else if n > 0 {
			r.log.InfoContext(ctx, "retry table cleaned up", "deleted", n)
		}
	}
}
