package retry_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/internal/testenv"
	"github.com/reliable-go/reliable/retry"
)

// Issue 19 (the outbox relay's stall), checked on the retry table: pgx runs
// statements as prepared statements, and PostgreSQL switches a prepared
// statement to a generic plan after five executions when that plan costs
// no more than the custom ones. A retry table is empty or holds a few rows
// most of the time, and every lookup's generic plan made then is a
// sequential scan; an outage then parks thousands of messages. By hand
// (psql, PREPARE/EXECUTE with the exact statements, 20,000 entries over
// 5,000 keys, heads due): the claim took 24,970 ms with the plan cached
// while the table was tiny (a sequential scan of the table per due head)
// and 1.3 ms freshly planned; Blocked of a free key 4.0 ms vs 0.014 ms, Park
// 6.3 vs 0.09 ms, reading a lane's entries 2.6 vs 0.024 ms.
//
// A retrier and a consumer work a trickle of failures on a vacuumed,
// analyzed table (autovacuum off, so no ANALYZE rescues it) over a pool of
// two connections, long enough for both to cache generic plans; then 4,000
// entries over 2,000 keys appear at once, heads due, as after an outage.
// Blocked and Park on the grown table must find lanes by index (sequential
// scans of the table at most a tenth of the calls), one claim must take
// under 500 ms and the backlog drain within 60 s, every message applied
// once, in order per key. Before the fix (-race, 2 runs): 600 of 600
// lookups sequential scans, a claim 1.13-1.14 s, the backlog not drained in
// the budget; after (3 runs): 0 of 600, a claim 3.2-3.4 ms, drained in
// 5.9-8.1 s. (The consumer's time a message, 2.5 ms before and 2.7-3.5 ms
// after, is round trips under -race at this size: the scans' cost shows in
// server time, as above, and grows with the table.)
func TestRetryStaysFastWhenTableGrowsAfterIdle(t *testing.T) {
	t.Parallel()
	pool := testenv.PostgresPool(t, 2)
	cfg := retry.TableConfig{Group: "kitchen", Table: uniqueName("rt_"), Backoff: fastBackoff, Logger: testLogger()}
	dropTable(t, pool, cfg.Table, cfg.Table+"_leases", cfg.Table+"_migrations")
	tbl, err := retry.NewTable(pool, cfg)
	must(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	must(t, tbl.Migrate(ctx))
	for _, table := range []string{cfg.Table, cfg.Table + "_leases"} {
		_, err := pool.Exec(ctx, `ALTER TABLE `+table+` SET (autovacuum_enabled = false)`)
		must(t, err)
		_, err = pool.Exec(ctx, `VACUUM ANALYZE `+table)
		must(t, err)
	}

	l := newLedger()
	errBroker := errors.New("broker unavailable")
	// The retrier's replays succeed; the consumer's attempt of every third
	// message fails.
	h := reliable.HandlerFunc(func(_ context.Context, msg *reliable.Message) error {
		l.enter(msg.Key)
		defer l.exit(msg.Key)
		l.apply(msg)
		return nil
	})
	consumer := reliable.HandlerFunc(func(ctx context.Context, msg *reliable.Message) error {
		if n, _ := strconv.Atoi(msg.Type[len("order."):]); n%3 == 0 {
			return errBroker
		}
		return h.Handle(ctx, msg)
	})

	// Steady load: two consumers park a failure now and then, and the
	// retrier replays it while the table holds a handful of rows.
	stop := startRetrier(t, tbl, h, retry.RetrierConfig{Instance: "steady", PollInterval: 5 * time.Millisecond})
	var wg sync.WaitGroup
	for c := range 2 {
		wg.Go(func() {
			for i := range 60 {
				msg := orderMsg(fmt.Sprint("steady-", c, "-", i%4), strconv.Itoa(i))
				if err := consume(ctx, tbl, consumer, msg); err != nil {
					t.Error(err)
					return
				}
				time.Sleep(5 * time.Millisecond)
			}
		})
	}
	wg.Wait()
	waitFor(t, 20*time.Second, "the steady load applied", func() bool { return l.total() == 120 })
	stop()

	// An outage: 4,000 messages over 2,000 keys parked at once, each key's
	// head due.
	const rows, keys = 4000, 2000
	_, err = pool.Exec(ctx, `INSERT INTO `+cfg.Table+` (grp, lane, message_id, msg_key, topic, msg_type, payload, state, attempts, next_attempt_at)
		SELECT $1, 'k:key-' || (i % $3), 'key-' || (i % $3) || '/' || i, 'key-' || (i % $3), 'orders', 'order.' || i,
		  convert_to(repeat('x', 200), 'UTF8'), 'pending', CASE WHEN i <= $3 THEN 1 ELSE 0 END,
		  CASE WHEN i <= $3 THEN now() END
		FROM generate_series(1, $2) AS i`, cfg.Group, rows, keys)
	must(t, err)

	// The consumer goes on with other keys on the grown table: Blocked, then
	// Park of a failure, three lane lookups a message.
	const calls = 200
	seq0, idx0 := testenv.ScanCounts(ctx, t, pool, cfg.Table)
	start := time.Now()
	for i := range calls {
		if err := consume(ctx, tbl, consumer, orderMsg(fmt.Sprint("fresh-", i), "3")); err != nil {
			t.Fatal(err)
		}
	}
	perMsg := time.Since(start) / calls
	seq, idx := testenv.ScanCounts(ctx, t, pool, cfg.Table)
	t.Logf("%d messages on the grown table (Blocked, Park): %s a message; %d sequential and %d index scans of the table",
		calls, perMsg.Round(time.Microsecond), seq-seq0, idx-idx0)
	if seq-seq0 > 3*calls/10 {
		t.Errorf("%d of %d lane lookups on the grown table were sequential scans: a plan cached while the table was tiny", seq-seq0, 3*calls)
	}

	// One claim over the backlog, on a connection that claimed on the tiny
	// table; its leases are dropped again for the retrier below.
	probe, err := retry.NewRetrier(tbl, h, retry.RetrierConfig{Instance: "probe"})
	must(t, err)
	start = time.Now()
	claimed, err := retry.Claim(ctx, probe, 4, "probe")
	must(t, err)
	claim := time.Since(start)
	_, err = pool.Exec(ctx, `DELETE FROM `+cfg.Table+`_leases WHERE owner = 'probe'`)
	must(t, err)
	t.Logf("a claim over %d entries: %d keys in %s", rows, len(claimed), claim.Round(time.Microsecond))
	if claim > 500*time.Millisecond {
		t.Errorf("a claim over %d entries took %s: it scans the table per due head", rows, claim)
	}

	start = time.Now()
	startRetrier(t, tbl, h, retry.RetrierConfig{Instance: "drain", PollInterval: 5 * time.Millisecond})
	want := 120 + rows + calls
	waitFor(t, 60*time.Second, "the backlog drained", func() bool { return l.total() == want })
	t.Logf("backlog of %d entries over %d keys (and %d fresh failures) drained in %s", rows, keys, calls, time.Since(start).Round(time.Millisecond))

	// Ledger: every message once (check), each key in order.
	l.check(t)
	for k := range keys {
		key := fmt.Sprint("key-", k)
		first, second := k, k+keys
		if k == 0 {
			first, second = keys, 2*keys
		}
		if got := l.applied(key); !equal(got, []string{fmt.Sprint("order.", first), fmt.Sprint("order.", second)}) {
			t.Fatalf("%s: applied %v, want order.%d then order.%d", key, got, first, second)
		}
	}
	for i := range calls {
		if got := l.applied(fmt.Sprint("fresh-", i)); !equal(got, []string{"order.3"}) {
			t.Fatalf("fresh-%d: applied %v, want order.3 once", i, got)
		}
	}
}
