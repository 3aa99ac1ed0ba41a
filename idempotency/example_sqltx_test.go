package idempotency_test

import (
	"context"
	"database/sql"
	"errors"
	"log"
	"os"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/idempotency"
)

// Exactly-once effects for a handler on database/sql (sqlx, GORM, sqlc):
// the dedupe record commits in the handler's own *sql.Tx. The store runs on
// a pgxpool; stdlib.OpenDBFromPool gives the handler a *sql.DB on the same
// pool (with lib/pq, open the *sql.DB as usual).
func ExamplePostgresStore_ProcessTxSQL() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	db := stdlib.OpenDBFromPool(pool) // with sqlx: sqlx.NewDb(db, "pgx")
	store, err := idempotency.NewPostgres(pool, idempotency.PostgresConfig{Namespace: "kitchen-display"})
	if err != nil {
		log.Fatal(err)
	}
	if err := store.Migrate(ctx); err != nil { // once, at start-up
		log.Fatal(err)
	}
	msg := &reliable.Message{ID: "0193-paid", Key: "order-42", Type: "order.paid"}
	st, err := store.ProcessTxSQL(ctx, db, msg.ID, func(ctx context.Context, tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE tickets SET paid = true WHERE order_id = $1`, msg.Key)
		return err
	})
	if err != nil {
		log.Print(err) // rolled back: no effect and no record; retry later
	}
	if st == idempotency.StatusDone {
		log.Print("duplicate skipped")
	}
}

// The consumer's flow (Begin, then the effect and DoneTxSQL in the
// handler's transaction, Abort on failure), as a handler on GORM or sqlx
// writes it with the *sql.Tx of its own transaction.
func ExamplePostgresStore_DoneTxSQL() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	db := stdlib.OpenDBFromPool(pool)
	store, err := idempotency.NewPostgres(pool, idempotency.PostgresConfig{Namespace: "kitchen-display"})
	if err != nil {
		log.Fatal(err)
	}
	msg := &reliable.Message{ID: "0193-paid", Key: "order-42", Type: "order.paid"}
	st, err := store.Begin(ctx, msg.ID)
	if err != nil || st != idempotency.StatusNew {
		log.Printf("not processed now: %s, %v", st, err) // done: skip; in progress: redeliver later
		return
	}
	err = func() error {
		tx, err := db.BeginTx(ctx, nil) // GORM: gtx.Statement.ConnPool.(*sql.Tx) inside db.Transaction
		if err != nil {
			return err
		}
		defer tx.Rollback() //nolint:errcheck // a no-op after Commit
		if _, err := tx.ExecContext(ctx, `UPDATE tickets SET paid = true WHERE order_id = $1`, msg.Key); err != nil {
			return err
		}
		if err := store.DoneTxSQL(ctx, tx, msg.ID); err != nil {
			return err // ErrClaimLost: another consumer took the message over; roll back
		}
		return tx.Commit()
	}()
	if err != nil {
		if !errors.Is(err, idempotency.ErrClaimLost) {
			_ = store.Abort(ctx, msg.ID) // release the claim so a retry may run at once
		}
		log.Print(err)
	}
}
