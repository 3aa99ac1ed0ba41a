package outbox_test

import (
	"context"
	"encoding/json"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/reliable-go/reliable/outbox"
)

// claimPlan runs EXPLAIN (ANALYZE, BUFFERS) of the claim statement on db,
// rolled back, and returns the buffers it touched and the text plan.
func claimPlan(t *testing.T, db *testDB) (int64, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	args := []any{"bench-relay", 2048, "", false, int64(30000)}
	var buffers int64
	var text strings.Builder
	err := pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		var raw []byte
		if err := tx.QueryRow(ctx, "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) "+outbox.ClaimSQL, args...).Scan(&raw); err != nil {
			return err
		}
		var plans []struct {
			Plan map[string]any `json:"Plan"`
		}
		if err := json.Unmarshal(raw, &plans); err != nil {
			return err
		}
		for _, k := range []string{"Shared Hit Blocks", "Shared Read Blocks"} {
			if v, ok := plans[0].Plan[k].(float64); ok {
				buffers += int64(v)
			}
		}
		rows, err := tx.Query(ctx, "EXPLAIN (ANALYZE, BUFFERS) "+outbox.ClaimSQL, args...)
		if err != nil {
			return err
		}
		lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return err
		}
		text.WriteString(strings.Join(lines, "\n"))
		return errRollback
	})
	if err != errRollback {
		t.Fatal(err)
	}
	return buffers, text.String()
}

var errRollback = &rollback{}

type rollback struct{}

func (*rollback) Error() string { return "rollback" }

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// Issue 15 item 4: the claim reads a number of buffers that depends on the
// keys it passes, not on the rows behind them. With every key leased by
// another relay, 100 keys x 2,000 rows touch at most 2x the buffers of 100
// keys x 10 rows. Before, the claim read every pending row: 16 buffers vs
// 3,408 (213x); after: 407 vs 544 (a walk of the 100 keys either way).
// OUTBOX_PLAN_DEAD adds that many dead rows over 1,000 more keys. OUTBOX_PLAN_ROWS and OUTBOX_PLAN_KEYS set the deep shape, whose
// plan is logged (-v).
func TestClaimPlanReadsKeysNotRows(t *testing.T) {
	t.Parallel()
	keys := envInt("OUTBOX_PLAN_KEYS", 100)
	shallow, deep := newTestDB(t, 4), newTestDB(t, 4)
	fillBacklog(t, shallow, 10*keys, keys)
	if dead := envInt("OUTBOX_PLAN_DEAD", 0); dead > 0 {
		// Dead rows over 1,000 keys of their own, leased elsewhere too.
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if _, err := deep.pool.Exec(ctx, `INSERT INTO reliable_outbox (lane, msg_id, topic, key, type, payload, event_time, dead_at)
			SELECT 'k:dead-' || (i % 1000), 'dead-' || i, 'orders', 'dead-' || (i % 1000), 'order.event', '\x00'::bytea, now(), now()
			FROM generate_series(1, $1) AS i`, dead); err != nil {
			t.Fatal(err)
		}
	}
	fillBacklog(t, deep, envInt("OUTBOX_PLAN_ROWS", 2000*keys), keys)
	sb, _ := claimPlan(t, shallow)
	db, plan := claimPlan(t, deep)
	t.Logf("claim with every key leased, %d keys: %d buffers with 10 rows per key, %d with the deep backlog; its plan:\n%s", keys, sb, db, plan)
	if db > 2*sb+20 {
		t.Fatalf("the claim over the deep backlog touched %d buffers, %.0fx the %d over 10 rows per key", db, float64(db)/float64(sb), sb)
	}
}
