package outbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
)

// ErrDuplicateInstance is returned by Run when another relay with the same
// Config.Instance is running on the same outbox tables: two relays sharing an Instance
// would renew each other's leases.
var ErrDuplicateInstance = errors.New("outbox: another live relay uses this Config.Instance")

// idLockSQL takes the session advisory lock that marks Config.Instance ($1) as in
// use on this schema's outbox. A session lock ends with its connection, so
// the lock of a relay that crashed (kill -9, OOM) is gone as soon as
// PostgreSQL sees its connection close.
const idLockSQL = `SELECT pg_try_advisory_lock(hashtextextended('reliable_outbox_relay ' || current_schema() || ' ' || $1, 0))`

// takeID locks the relay's ID on a connection of its own, then takes over
// the leases an earlier incarnation with this ID left: it is gone, since it
// no longer holds the lock, so they need not run out their TTL.
func (r *Relay) takeID(ctx context.Context) (*pgx.Conn, error) {
	pc, err := r.pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("outbox: locking the relay ID: %w", err)
	}
	conn := pc.Hijack()
	// A killed relay's session may take a moment to end: try for up to
	// LeaseTTL, after which its leases would have expired anyway.
	deadline := time.Now().Add(r.cfg.LeaseTTL)
	for {
		var ok bool
		if err := conn.QueryRow(ctx, idLockSQL, r.cfg.Instance).Scan(&ok); err != nil {
			_ = conn.Close(context.WithoutCancel(ctx))
			return nil, fmt.Errorf("outbox: locking the relay ID: %w", err)
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			_ = conn.Close(context.WithoutCancel(ctx))
			return nil, fmt.Errorf("%w: %q is held by another session for over LeaseTTL (%s) (a relay whose host vanished holds it until PostgreSQL's TCP keepalive gives up)",
				ErrDuplicateInstance, r.cfg.Instance, r.cfg.LeaseTTL)
		}
		if err := sleepCtx(ctx, 100*time.Millisecond); err != nil {
			_ = conn.Close(context.WithoutCancel(ctx))
			return nil, err
		}
	}
	tag, err := conn.Exec(ctx, `DELETE FROM reliable_outbox_leases WHERE owner = $1`, r.cfg.Instance)
	if err != nil {
		_ = conn.Close(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("outbox: taking over the leases of this relay ID: %w", err)
	}
	if n := tag.RowsAffected(); n > 0 {
		r.log.Info("took over the leases of an earlier run with this relay ID", slog.Int64("keys", n))
	}
	return conn, nil
}

// holdID keeps the ID lock's connection alive until ctx ends, and returns
// it (or nil) for Run to close only after it released its leases: a new
// incarnation taking the lock earlier would have its fresh leases deleted.
// If the connection breaks (a database restart), it locks the ID again on a
// new one; if another relay took the ID meanwhile, it reports that through
// Ready and the log, and keeps trying.
func (r *Relay) holdID(ctx context.Context, conn *pgx.Conn) *pgx.Conn {
	t := time.NewTicker(r.cfg.LeaseTTL / 3)
	defer t.Stop()
	for attempt := 0; ; {
		select {
		case <-ctx.Done():
			return conn
		case <-t.C:
		}
		if conn != nil {
			pctx, cancel := context.WithTimeout(ctx, r.cfg.LeaseTTL/3)
			err := conn.Ping(pctx)
			cancel()
			if err == nil {
				continue
			}
			_ = conn.Close(context.WithoutCancel(ctx))
			conn = nil
		}
		if ctx.Err() != nil {
			return nil
		}
		c, err := r.relockID(ctx)
		if err != nil {
			attempt++
			r.idErr.Store(&err)
			r.log.Error("relay ID lock lost and not retaken", slog.Int("try", attempt), slog.Any("error", err))
			continue
		}
		attempt = 0
		r.idErr.Store(nil)
		conn = c
	}
}

// relockID takes the ID lock again on a new connection, without touching
// the leases (this relay holds them).
func (r *Relay) relockID(ctx context.Context) (*pgx.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.LeaseTTL/3)
	defer cancel()
	pc, err := r.pool.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	conn := pc.Hijack()
	var ok bool
	if err := conn.QueryRow(ctx, idLockSQL, r.cfg.Instance).Scan(&ok); err != nil || !ok {
		_ = conn.Close(context.WithoutCancel(ctx))
		if err == nil {
			err = fmt.Errorf("%w: %q", ErrDuplicateInstance, r.cfg.Instance)
		}
		return nil, err
	}
	return conn, nil
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
