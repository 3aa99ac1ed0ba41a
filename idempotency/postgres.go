package idempotency

import (
	"context"
	"crypto/rand"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/internal/pgmigrate"
	"github.com/reliable-go/reliable/internal/pgplan"
)

//go:embed migrations/*.sql
var migrations embed.FS

// PostgresConfig configures a [PostgresStore].
type PostgresConfig struct {
	// Namespace scopes the records, usually the consumer group: two services
	// that both consume a message each process it once. Required.
	Namespace string
	// Schema holds the table; empty means the search_path.
	Schema string
	// Table is the table name. Defaults to "reliable_idempotency".
	Table string
	// ClaimTTL is how long a claim lives. Defaults to DefaultClaimTTL.
	ClaimTTL time.Duration
	// Retention is how long a done record is kept (L17). Defaults to
	// DefaultRetention. Expired records count as absent at once; Cleanup
	// deletes them.
	Retention time.Duration
	// CleanupBatchSize is how many rows one Cleanup statement deletes, so
	// cleanup never holds long locks. Defaults to 1000.
	CleanupBatchSize int
	// CleanupInterval is how often the store deletes expired records by
	// itself (L17): the first Begin or ProcessTx after each interval starts
	// one Cleanup in the background, so a consumer needs no extra wiring.
	// Defaults to DefaultCleanupInterval; negative disables it (then run
	// Cleanup or RunCleanup yourself).
	CleanupInterval time.Duration
	// Logger receives the background cleanup's outcome. Defaults to
	// slog.Default().
	Logger *slog.Logger
	// MaxBatch is how many concurrent Begin (or Done) calls one statement
	// carries: calls that arrive while earlier ones are in flight go
	// together in the next statement, each with its own result, as if sent
	// alone. Defaults to DefaultMaxBatch; 1 sends every call alone.
	// ProcessTx and DoneTx are never batched: each is the caller's own
	// transaction.
	MaxBatch int
}

// DefaultCleanupInterval is how often a PostgresStore deletes expired
// records by default.
const DefaultCleanupInterval = 10 * time.Minute

func (c PostgresConfig) withDefaults() PostgresConfig {
	if c.Table == "" {
		c.Table = "reliable_idempotency"
	}
	c.ClaimTTL = orDefault(c.ClaimTTL, DefaultClaimTTL)
	c.Retention = orDefault(c.Retention, DefaultRetention)
	if c.CleanupBatchSize == 0 {
		c.CleanupBatchSize = 1000
	}
	c.CleanupInterval = orDefault(c.CleanupInterval, DefaultCleanupInterval)
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.MaxBatch == 0 {
		c.MaxBatch = DefaultMaxBatch
	}
	return c
}

// Validate returns every problem of the configuration at once.
func (c PostgresConfig) Validate() error {
	var p reliable.Problems
	p.Addf(c.Namespace == "", "Namespace is empty: set it to the consumer group")
	p.Addf(len(c.Table) > 40, "Table %q is longer than 40 bytes (PostgreSQL truncates derived index names)", c.Table)
	p.Addf(c.ClaimTTL < 0, "ClaimTTL is negative (%s)", c.ClaimTTL)
	p.Addf(c.ClaimTTL > 0 && c.ClaimTTL < time.Millisecond, "ClaimTTL %s is below 1ms", c.ClaimTTL)
	p.Addf(c.Retention < 0, "Retention is negative (%s)", c.Retention)
	p.Addf(c.CleanupBatchSize < 0, "CleanupBatchSize is negative (%d)", c.CleanupBatchSize)
	p.Addf(c.MaxBatch < 0, "MaxBatch is negative (%d)", c.MaxBatch)
	return p.Err("idempotency postgres store")
}

// PostgresStore is a [Store] in a PostgreSQL table. Every operation is one
// statement on the (namespace, id) primary key, so concurrent Begins of one
// ID serialise on the key and exactly one wins (L19).
//
// Besides Begin/Done/Abort it offers [PostgresStore.DoneTx] and
// [PostgresStore.ProcessTx] for exactly-once effects when the handler writes
// to the same database.
type PostgresStore struct {
	pool   *pgxpool.Pool
	cfg    PostgresConfig
	target pgmigrate.Target
	table  string
	owner  string

	cleaning    atomic.Bool  // a background cleanup runs
	lastCleanup atomic.Int64 // unix nanoseconds the last one started

	begins *batcher[Status]
	dones  *batcher[struct{}]
}

