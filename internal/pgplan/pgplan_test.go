package pgplan_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/reliable-go/reliable/internal/pgplan"
	"github.com/reliable-go/reliable/internal/testenv"
)

// Query, QueryRow and Exec run their statement with plan_cache_mode set to
// force_custom_plan, and the setting ends with the statement's implicit
// transaction: the pool's connection is back to the server's default. (The
// effect on a grown table is tested where the tables are: outbox, retry and
// idempotency's plancache tests.)
func TestStatementsRunWithCustomPlansOnly(t *testing.T) {
	pool := testenv.PostgresPool(t, 1) // one connection: every call uses it
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const mode = `SELECT current_setting('plan_cache_mode')`
	var before string
	if err := pool.QueryRow(ctx, mode).Scan(&before); err != nil {
		t.Fatal(err)
	}
	if before == "force_custom_plan" {
		t.Fatalf("the server's default plan_cache_mode is already %q: the test cannot tell", before)
	}

	var got string
	if err := pgplan.QueryRow(ctx, pool, mode, nil, &got); err != nil || got != "force_custom_plan" {
		t.Fatalf("QueryRow saw plan_cache_mode %q (err %v), want force_custom_plan", got, err)
	}
	var rows []string
	err := pgplan.Query(ctx, pool, func(r pgx.Rows) (err error) {
		rows, err = pgx.CollectRows(r, pgx.RowTo[string])
		return err
	}, mode+` FROM generate_series(1, $1::int)`, 2)
	if err != nil || len(rows) != 2 || rows[0] != "force_custom_plan" {
		t.Fatalf("Query saw %q (err %v), want force_custom_plan twice", rows, err)
	}
	tag, err := pgplan.Exec(ctx, pool, `DO $$ BEGIN IF current_setting('plan_cache_mode') <> 'force_custom_plan' THEN RAISE EXCEPTION 'plan_cache_mode is %', current_setting('plan_cache_mode'); END IF; END $$`)
	if err != nil {
		t.Fatalf("Exec: %v (%s)", err, tag)
	}

	var after string
	if err := pool.QueryRow(ctx, mode).Scan(&after); err != nil || after != before {
		t.Fatalf("after the calls the connection's plan_cache_mode is %q (err %v), want the default %q", after, err, before)
	}
	// An error in the statement comes back, and the connection stays usable.
	if err := pgplan.QueryRow(ctx, pool, `SELECT 1/0`, nil, new(int)); err == nil {
		t.Fatal("QueryRow of 1/0 returned no error")
	}
	if err := pool.QueryRow(ctx, mode).Scan(&after); err != nil || after != before {
		t.Fatalf("after a failed statement plan_cache_mode is %q (err %v), want %q", after, err, before)
	}
}
