package outbox

import (
	"context"
	"log/slog"
	"time"
)

// cleanupLoop deletes, in batches, archived rows past the retention, key-lock
// rows no transaction used for a minute, and leases that expired long ago
// (L17: the outbox's own tables must not grow without bound).
func (r *Relay) cleanupLoop(ctx context.Context) {
	t := time.NewTicker(r.cfg.CleanupInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if _, err := r.Cleanup(ctx); err != nil && ctx.Err() == nil {
			r.noteError(err)
			r.log.Warn("outbox cleanup failed", slog.Any("error", err))
		}
	}
}

// Cleanup runs one cleanup pass now and returns the number of rows deleted.
// The relay runs it every CleanupInterval; it is exported for operators and
// tests.
func (r *Relay) Cleanup(ctx context.Context) (int64, error) {
	return cleanup(ctx, r.pool, r.cfg.Retention, r.cfg.LeaseTTL, r.cfg.CleanupBatchSize)
}

func cleanup(ctx context.Context, db DB, retention, leaseTTL time.Duration, batch int) (int64, error) {
	stmts := []struct {
		sql string
		arg time.Duration
	}{
		// ORDER BY sent_at walks the index from the oldest; SKIP LOCKED lets
		// several relays clean at once without waiting on each other.
		{`DELETE FROM reliable_outbox_archive WHERE id IN (
			SELECT id FROM reliable_outbox_archive WHERE sent_at < now() - $1 * interval '1 millisecond'
			ORDER BY sent_at LIMIT $2 FOR UPDATE SKIP LOCKED)`, retention},
		// A key-lock row in use is locked by its writer, so it is skipped.
		{`DELETE FROM reliable_outbox_keys WHERE lane IN (
			SELECT lane FROM reliable_outbox_keys WHERE locked_at < now() - $1 * interval '1 millisecond'
			LIMIT $2 FOR UPDATE SKIP LOCKED)`, time.Minute},
		{`DELETE FROM reliable_outbox_leases WHERE lane IN (
			SELECT lane FROM reliable_outbox_leases WHERE expires_at < now() - $1 * interval '1 millisecond'
			LIMIT $2 FOR UPDATE SKIP LOCKED)`, leaseTTL},
	}
	var total int64
	for _, s := range stmts {
		for {
			tag, err := db.Exec(ctx, s.sql, s.arg.Milliseconds(), batch)
			if err != nil {
				return total, err
			}
			total += tag.RowsAffected()
			if tag.RowsAffected() < int64(batch) {
				break
			}
		}
	}
	return total, nil
}
