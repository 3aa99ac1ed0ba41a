package orders

import (
	"context"
	_ "embed"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/outbox"
)

//go:embed schema.sql
var schema string

// PostgresStore keeps orders in PostgreSQL (tables orders and order_dishes)
// and writes each change's event to the SDK's outbox in the same
// transaction (outbox.Add): the event is published if and only if the change
// committed. Run an outbox.Relay on the same database to publish them.
type PostgresStore struct {
	pool *pgxpool.Pool
}

// NewPostgresStore returns a store on pool. Call Migrate once before use.
func NewPostgresStore(pool *pgxpool.Pool) *PostgresStore { return &PostgresStore{pool: pool} }

// Migrate creates the order tables and the outbox tables in the search_path.
// It is idempotent.
func (s *PostgresStore) Migrate(ctx context.Context) error {
	if _, err := s.pool.Exec(ctx, schema); err != nil {
		return fmt.Errorf("orders: migrate: %w", err)
	}
	if err := outbox.Migrate(ctx, s.pool); err != nil {
		return fmt.Errorf("orders: migrate outbox: %w", err)
	}
	return nil
}

// Create implements Store: the order, its dishes and its event in one
// transaction.
func (s *PostgresStore) Create(ctx context.Context, o Order, event *reliable.Message) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO orders (id, status, version, table_no, created_at, updated_at)
VALUES ($1, $2, $3, $4, $5, $6)`, o.ID, o.Status, o.Version, o.Table, o.CreatedAt, o.UpdatedAt); err != nil {
			return fmt.Errorf("orders: insert order %s: %w", o.ID, err)
		}
		rows := make([][]any, len(o.Dishes))
		for i, d := range o.Dishes {
			rows[i] = []any{o.ID, i, d.Name, d.Quantity}
		}
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"order_dishes"}, []string{"order_id", "position", "name", "quantity"},
			pgx.CopyFromRows(rows)); err != nil {
			return fmt.Errorf("orders: insert dishes of %s: %w", o.ID, err)
		}
		return outbox.Add(ctx, tx, event)
	})
}

// Update implements Store. The order row is locked for the transaction, so
// concurrent transitions of one order serialise.
func (s *PostgresStore) Update(ctx context.Context, id string, change func(o *Order) (*reliable.Message, error)) (Order, error) {
	var out Order
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		o, err := get(ctx, tx, id, true)
		if err != nil {
			return err
		}
		event, err := change(&o)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE orders SET status = $2, version = $3, updated_at = $4 WHERE id = $1`,
			o.ID, o.Status, o.Version, o.UpdatedAt); err != nil {
			return fmt.Errorf("orders: update %s: %w", id, err)
		}
		if event != nil {
			if err := outbox.Add(ctx, tx, event); err != nil {
				return err
			}
		}
		out = o
		return nil
	})
	return out, err
}

// Get implements Store.
func (s *PostgresStore) Get(ctx context.Context, id string) (Order, error) {
	var out Order
	err := pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{AccessMode: pgx.ReadOnly, IsoLevel: pgx.RepeatableRead}, func(tx pgx.Tx) error {
		var err error
		out, err = get(ctx, tx, id, false)
		return err
	})
	return out, err
}

// List implements Store.
func (s *PostgresStore) List(ctx context.Context) ([]Order, error) {
	var out []Order
	err := pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{AccessMode: pgx.ReadOnly, IsoLevel: pgx.RepeatableRead}, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `SELECT id, status, version, table_no, created_at, updated_at FROM orders ORDER BY created_at, id`)
		if err != nil {
			return err
		}
		idx := make(map[string]int)
		for rows.Next() {
			var o Order
			if err := rows.Scan(&o.ID, &o.Status, &o.Version, &o.Table, &o.CreatedAt, &o.UpdatedAt); err != nil {
				return err
			}
			idx[o.ID] = len(out)
			out = append(out, o)
		}
		if err := rows.Err(); err != nil {
			return err
		}
		rows, err = tx.Query(ctx, `SELECT order_id, name, quantity FROM order_dishes ORDER BY order_id, position`)
		if err != nil {
			return err
		}
		for rows.Next() {
			var id string
			var d Dish
			if err := rows.Scan(&id, &d.Name, &d.Quantity); err != nil {
				return err
			}
			if i, ok := idx[id]; ok {
				out[i].Dishes = append(out[i].Dishes, d)
			}
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("orders: list: %w", err)
	}
	return out, nil
}

func get(ctx context.Context, tx pgx.Tx, id string, lock bool) (Order, error) {
	q := `SELECT id, status, version, table_no, created_at, updated_at FROM orders WHERE id = $1`
	if lock {
		q += ` FOR UPDATE`
	}
	var o Order
	err := tx.QueryRow(ctx, q, id).Scan(&o.ID, &o.Status, &o.Version, &o.Table, &o.CreatedAt, &o.UpdatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return Order{}, ErrNotFound
	}
	if err != nil {
		return Order{}, fmt.Errorf("orders: get %s: %w", id, err)
	}
	rows, err := tx.Query(ctx, `SELECT name, quantity FROM order_dishes WHERE order_id = $1 ORDER BY position`, id)
	if err != nil {
		return Order{}, fmt.Errorf("orders: get dishes of %s: %w", id, err)
	}
	o.Dishes, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (Dish, error) {
		var d Dish
		return d, r.Scan(&d.Name, &d.Quantity)
	})
	if err != nil {
		return Order{}, fmt.Errorf("orders: get dishes of %s: %w", id, err)
	}
	return o, nil
}
