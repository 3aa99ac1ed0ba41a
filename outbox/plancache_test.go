package outbox_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/outbox"
)

// ledgerPublisher records every message it confirms, in the order the relay
// handed them over, and confirms each on its own.
type ledgerPublisher struct {
	mu   sync.Mutex
	seen map[string]int      // message ID -> times published
	keys map[string][]string // key -> payloads in publish order
}

func newLedgerPublisher() *ledgerPublisher {
	return &ledgerPublisher{seen: map[string]int{}, keys: map[string][]string{}}
}

func (p *ledgerPublisher) note(msgs ...*reliable.Message) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, m := range msgs {
		p.seen[m.ID]++
		p.keys[m.Key] = append(p.keys[m.Key], string(m.Payload))
	}
}

func (p *ledgerPublisher) Publish(_ context.Context, msgs ...*reliable.Message) error {
	p.note(msgs...)
	return nil
}

func (p *ledgerPublisher) PublishAsync(_ context.Context, msg *reliable.Message, done func(*reliable.Message, error)) error {
	p.note(msg)
	go done(msg, nil)
	return nil
}

func (*ledgerPublisher) Close() error { return nil }

// Issue 19: the polling relay's commit-to-confirm p99 reached 14-34 s in
// some bench runs (p50 12 s in one): the claim loop sat in one claim
// statement for 10+ s while the backlog grew (goroutine dump: claimFrom
// waiting on PostgreSQL; the claim count stood still for 12 s). pgx runs
// the relay's statements as prepared statements, and PostgreSQL switches a
// prepared statement to a generic plan after five executions when that plan
// costs no more than the custom ones. Planned while the outbox held a page
// of rows (steady load, or right after VACUUM), the claim's generic plan
// probes each key's lease and rows with sequential scans: harmless then,
// but once a backlog built up each claim read the whole table once per key
// it walked (by hand on a copy of the tables: one claim over 10k rows and
// 4.4k leases, 8.9 s), so the backlog grew faster than it drained, until
// autovacuum's ANALYZE invalidated the plan, up to a minute later.
//
// A relay works a steady trickle on a vacuumed, analyzed outbox (autovacuum
// off, so no ANALYZE rescues it) long enough for its connections to cache
// generic plans; then a backlog of 20,000 rows over 10,000 keys appears at
// once, as after a broker outage. Claims must stay fast (mean under 500 ms)
// and the backlog drain within 30 s, every row published once, in order per
// key. Before the fix (3 runs): drained in 13.1, 26.5 and 18.1 s, mean claim
// 1.07, 3.75 and 0.87 s; after: 1.8, 1.7 and 1.4 s, mean claim 156, 118 and
// 74 ms.
func TestClaimStaysFastWhenBacklogGrowsAfterIdle(t *testing.T) {
	t.Parallel()
	db := newTestDB(t, 4)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	for _, table := range []string{"reliable_outbox", "reliable_outbox_leases"} {
		if _, err := db.pool.Exec(ctx, `ALTER TABLE `+table+` SET (autovacuum_enabled = false)`); err != nil {
			t.Fatal(err)
		}
		if _, err := db.pool.Exec(ctx, `VACUUM ANALYZE `+table); err != nil {
			t.Fatal(err)
		}
	}
	pub := newLedgerPublisher()
	cfg := testConfig()

	// Steady load: rows trickle in, one per transaction from a few writers
	// (about 400/s), each claimed, published and released while the table
	// holds a page or two, as in the bench's latency run.
	r := startRelay(t, db.pool, pub, cfg)
	writers := db.newPool(t, 4)
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 300 {
				m := &reliable.Message{Topic: "orders", Key: fmt.Sprint("steady-", w, "-", i%50), Type: "order.event", Payload: []byte(fmt.Sprintf("%08d", i))}
				if err := pgx.BeginFunc(ctx, writers, func(tx pgx.Tx) error { return outbox.Add(ctx, tx, m) }); err != nil {
					t.Error(err)
					return
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
	wg.Wait()
	waitFor(t, 10*time.Second, "the steady load published", func() bool { return r.Stats().Marked >= 1200 })
	before := r.Stats()
	t.Logf("steady load: %d rows, %d claims", before.Marked, before.ClaimQueries)

	// A backlog builds up at once (a burst, or the rows of a broker outage):
	// 2 rows per key.
	const rows, keys = 20000, 10000
	start := time.Now()
	if _, err := db.pool.Exec(ctx, `INSERT INTO reliable_outbox (lane, msg_id, topic, key, type, payload, event_time)
		SELECT 'k:key-' || (i % $2), 'id-' || i, 'orders', 'key-' || (i % $2), 'order.event', convert_to(lpad(i::text, 8, '0'), 'UTF8'), now()
		FROM generate_series(1, $1) AS i`, rows, keys); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the 20,000-row backlog drained", func() bool {
		return r.Stats().Marked >= before.Marked+rows
	})
	st := r.Stats()
	claims := st.ClaimQueries - before.ClaimQueries
	mean := (st.ClaimTime - before.ClaimTime) / time.Duration(max(claims, 1))
	t.Logf("backlog of %d rows over %d keys drained in %s: %d claims, mean %s", rows, keys,
		time.Since(start).Round(time.Millisecond), claims, mean.Round(time.Microsecond))
	if mean > 500*time.Millisecond {
		t.Fatalf("a claim took %s on average over a %d-row backlog: it reads the table per key", mean, rows)
	}

	// Ledger: every backlog row once, in order per key.
	pub.mu.Lock()
	defer pub.mu.Unlock()
	for i := 1; i <= rows; i++ {
		if n := pub.seen[fmt.Sprint("id-", i)]; n != 1 {
			t.Fatalf("row id-%d published %d times", i, n)
		}
	}
	for k := range keys {
		got := pub.keys[fmt.Sprint("key-", k)]
		if len(got) != 2 || got[0] >= got[1] {
			t.Fatalf("key-%d: published %v, want its 2 rows in order", k, got)
		}
	}
}
