package idempotency

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgconn"
)

// The database/sql forms of DoneTx and ProcessTx, for handlers on sqlx,
// GORM, sqlc's database/sql mode or plain database/sql (pgx's stdlib driver
// or lib/pq). The store itself (Begin, Done, Abort, Migrate, Cleanup) stays
// on its pgxpool; only the handler's transaction is a *sql.Tx. Their
// statements are DoneTx's and ProcessTx's (postgres.go), so records written
// either way are the same records: the paths may be mixed on one table.

// DoneTxSQL is [PostgresStore.DoneTx] for database/sql: it records id as
// done inside tx, the handler's own transaction, so the record commits or
// rolls back with the handler's effects. Call it once, after Begin returned
// StatusNew, as the handler's last statement before Commit; if the commit
// fails, call Abort.
//
// Like DoneTx it is fenced to the claim's owner: when the claim was lost (it
// expired and another consumer claimed the ID, or the ID is done already)
// it returns an error matching ErrClaimLost and the caller must roll tx
// back, so the effects commit at most once.
//
// With GORM, pass the *sql.Tx of the transaction
// (gtx.Statement.ConnPool.(*sql.Tx) inside db.Transaction); with sqlx, tx.Tx.
func (s *PostgresStore) DoneTxSQL(ctx context.Context, tx *sql.Tx, id string) error {
	if id == "" {
		return ErrEmptyID
	}
	if tx == nil {
		return errors.New("idempotency: postgres done in tx: tx is nil")
	}
	// DoneTx's statement.
	res, err := tx.ExecContext(ctx, s.doneTxSQL(), s.cfg.Namespace, recordID(id), s.cfg.Retention.Milliseconds(), s.owner)
	if err != nil {
		return storeError(fmt.Errorf("idempotency: postgres done in tx %s: %w", quoteShort(id), sqlStateError(err)))
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("idempotency: postgres done in tx %s: %w", quoteShort(id), err)
	}
	if n == 0 {
		return fmt.Errorf("idempotency: postgres done in tx %s: %w", quoteShort(id), ErrClaimLost)
	}
	return nil
}

// ProcessTxSQL is [PostgresStore.ProcessTx] for database/sql: it runs fn
// exactly once in effect for id. In one transaction begun on db it records
// id as done, then runs fn with that transaction, then commits, so fn's
// writes and the record commit together or not at all. It returns StatusNew
// when fn ran and committed, StatusDone (without calling fn) when id was
// already done, or fn's error (or the commit's) after rolling back. A panic
// in fn rolls back and propagates.
//
// The record's row lock is the claim: a concurrent ProcessTxSQL or
// ProcessTx of the same id waits until this transaction ends, then skips
// (commit) or runs (rollback). A crash rolls back, so nothing expires or
// needs Abort. As with ProcessTx, use it or Begin/Done for a namespace, not
// both.
//
// fn must do its writes through tx (with sqlx, sqlx.NewTx; with sqlc,
// queries.WithTx(tx)). db is usually the handle the rest of the service
// uses; with sqlx pass db.DB, with GORM the *sql.DB of gormDB.DB().
func (s *PostgresStore) ProcessTxSQL(ctx context.Context, db *sql.DB, id string, fn func(ctx context.Context, tx *sql.Tx) error) (Status, error) {
	if id == "" {
		return 0, ErrEmptyID
	}
	if db == nil {
		return 0, errors.New("idempotency: postgres process in tx: db is nil")
	}
	s.maybeCleanup()
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("idempotency: postgres begin tx %s: %w", quoteShort(id), err)
	}
	committed := false
	defer func() {
		if !committed {
			_ = tx.Rollback() // also on a panic in fn
		}
	}()
	// ProcessTx's claim: done at once, inside the transaction.
	res, err := tx.ExecContext(ctx, s.claimTxSQL(), s.cfg.Namespace, recordID(id), s.cfg.Retention.Milliseconds())
	if err != nil {
		return 0, storeError(fmt.Errorf("idempotency: postgres claim in tx %s: %w", quoteShort(id), sqlStateError(err)))
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("idempotency: postgres claim in tx %s: %w", quoteShort(id), err)
	}
	if n == 0 {
		return StatusDone, nil // rolled back by the deferred call: nothing was written
	}
	if err := fn(ctx, tx); err != nil {
		return 0, err
	}
	committed = true // a failed Commit has ended the transaction too
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("idempotency: postgres commit %s: %w", quoteShort(id), err)
	}
	return StatusNew, nil
}

// sqlStateError lets storeError, which looks for *pgconn.PgError, see the
// SQLSTATE of another driver's error (lib/pq's *pq.Error); the original
// error stays in the chain for errors.As.
func sqlStateError(err error) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return err // pgx's stdlib driver
	}
	var st interface{ SQLState() string }
	if !errors.As(err, &st) || st.SQLState() == "" {
		return err
	}
	return &driverError{err: err, pg: &pgconn.PgError{Severity: "ERROR", Code: st.SQLState(), Message: err.Error()}}
}

type driverError struct {
	err error
	pg  *pgconn.PgError
}

func (e *driverError) Error() string   { return e.err.Error() }
func (e *driverError) Unwrap() []error { return []error{e.err, e.pg} }
