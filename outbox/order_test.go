package outbox_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/outbox"
	"github.com/reliable-go/reliable/reliabletest"
)

// The hazard Add guards against, shown without Add's lock: IDs are drawn
// before commit, so a reader ordering visible rows by ID sees a later ID of
// the key first and then, once the slower transaction commits, an earlier
// one. A relay trusting ID order would publish "paid" before "placed" (L08).
func TestRawInsertsShowLowerIDCommittingLater(t *testing.T) {
	t.Parallel()
	db := newTestDB(t, 4)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	insert := `INSERT INTO reliable_outbox (lane, msg_id, topic, key, event_time) VALUES ('k:o', $1, 't', 'o', now()) RETURNING id`

	t1, err := db.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer t1.Rollback(ctx)
	var id1, id2 int64
	if err := t1.QueryRow(ctx, insert, "placed").Scan(&id1); err != nil {
		t.Fatal(err)
	}
	if err := pgx.BeginFunc(ctx, db.pool, func(t2 pgx.Tx) error {
		return t2.QueryRow(ctx, insert, "paid").Scan(&id2)
	}); err != nil {
		t.Fatal(err)
	}
	visible := func() []string {
		rows, _ := db.pool.Query(ctx, `SELECT msg_id FROM reliable_outbox WHERE lane = 'k:o' ORDER BY id`)
		ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		return ids
	}
	if got := visible(); id1 >= id2 || len(got) != 1 || got[0] != "paid" {
		t.Fatalf("ids %d,%d visible %v: expected the higher id visible alone", id1, id2, got)
	}
	if err := t1.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if got := visible(); len(got) != 2 || got[0] != "placed" {
		t.Fatalf("visible %v", got)
	}
}

// The same interleaving through Add: T1 adds "placed" and stays open; T2's
// Add of the same key waits for T1, so T2 cannot commit first, draws its ID
// after T1's commit, and the relay publishes placed before paid. Meanwhile
// other keys are not held up.
func TestAddSerializesWritersOfOneKeySoIDOrderIsCommitOrder(t *testing.T) {
	t.Parallel()
	db := newTestDB(t, 8)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	broker := reliabletest.NewBroker(reliabletest.BrokerOptions{})
	broker.CreateTopic("orders")
	startRelay(t, db.pool, broker.Publisher(), testConfig())

	placed, paid := msg("orders", "o-7", "placed"), msg("orders", "o-7", "paid")
	t1, err := db.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer t1.Rollback(ctx)
	if err := outbox.Add(ctx, t1, placed); err != nil {
		t.Fatal(err)
	}

	t2done := make(chan error, 1)
	go func() { t2done <- addTx(ctx, db.pool, paid) }()
	// T2 blocks on the key lock held by T1 ...
	waitFor(t, 5*time.Second, "T2 waiting on T1's key lock", func() bool {
		return db.count(t, `SELECT count(*) FROM pg_stat_activity
			WHERE wait_event_type = 'Lock' AND query LIKE '%reliable_outbox_keys%'`) > 0
	})
	select {
	case err := <-t2done:
		t.Fatalf("T2 committed while T1 held the key: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	// ... while a transaction on another key goes through at once.
	other := msg("orders", "o-8", "placed")
	if err := addTx(ctx, db.pool, other); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "other key relayed", func() bool { return len(broker.Messages("orders")) == 1 })
	if got := broker.Messages("orders")[0]; got.ID != other.ID {
		t.Fatalf("published %s before T1 committed", got)
	}

	if err := t1.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-t2done; err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "o-7 relayed", func() bool {
		perKey, _ := firstSeen(broker.Messages("orders"))
		return len(perKey["o-7"]) == 2
	})
	perKey, _ := firstSeen(broker.Messages("orders"))
	if got := perKey["o-7"]; got[0] != placed.ID || got[1] != paid.ID {
		t.Fatalf("o-7 published as %v, want placed, paid", got)
	}
}