// NewPostgres returns a store on pool. It does not touch the database: call
// [PostgresStore.Migrate] once (at deploy or start-up) to create the table.
func NewPostgres(pool *pgxpool.Pool, cfg PostgresConfig) (*PostgresStore, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if pool == nil {
		return nil, &reliable.ConfigError{Component: "idempotency postgres store", Problems: []string{"pool is nil"}}
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	t := pgmigrate.Target{Schema: cfg.Schema, Table: cfg.Table}
	s := &PostgresStore{pool: pool, cfg: cfg, target: t, table: t.Ident(""), owner: hex.EncodeToString(b[:])}
	s.begins = &batcher[Status]{max: cfg.MaxBatch, flush: s.beginMany, abandoned: s.abandonedClaim}
	s.dones = &batcher[struct{}]{max: cfg.MaxBatch, flush: s.doneMany}
	return s, nil
}

// ClaimDuration returns how long a claim made by Begin lives. A handler that runs
// longer may find its claim taken over (DoneTx then fails with
// ErrClaimLost): bound handlers below it.
func (s *PostgresStore) ClaimDuration() time.Duration { return s.cfg.ClaimTTL }

// Migrate is [Migrate] for the store's configuration: it creates or upgrades
// the table, idempotently and safely from several instances at once.
func (s *PostgresStore) Migrate(ctx context.Context) error {
	return migrationSet.Apply(ctx, s.pool, s.target.Schema, s.target.Table)
}

// Begin implements [Store]. An expired claim or an expired done record is
// taken over.
func (s *PostgresStore) Begin(ctx context.Context, id string) (Status, error) {
	if id == "" {
		return 0, ErrEmptyID
	}
	s.maybeCleanup()
	if s.cfg.MaxBatch > 1 {
		return s.begins.do(ctx, id)
	}
	return s.beginOne(ctx, id)
}

// beginOne is Begin for one ID, in a statement of its own.
func (s *PostgresStore) beginOne(ctx context.Context, id string) (Status, error) {
	q := `WITH claim AS (
  INSERT INTO ` + s.table + ` AS r (namespace, id, done, owner, expires_at)
  VALUES ($1, $2, false, $3, now() + $4 * interval '1 millisecond')
  ON CONFLICT (namespace, id) DO UPDATE
    SET done = false, owner = EXCLUDED.owner, expires_at = EXCLUDED.expires_at, updated_at = now()
    WHERE r.expires_at <= now()
  RETURNING 1)
SELECT CASE WHEN EXISTS (SELECT 1 FROM claim) THEN 1
  ELSE (SELECT CASE WHEN done THEN 2 ELSE 3 END FROM ` + s.table + ` WHERE namespace = $1 AND id = $2) END`
	// The fallback SELECT sees the statement's snapshot, which misses a row
	// that a concurrent transaction committed while this one waited on its
	// key: then it returns NULL, and one more round sees the row.
	for range 3 {
		var st *int
		if err := pgplan.QueryRow(ctx, s.pool, q, []any{s.cfg.Namespace, recordID(id), s.owner, s.cfg.ClaimTTL.Milliseconds()}, &st); err != nil {
			return 0, storeError(fmt.Errorf("idempotency: postgres begin %s: %w", quoteShort(id), err))
		}
		if st != nil {
			return Status(*st), nil
		}
	}
	return StatusInProgress, nil
}

func (s *PostgresStore) doneSQL() string {
	return `INSERT INTO ` + s.table + ` AS r (namespace, id, done, owner, expires_at)
  VALUES ($1, $2, true, '', now() + $3 * interval '1 millisecond')
  ON CONFLICT (namespace, id) DO UPDATE
    SET done = true, owner = '', expires_at = EXCLUDED.expires_at, updated_at = now()`
}

// Done implements [Store].
func (s *PostgresStore) Done(ctx context.Context, id string) error {
	if id == "" {
		return ErrEmptyID
	}
	if s.cfg.MaxBatch > 1 {
		_, err := s.dones.do(ctx, id)
		return err
	}
	return s.doneOne(ctx, id)
}

// doneOne is Done for one ID, in a statement of its own.
func (s *PostgresStore) doneOne(ctx context.Context, id string) error {
	if _, err := s.pool.Exec(ctx, s.doneSQL(), s.cfg.Namespace, recordID(id), s.cfg.Retention.Milliseconds()); err != nil {
		return storeError(fmt.Errorf("idempotency: postgres done %s: %w", quoteShort(id), err))
	}
	return nil
}

// beginMany claims the IDs in one statement; each gets the status a lone
// Begin would have returned. The IDs are locked in sorted order, so
// concurrent batches cannot deadlock on each other. An ID that occurs twice
// is claimed once: its first call gets the status, the others see the claim
// (StatusInProgress) or the done record, as a second Begin would.
func (s *PostgresStore) beginMany(ctx context.Context, ids []string) ([]Status, []error) {
	out, errs := make([]Status, len(ids)), make([]error, len(ids))
	if len(ids) == 1 { // a lone call: the plain statement
		out[0], errs[0] = s.beginOne(ctx, ids[0])
		return out, errs
	}
	first := make(map[string]int, len(ids)) // record ID -> index of its first call
	var recs []string
	for i, id := range ids {
		r := recordID(id)
		if _, ok := first[r]; !ok {
			first[r] = i
			recs = append(recs, r)
		}
	}
	q := `WITH ids AS (SELECT DISTINCT unnest($2::text[]) AS id),
claim AS (
  INSERT INTO ` + s.table + ` AS r (namespace, id, done, owner, expires_at)
  SELECT $1, id, false, $3, now() + $4 * interval '1 millisecond' FROM ids ORDER BY id
  ON CONFLICT (namespace, id) DO UPDATE
    SET done = false, owner = EXCLUDED.owner, expires_at = EXCLUDED.expires_at, updated_at = now()
    WHERE r.expires_at <= now()
  RETURNING r.id)
SELECT ids.id, CASE WHEN c.id IS NOT NULL THEN 1
  ELSE (SELECT CASE WHEN x.done THEN 2 ELSE 3 END FROM ` + s.table + ` x WHERE x.namespace = $1 AND x.id = ids.id) END
FROM ids LEFT JOIN claim c ON c.id = ids.id`
	status := make(map[string]Status, len(recs))
	// As in Begin, a row committed concurrently while the statement waited
	// on its key is missed by the fallback read: NULL, and one more round.
	for round := 0; round < 3 && len(recs) > 0; round++ {
		var again []string
		err := pgplan.Query(ctx, s.pool, func(rows pgx.Rows) error {
			var rec string
			var st *int
			_, err := pgx.ForEachRow(rows, []any{&rec, &st}, func() error {
				if st == nil {
					again = append(again, rec)
				} else {
					status[rec] = Status(*st)
				}
				return nil
			})
			return err
		}, q, s.cfg.Namespace, recs, s.owner, s.cfg.ClaimTTL.Milliseconds())
		if err == nil {
			recs = again
			continue
		}
		// IDs an earlier round answered keep their answer (a claim made
		// there is theirs); only the others get the error.
		permanent := len(ids) > 1 && reliable.IsPermanent(storeError(err))
		for i, id := range ids {
			if st, ok := status[recordID(id)]; ok {
				out[i] = firstCall(st, first[recordID(id)] == i)
				continue
			}
			if permanent {
				// One ID the database refuses must not fail its neighbours:
				// each goes alone and gets its own answer.
				out[i], errs[i] = s.beginOne(ctx, id)
				continue
			}
			errs[i] = storeError(fmt.Errorf("idempotency: postgres begin %s: %w", quoteShort(id), err))
		}
		return out, errs
	}
	for _, r := range recs {
		status[r] = StatusInProgress
	}
	for i, id := range ids {
		r := recordID(id)
		out[i] = firstCall(status[r], first[r] == i)
	}
	return out, errs
}

// firstCall is st for the first call of an ID in a batch; a later call of
// the same ID is in progress when the first one got the claim.
func firstCall(st Status, first bool) Status {
	if !first && st == StatusNew {
		return StatusInProgress
	}
	return st
}

// abandonedClaim releases a claim that a batch made for a caller that had
// stopped waiting: nobody will handle the message under it.
func (s *PostgresStore) abandonedClaim(id string, st Status, err error) {
	if err != nil || st != StatusNew {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), abandonTimeout)
	defer cancel()
	_ = s.Abort(ctx, id)
}

