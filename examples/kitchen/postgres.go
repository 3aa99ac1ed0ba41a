package kitchen

import (
	"context"
	_ "embed"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/reliable-go/reliable/idempotency"
)

//go:embed schema.sql
var schema string

// PostgresStore is a Store in PostgreSQL: tables kitchen_orders,
// kitchen_dishes and kitchen_ledger in the search_path.
type PostgresStore struct {
	pool  *pgxpool.Pool
	dedup *idempotency.PostgresStore
}

// NewPostgresStore returns a store on pool. When dedup is not nil (the
// consumer's dedupe store, on the same database), Apply records the message
// as done inside its own transaction (DoneTx): the effect and the dedupe
// record commit together, so even a crash between them cannot apply an event
// twice (L20). Call Migrate once before use.
func NewPostgresStore(pool *pgxpool.Pool, dedup *idempotency.PostgresStore) *PostgresStore {
	return &PostgresStore{pool: pool, dedup: dedup}
}

// Migrate creates the tables. It is idempotent.
func (s *PostgresStore) Migrate(ctx context.Context) error {
	if _, err := s.pool.Exec(ctx, schema); err != nil {
		return fmt.Errorf("kitchen: migrate: %w", err)
	}
	return nil
}

// Apply implements Store with an upsert, never check-then-insert (L19).
func (s *PostgresStore) Apply(ctx context.Context, u Update) (bool, error) {
	var changed bool
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `
INSERT INTO kitchen_orders AS k (order_id, status, version, table_no) VALUES ($1, $2, $3, $4)
ON CONFLICT (order_id) DO UPDATE
  SET status = EXCLUDED.status, version = EXCLUDED.version, table_no = EXCLUDED.table_no, updated_at = now()
  WHERE EXCLUDED.version > k.version`, u.OrderID, u.Status, u.Version, u.Table)
		if err != nil {
			return fmt.Errorf("kitchen: upsert order %s: %w", u.OrderID, err)
		}
		changed = tag.RowsAffected() == 1
		batch := &pgx.Batch{}
		for i, d := range u.Dishes {
			// Served dishes stay served: an existing row is left alone.
			batch.Queue(`INSERT INTO kitchen_dishes (order_id, position, name, quantity) VALUES ($1, $2, $3, $4)
ON CONFLICT (order_id, position) DO NOTHING`, u.OrderID, i, d.Name, d.Quantity)
		}
		batch.Queue(`INSERT INTO kitchen_ledger (message_id, order_id, version, status, effective) VALUES ($1, $2, $3, $4, $5)`,
			u.MessageID, u.OrderID, u.Version, u.Status, changed)
		if err := tx.SendBatch(ctx, batch).Close(); err != nil {
			return fmt.Errorf("kitchen: apply %s: %w", u.OrderID, err)
		}
		if s.dedup != nil && u.MessageID != "" {
			return s.dedup.DoneTx(ctx, tx, u.MessageID)
		}
		return nil
	})
	return changed, err
}

// Serve implements Store.
func (s *PostgresStore) Serve(ctx context.Context, orderID string, dish int) error {
	tag, err := s.pool.Exec(ctx, `UPDATE kitchen_dishes SET served_at = coalesce(served_at, now())
WHERE order_id = $1 AND position = $2`, orderID, dish)
	if err != nil {
		return fmt.Errorf("kitchen: serve: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return ErrNotFound
	}
	_, err = s.pool.Exec(ctx, `UPDATE kitchen_orders SET updated_at = now() WHERE order_id = $1`, orderID)
	return err
}

// Get implements Store.
func (s *PostgresStore) Get(ctx context.Context, id string) (Order, error) {
	os, err := s.query(ctx, `WHERE o.order_id = $1`, id)
	if err != nil {
		return Order{}, err
	}
	if len(os) == 0 {
		return Order{}, ErrNotFound
	}
	return os[0], nil
}

// List implements Store.
func (s *PostgresStore) List(ctx context.Context) ([]Order, error) { return s.query(ctx, "") }

func (s *PostgresStore) query(ctx context.Context, where string, args ...any) ([]Order, error) {
	rows, err := s.pool.Query(ctx, `
SELECT o.order_id, o.status, o.version, o.table_no, o.updated_at,
       coalesce(array_agg(d.name ORDER BY d.position) FILTER (WHERE d.name IS NOT NULL), '{}'),
       coalesce(array_agg(d.quantity ORDER BY d.position) FILTER (WHERE d.name IS NOT NULL), '{}'),
       coalesce(array_agg(d.served_at IS NOT NULL ORDER BY d.position) FILTER (WHERE d.name IS NOT NULL), '{}')
FROM kitchen_orders o LEFT JOIN kitchen_dishes d ON d.order_id = o.order_id `+where+`
GROUP BY o.order_id ORDER BY o.updated_at DESC, o.order_id`, args...)
	if err != nil {
		return nil, fmt.Errorf("kitchen: list: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Order, error) {
		var o Order
		var names []string
		var qty []int32
		var served []bool
		if err := r.Scan(&o.ID, &o.Status, &o.Version, &o.Table, &o.UpdatedAt, &names, &qty, &served); err != nil {
			return o, err
		}
		for i := range names {
			o.Dishes = append(o.Dishes, Dish{Name: names[i], Quantity: int(qty[i]), Served: served[i]})
		}
		return o, nil
	})
	if err != nil {
		return nil, fmt.Errorf("kitchen: list: %w", err)
	}
	return out, nil
}

// Ledger implements Store.
func (s *PostgresStore) Ledger(ctx context.Context) ([]LedgerEntry, error) {
	rows, err := s.pool.Query(ctx, `SELECT seq, message_id, order_id, version, status, effective, applied_at
FROM kitchen_ledger ORDER BY seq`)
	if err != nil {
		return nil, fmt.Errorf("kitchen: ledger: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (LedgerEntry, error) {
		var e LedgerEntry
		err := r.Scan(&e.Seq, &e.MessageID, &e.OrderID, &e.Version, &e.Status, &e.Effective, &e.AppliedAt)
		return e, err
	})
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("kitchen: ledger: %w", err)
	}
	return out, nil
}
