package retry_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/reliable-go/reliable/retry"
)

// Issue 15 item 8 (L17, L18): Stats reads the group's open entries through
// an index, not the history the retention keeps. With 5 pending entries
// beside 20,000 done ones, the Stats statement touches a few buffers.
// Before (no index covering pending, dead and released) it read the whole
// table: 363 buffers, growing with the history; after: 2.
func TestStatsReadsOpenEntriesNotTheHistory(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, typ := range []string{"a", "b", "c", "d", "e"} {
		must(t, b.table.Park(ctx, orderMsg("order-"+typ, typ), nil))
	}
	_, err := b.pool.Exec(ctx, `INSERT INTO `+b.cfg.Table+` (grp, lane, message_id, msg_key, topic, msg_type, state, finished_at)
		SELECT $1, 'k:h' || i, 'h' || i, 'h' || i, 'orders', 'order.done', 'done', now() FROM generate_series(1, 20000) AS i`, b.cfg.Group)
	must(t, err)
	_, err = b.pool.Exec(ctx, `ANALYZE `+b.cfg.Table)
	must(t, err)

	st, err := b.table.Status(ctx)
	must(t, err)
	if st.Pending != 5 {
		t.Fatalf("stats %+v, want 5 pending", st)
	}
	var raw []byte
	must(t, b.pool.QueryRow(ctx, `EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) `+retry.StatsSQL(b.table), b.cfg.Group).Scan(&raw))
	var plans []struct {
		Plan map[string]any `json:"Plan"`
	}
	must(t, json.Unmarshal(raw, &plans))
	hit, _ := plans[0].Plan["Shared Hit Blocks"].(float64)
	read, _ := plans[0].Plan["Shared Read Blocks"].(float64)
	t.Logf("Stats over 5 open and 20,000 done entries: %.0f buffers", hit+read)
	if hit+read > 20 {
		t.Fatalf("Stats touched %.0f buffers for 5 open entries: it reads the done history", hit+read)
	}
}