// doneMany records the IDs as done in one statement, locking them in
// sorted order. Every ID was handled successfully by its own caller before
// it was queued here.
func (s *PostgresStore) doneMany(ctx context.Context, ids []string) ([]struct{}, []error) {
	errs := make([]error, len(ids))
	if len(ids) == 1 {
		errs[0] = s.doneOne(ctx, ids[0])
		return make([]struct{}, 1), errs
	}
	recs := make([]string, len(ids))
	for i, id := range ids {
		recs[i] = recordID(id)
	}
	_, err := s.pool.Exec(ctx, `INSERT INTO `+s.table+` AS r (namespace, id, done, owner, expires_at)
  SELECT $1, id, true, '', now() + $3 * interval '1 millisecond' FROM (SELECT DISTINCT unnest($2::text[]) AS id) i ORDER BY id
  ON CONFLICT (namespace, id) DO UPDATE
    SET done = true, owner = '', expires_at = EXCLUDED.expires_at, updated_at = now()`,
		s.cfg.Namespace, recs, s.cfg.Retention.Milliseconds())
	if err != nil {
		permanent := len(ids) > 1 && reliable.IsPermanent(storeError(err))
		for i, id := range ids {
			if permanent {
				errs[i] = s.doneOne(ctx, id) // each ID gets its own answer
			} else {
				errs[i] = storeError(fmt.Errorf("idempotency: postgres done %s: %w", quoteShort(id), err))
			}
		}
	}
	return make([]struct{}, len(ids)), errs
}