// Two relays at once; 10k rows over 100 keys written by concurrent
// transactions (several per key at a time); the consumer sees every message,
// and per key in commit order. The commit order is recorded independently:
// each transaction, after Add (which holds the key's lock until commit),
// numbers itself max+1 in a ledger table with a unique (key, n), so two
// transactions of one key overlapping would collide there (L08, L12). The
// relays race for the same keys through the lease upsert (L19).
func TestTwoRelaysTenThousandRowsHundredKeysInCommitOrder(t *testing.T) {
	t.Parallel()
	db := newTestDB(t, 24)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	if _, err := db.pool.Exec(ctx, `CREATE TABLE ledger (key text, n int, msg_id text, PRIMARY KEY (key, n))`); err != nil {
		t.Fatal(err)
	}
	broker := reliabletest.NewBroker(reliabletest.BrokerOptions{Partitions: 8})
	broker.CreateTopic("orders")
	pubA, pubB := &countingPublisher{Publisher: broker.Publisher()}, &countingPublisher{Publisher: broker.Publisher()}
	var relays []*outbox.Relay
	for i, p := range []*countingPublisher{pubA, pubB} {
		cfg := testConfig()
		cfg.Instance = fmt.Sprintf("relay-%d", i)
		cfg.MaxKeys = 40 // neither relay can hold every key: they share and hand over
		cfg.Window = 8
		cfg.BatchSize = 50
		relays = append(relays, startRelay(t, db.pool, p, cfg))
	}
	defer func() {
		if t.Failed() {
			for _, r := range relays {
				t.Logf("relay %s: %+v", r.Instance(), r.Stats())
			}
			rows, _ := db.pool.Query(ctx, `SELECT o.lane, count(*), min(o.id), l.owner, l.expires_at - now()
				FROM reliable_outbox o LEFT JOIN reliable_outbox_leases l USING (lane) GROUP BY 1, 4, 5 LIMIT 20`)
			for rows.Next() {
				v, _ := rows.Values()
				t.Logf("pending: %v", v)
			}
			rows.Close()
		}
	}()

	const keys, perKey, writers = 100, 100, 16
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			for range keys * perKey / writers / 5 {
				key := fmt.Sprintf("order-%d", rng.IntN(keys))
				// Five messages per transaction, some of a second key.
				err := pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
					msgs := make([]*reliable.Message, 5)
					for i := range msgs {
						msgs[i] = msg("orders", key, "e")
					}
					if err := outbox.Add(ctx, tx, msgs...); err != nil {
						return err
					}
					for _, m := range msgs {
						if _, err := tx.Exec(ctx, `INSERT INTO ledger
							SELECT $1, coalesce(max(n), 0) + 1, $2 FROM ledger WHERE key = $1`, key, m.ID); err != nil {
							return err
						}
					}
					return nil
				})
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	const total = keys * perKey
	waitFor(t, 90*time.Second, "all rows relayed", func() bool {
		return db.count(t, `SELECT count(*) FROM reliable_outbox`) == 0
	})
	got := broker.Messages("orders")
	seen, dups := firstSeen(got)
	rows, err := db.pool.Query(ctx, `SELECT key, msg_id FROM ledger ORDER BY key, n`)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{}
	n := 0
	for rows.Next() {
		var k, id string
		if err := rows.Scan(&k, &id); err != nil {
			t.Fatal(err)
		}
		want[k] = append(want[k], id)
		n++
	}
	if n != total {
		t.Fatalf("ledger has %d rows, want %d", n, total)
	}
	for k, ids := range want {
		g := seen[k]
		if len(g) != len(ids) {
			t.Fatalf("key %s: consumer saw %d distinct messages, want %d", k, len(g), len(ids))
		}
		for i := range ids {
			if g[i] != ids[i] {
				t.Fatalf("key %s: message %d is %s, commit order says %s", k, i, g[i], ids[i])
			}
		}
	}
	t.Logf("%d messages, %d duplicates; relay A published %d, relay B %d", len(got), dups, pubA.n.Load(), pubB.n.Load())
	if pubA.n.Load() == 0 || pubB.n.Load() == 0 {
		t.Fatalf("one relay did all the work (A %d, B %d): the test did not exercise two relays", pubA.n.Load(), pubB.n.Load())
	}
}
