package outbox_test

import (
	"context"
	"log"
	"os"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/outbox"
)

// A service on database/sql (sqlx, GORM, sqlc) writes the order and its
// event in its own transaction: both commit, or neither does. The relay
// runs on a pgxpool; stdlib.OpenDBFromPool gives the service a *sql.DB on
// the same pool (with lib/pq, open the *sql.DB as usual).
//
// With sqlx, pass tx.Tx; with GORM, inside db.Transaction pass
// gtx.Statement.ConnPool.(*sql.Tx); with sqlc, use queries.WithTx(tx) for
// the business writes and AddSQL(ctx, tx, ...) for the events.
func ExampleAddSQL() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	db := stdlib.OpenDBFromPool(pool)
	defer db.Close()

	paid := &reliable.Message{Topic: "orders", Key: "order-42", Type: "order.paid", Payload: []byte(`{"id":"order-42","status":"paid"}`)}
	err = func() error {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		defer tx.Rollback() //nolint:errcheck // a no-op after Commit
		if _, err := tx.ExecContext(ctx, `UPDATE orders SET status = 'paid' WHERE id = $1`, "order-42"); err != nil {
			return err
		}
		if err := outbox.AddSQL(ctx, tx, paid); err != nil {
			return err
		}
		return tx.Commit()
	}()
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("committed; consumers will deduplicate on %s", paid.ID)
}