// DoneTx records id as done inside tx, the handler's own transaction: the
// record commits or rolls back with the handler's effects, so a crash can
// never leave the effects without the record. Call it once, after Begin
// returned StatusNew, as the handler's last statement before Commit; if the
// commit fails, call Abort.
//
// DoneTx is fenced to the claim's owner, as ProcessTx is: when the claim
// was lost (it expired while the handler ran and another consumer claimed
// the ID, or the ID is done already) it returns an error matching
// ErrClaimLost and the caller must roll tx back, so the handler's effects
// commit at most once. Ownership is per store value: give each consumer
// process its own PostgresStore.
func (s *PostgresStore) DoneTx(ctx context.Context, tx pgx.Tx, id string) error {
	if id == "" {
		return ErrEmptyID
	}
	tag, err := tx.Exec(ctx, s.doneTxSQL(), s.cfg.Namespace, recordID(id), s.cfg.Retention.Milliseconds(), s.owner)
	if err != nil {
		return storeError(fmt.Errorf("idempotency: postgres done in tx %s: %w", quoteShort(id), err))
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("idempotency: postgres done in tx %s: %w", quoteShort(id), ErrClaimLost)
	}
	return nil
}

// Abort implements [Store]. It releases only a claim this store made, so a
// consumer whose claim expired cannot release the claim another consumer took
// since.
func (s *PostgresStore) Abort(ctx context.Context, id string) error {
	if id == "" {
		return ErrEmptyID
	}
	if _, err := pgplan.Exec(ctx, s.pool, `DELETE FROM `+s.table+` WHERE namespace = $1 AND id = $2 AND NOT done AND owner = $3`,
		s.cfg.Namespace, recordID(id), s.owner); err != nil {
		return storeError(fmt.Errorf("idempotency: postgres abort %s: %w", quoteShort(id), err))
	}
	return nil
}

// ProcessTx runs fn exactly once in effect for id: in one transaction it
// records id as done, then runs fn, then commits, so fn's writes and the
// record commit together or not at all. It returns StatusNew when fn ran and
// committed, StatusDone (without calling fn) when id was already done, or
// fn's error after rolling back.
//
// The record's row lock is the claim: a concurrent ProcessTx of the same id
// waits until this transaction ends, then skips (commit) or runs (rollback).
// A crash rolls back, so nothing expires or needs Abort. Use either
// ProcessTx or Begin/Done for a namespace, not both: ProcessTx takes over a
// live claim made by Begin.
func (s *PostgresStore) ProcessTx(ctx context.Context, id string, fn func(ctx context.Context, tx pgx.Tx) error) (Status, error) {
	if id == "" {
		return 0, ErrEmptyID
	}
	s.maybeCleanup()
	var st Status
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, s.claimTxSQL(), s.cfg.Namespace, recordID(id), s.cfg.Retention.Milliseconds())
		if err != nil {
			return storeError(fmt.Errorf("idempotency: postgres claim in tx %s: %w", quoteShort(id), err))
		}
		if tag.RowsAffected() == 0 {
			st = StatusDone
			return errSkip
		}
		st = StatusNew
		return fn(ctx, tx)
	})
	if errors.Is(err, errSkip) {
		return StatusDone, nil
	}
	if err != nil {
		return 0, err
	}
	return st, nil
}

