package outbox

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// readyTimeout bounds one readiness check, so a black-holed database cannot
// hang a probe.
const readyTimeout = 2 * time.Second

// Ready returns nil while the relay runs (past its start-up checks), reaches its database and the
// broker confirms its publishes, else why not: not running, shutting down,
// a broker outage in progress (publish calls in which nothing was confirmed,
// since when, and the last error), or the database unreachable (no answer to
// a ping within 2 s, or ctx's deadline if sooner).
func (r *Relay) Ready(ctx context.Context) error {
	switch {
	case !r.running.Load():
		return errors.New("outbox: relay not running")
	case r.stopping.Load():
		return errors.New("outbox: relay shutting down")
	case !r.started.Load():
		return errors.New("outbox: relay starting (checking its tables, locking its ID)")
	}
	r.mu.Lock()
	outages, since, last := r.outages, r.backedOffAt, r.stats.LastError
	r.mu.Unlock()
	var errs []error
	if e := r.idErr.Load(); e != nil {
		errs = append(errs, fmt.Errorf("outbox: relay ID lock lost: %w", *e))
	}
	if outages > 0 {
		errs = append(errs, fmt.Errorf("outbox: broker outage in progress: %d publish calls in a row confirmed nothing, the last at %s: %s",
			outages, since.Format(time.RFC3339), last))
	}
	pctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	if err := r.pool.Ping(pctx); err != nil {
		errs = append(errs, fmt.Errorf("outbox: database unreachable: %w", err))
	}
	return errors.Join(errs...)
}
