package outbox

import (
	"context"
	"errors"
	"fmt"
)

// ErrSequenceCached is returned by Run when the sequence behind
// reliable_outbox.id caches more than one value per session (CACHE > 1).
// Per-key order rests on a key's later transaction drawing a higher ID than
// the earlier one it waited for; with a cache, each session draws from its
// own block, so a later row can get a lower ID and be published first. Fix
// it with ALTER SEQUENCE ... CACHE 1 (the query is in the error).
var ErrSequenceCached = errors.New("outbox: the reliable_outbox.id sequence caches values (CACHE > 1), which breaks per-key order")

// checkSequence returns an error matching ErrSequenceCached when the row ID
// sequence has CACHE > 1.
func (r *Relay) checkSequence(ctx context.Context) error {
	var (
		seq   string
		cache int64
	)
	err := r.pool.QueryRow(ctx, `SELECT s.seqrelid::regclass::text, s.seqcache FROM pg_sequence s
		WHERE s.seqrelid = pg_get_serial_sequence('reliable_outbox', 'id')::regclass`).Scan(&seq, &cache)
	if err != nil {
		return fmt.Errorf("outbox: reading the row ID sequence: %w", err)
	}
	if cache > 1 {
		return fmt.Errorf("%w: %s has CACHE %d; run ALTER SEQUENCE %s CACHE 1", ErrSequenceCached, seq, cache, seq)
	}
	return nil
}
