package idempotency_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/reliable-go/reliable/idempotency"
	"github.com/reliable-go/reliable/internal/testenv"
)

// Issue 19 (the outbox relay's stall), checked on the PostgreSQL dedupe
// store: pgx runs statements as prepared statements, and PostgreSQL
// switches a prepared statement to a generic plan after five executions
// when that plan costs no more than the custom ones. Planned while the
// table held a page, the store's lookups by (namespace, id) that are not
// an INSERT's conflict check (Begin's answer for an ID claimed or done
// already, Abort) and Cleanup's search were sequential scans, and stayed
// so as the table filled. By hand (psql, PREPARE/EXECUTE with the exact
// statements, 20,000 records): a duplicate Begin 1.6 ms cached vs 0.17 ms
// freshly planned, a batched Begin of 4 IDs 3.6 vs 0.55 ms, Abort 0.96 vs
// 0.015 ms, a Cleanup statement 5.4 vs 0.03 ms, each growing with the
// table. (A new ID's Begin and Done only use the conflict check, an index
// scan under any plan.)
//
// Two stores (lone and batched calls) work a trickle of messages on a
// vacuumed, analyzed table (autovacuum off, so no ANALYZE rescues it) over
// a pool of two connections; then the table holds 4,000 records, as after
// a day of traffic. Duplicate Begins, Aborts and Cleanups on it must find
// records by index: sequential scans of the table at most a tenth of the
// scans. Before the fix (2 runs): 306 of 502 scans sequential (every
// lookup but the conflict checks); after (3 runs): 0 of 497. (At this size
// the calls' time, 153-157 ms before and 96-115 ms after, shows little: the
// scans' cost grows with the table, see the figures above.)
func TestDedupeLookupsStayIndexedWhenTableGrowsAfterIdle(t *testing.T) {
	t.Parallel()
	pool := testenv.PostgresPool(t, 2)
	table := uniqueName("idem_plan_")
	dropTable(t, pool, table, table+"_migrations")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cfg := idempotency.PostgresConfig{Namespace: "plans", Table: table, CleanupInterval: -1, MaxBatch: 1}
	lone, err := idempotency.NewPostgres(pool, cfg)
	must(t, err)
	must(t, lone.Migrate(ctx))
	cfg.MaxBatch = 0
	batched, err := idempotency.NewPostgres(pool, cfg)
	must(t, err)
	_, err = pool.Exec(ctx, `ALTER TABLE `+table+` SET (autovacuum_enabled = false)`)
	must(t, err)
	_, err = pool.Exec(ctx, `VACUUM ANALYZE `+table)
	must(t, err)

	begin := func(s *idempotency.PostgresStore, id string, want idempotency.Status) {
		t.Helper()
		st, err := s.Begin(ctx, id)
		must(t, err)
		if st != want {
			t.Fatalf("Begin(%s) = %v, want %v", id, st, want)
		}
	}

	// Steady load on a near-empty table: messages handled (a fourth fail
	// and are aborted), redeliveries, a cleanup now and then; lone calls,
	// and batched ones from eight lanes at once.
	for i := range 40 {
		id := fmt.Sprint("steady-", i)
		begin(lone, id, idempotency.StatusNew)
		if i%4 == 0 {
			must(t, lone.Abort(ctx, id))
			begin(lone, id, idempotency.StatusNew)
		}
		must(t, lone.Done(ctx, id))
		begin(lone, id, idempotency.StatusDone)
		if i%5 == 0 {
			_, err := lone.Cleanup(ctx)
			must(t, err)
		}
	}
	var wg sync.WaitGroup
	for lane := range 8 {
		wg.Go(func() {
			for i := range 20 {
				if st, err := batched.Begin(ctx, fmt.Sprint("steady-", (lane*20+i)%40)); err != nil || st != idempotency.StatusDone {
					t.Errorf("batched Begin of a done ID: %v, %v", st, err)
					return
				}
			}
		})
	}
	wg.Wait()

	// A day of traffic later: 4,000 done records and 100 live claims of
	// another consumer.
	_, err = pool.Exec(ctx, `INSERT INTO `+table+` (namespace, id, done, owner, expires_at)
		SELECT $1, 'msg-' || i, i <= 4000, CASE WHEN i <= 4000 THEN '' ELSE 'other' END,
		  now() + CASE WHEN i <= 4000 THEN interval '7 days' ELSE interval '1 minute' END
		FROM generate_series(1, 4100) AS i`, cfg.Namespace)
	must(t, err)

	// Redeliveries (a consumer restarted), aborts of messages whose claim
	// another consumer holds, cleanups; lone and batched.
	const calls = 100
	seq0, idx0 := testenv.ScanCounts(ctx, t, pool, table)
	start := time.Now()
	for i := range calls {
		begin(lone, fmt.Sprint("msg-", 1+i*37), idempotency.StatusDone)
		must(t, lone.Abort(ctx, fmt.Sprint("msg-", 4001+i)))
	}
	for lane := range 8 {
		wg.Go(func() {
			for i := range calls / 8 {
				if st, err := batched.Begin(ctx, fmt.Sprint("msg-", 2+(lane*calls/8+i)*37)); err != nil || st != idempotency.StatusDone {
					t.Errorf("batched Begin of a done ID: %v, %v", st, err)
					return
				}
			}
		})
	}
	wg.Wait()
	for range 5 {
		_, err := lone.Cleanup(ctx)
		must(t, err)
	}
	elapsed := time.Since(start)
	seq, idx := testenv.ScanCounts(ctx, t, pool, table)
	lookups := (seq - seq0) + (idx - idx0)
	t.Logf("%d duplicate Begins, %d Aborts, %d batched duplicate Begins, 5 Cleanups over 4,100 records in %s: %d sequential and %d index scans of the table",
		calls, calls, calls/8*8, elapsed.Round(time.Millisecond), seq-seq0, idx-idx0)
	if lookups < 2*calls {
		t.Fatalf("%d scans counted for %d duplicate Begins and %d Aborts: the counts are not the store's", lookups, calls, calls)
	}
	if seq-seq0 > lookups/10 {
		t.Errorf("%d of %d scans of the filled dedupe table were sequential: a plan cached while it was nearly empty", seq-seq0, lookups)
	}
}
