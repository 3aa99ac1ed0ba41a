package retry

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// readyTimeout bounds one readiness check, so a black-holed database cannot
// hang a probe.
const readyTimeout = 2 * time.Second

// Ready returns nil when the table's database answers a ping within 2 s (or
// ctx's deadline, if sooner), else why not.
func (t *Table) Ready(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	if err := t.pool.Ping(ctx); err != nil {
		return fmt.Errorf("retry: table's database unreachable: %w", err)
	}
	return nil
}

// Ready returns nil while the retrier runs and reaches its table's database,
// else why not: not running, shutting down, or the database unreachable.
func (r *Retrier) Ready(ctx context.Context) error {
	switch {
	case !r.running.Load() || r.stopped.Load():
		return errors.New("retry: retrier not running")
	case r.stopping.Load():
		return errors.New("retry: retrier shutting down")
	}
	return r.t.Ready(ctx)
}