var errSkip = errors.New("skip")

// doneTxSQL records $2 done inside the caller's transaction, fenced to the
// claim's owner $4 (DoneTx, DoneTxSQL): no row changes when the claim was lost.
func (s *PostgresStore) doneTxSQL() string {
	return `INSERT INTO ` + s.table + ` AS r (namespace, id, done, owner, expires_at)
  VALUES ($1, $2, true, '', now() + $3 * interval '1 millisecond')
  ON CONFLICT (namespace, id) DO UPDATE
    SET done = true, owner = '', expires_at = EXCLUDED.expires_at, updated_at = now()
    WHERE NOT r.done AND r.owner = $4`
}

// claimTxSQL claims $2 by recording it done inside the handler's transaction
// (ProcessTx, ProcessTxSQL): the row lock is the claim, and no row changes
// when $2 is done already.
func (s *PostgresStore) claimTxSQL() string {
	return `INSERT INTO ` + s.table + ` AS r (namespace, id, done, owner, expires_at)
  VALUES ($1, $2, true, '', now() + $3 * interval '1 millisecond')
  ON CONFLICT (namespace, id) DO UPDATE
    SET done = true, owner = '', expires_at = EXCLUDED.expires_at, updated_at = now()
    WHERE NOT r.done OR r.expires_at <= now()`
}

// Cleanup deletes the namespace's expired claims and done records older than
// the retention, CleanupBatchSize rows per statement, and returns how many it
// deleted. Run it periodically (L17); it stops early when ctx ends.
func (s *PostgresStore) Cleanup(ctx context.Context) (int64, error) {
	q := `DELETE FROM ` + s.table + ` WHERE (namespace, id) IN (
  SELECT namespace, id FROM ` + s.table + ` WHERE namespace = $1 AND expires_at < now()
  LIMIT $2 FOR UPDATE SKIP LOCKED)`
	var total int64
	for {
		tag, err := pgplan.Exec(ctx, s.pool, q, s.cfg.Namespace, s.cfg.CleanupBatchSize)
		if err != nil {
			return total, fmt.Errorf("idempotency: postgres cleanup: %w", err)
		}
		total += tag.RowsAffected()
		if tag.RowsAffected() < int64(s.cfg.CleanupBatchSize) {
			return total, nil
		}
	}
}

// maybeCleanup starts one background Cleanup when CleanupInterval has
// passed since the last one started and none runs.
func (s *PostgresStore) maybeCleanup() {
	if s.cfg.CleanupInterval < 0 {
		return
	}
	now := time.Now().UnixNano()
	last := s.lastCleanup.Load()
	if now-last < int64(s.cfg.CleanupInterval) || !s.cleaning.CompareAndSwap(false, true) {
		return
	}
	s.lastCleanup.Store(now)
	go func() {
		defer s.cleaning.Store(false)
		ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
		defer cancel()
		n, err := s.Cleanup(ctx)
		switch {
		case err != nil:
			s.cfg.Logger.Warn("idempotency cleanup failed; retried after the interval", slog.String("table", s.table), slog.Any("error", err))
		case n > 0:
			s.cfg.Logger.Info("idempotency cleanup", slog.String("table", s.table), slog.Int64("deleted", n))
		}
	}()
}

// cleanupTimeout bounds one background cleanup.
const cleanupTimeout = 5 * time.Minute

// RunCleanup calls Cleanup every interval until ctx ends, logging failures
// on logger (slog.Default() when nil). The store cleans up by itself (see
// PostgresConfig.CleanupInterval); RunCleanup is for a store with that
// disabled, or with little Begin traffic. Concurrent cleanups skip each
// other's rows.
func (s *PostgresStore) RunCleanup(ctx context.Context, interval time.Duration, logger *slog.Logger) {
	if logger == nil {
		logger = slog.Default()
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		n, err := s.Cleanup(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			logger.ErrorContext(ctx, "idempotency cleanup failed", "table", s.table, "error", err)
		case n > 0:
			logger.InfoContext(ctx, "idempotency cleanup", "table", s.table, "deleted", n)
		}
	}
}
