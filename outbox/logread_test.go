package outbox_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/outbox"
	"github.com/reliable-go/reliable/reliabletest"
)

// logSlot names a replication slot for one test and drops it (and its
// publication) when the test ends. Slots are per database, so each test
// needs its own.
func logSlot(t testing.TB, db *testDB) string {
	t.Helper()
	name := fmt.Sprintf("obt_%d_%d", time.Now().UnixNano()%1e12, rand.IntN(1e6))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		pool := db.newPool(t, 2)
		for {
			err := outbox.DropSlot(ctx, pool, name)
			if err == nil || ctx.Err() != nil {
				if err != nil {
					t.Errorf("dropping slot %s: %v", name, err)
				}
				return
			}
			time.Sleep(100 * time.Millisecond) // still active for a moment after the relay stopped
		}
	})
	return name
}

// logConfig is testConfig in ModeLog on slot.
func logConfig(slot string) outbox.Config {
	cfg := testConfig()
	cfg.Mode = outbox.ModeLog
	cfg.Slot = slot
	cfg.SlotCheckInterval = 200 * time.Millisecond
	cfg.SlotRetry = time.Second
	return cfg
}

// waitState waits until the relay's log reader is in state.
func waitState(t testing.TB, r *outbox.Relay, state string) {
	t.Helper()
	waitFor(t, 20*time.Second, "log reader "+state, func() bool { return r.Stats().LogState == state })
}

// ledgerWriter adds messages in transactions that also append to a ledger
// table (key, n, msg_id): the commit order per key the relay must keep.
type ledgerWriter struct {
	db   *testDB
	keys int
}

func newLedger(t testing.TB, db *testDB, keys int) *ledgerWriter {
	t.Helper()
	if _, err := db.pool.Exec(context.Background(), `CREATE TABLE ledger (key text, n int, msg_id text, PRIMARY KEY (key, n))`); err != nil {
		t.Fatal(err)
	}
	return &ledgerWriter{db: db, keys: keys}
}

// write commits txs transactions of up to three messages from writers
// goroutines, pausing pause between transactions, and returns the first
// error.
func (lw *ledgerWriter) write(ctx context.Context, writers, txs int, pause time.Duration) error {
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), uint64(time.Now().UnixNano())))
			for range txs / writers {
				key := fmt.Sprintf("order-%d", rng.IntN(lw.keys))
				err := pgx.BeginFunc(ctx, lw.db.pool, func(tx pgx.Tx) error {
					msgs := make([]*reliable.Message, 1+rng.IntN(3))
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
				if pause > 0 {
					time.Sleep(pause)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// check compares what the consumer saw, deduplicated by ID, with the
// ledger: every message, in commit order per key. It returns the number of
// messages in the ledger and the duplicates.
func (lw *ledgerWriter) check(t testing.TB, got []ledgerMsg) (total, dups int) {
	t.Helper()
	rows, err := lw.db.pool.Query(context.Background(), `SELECT key, msg_id FROM ledger ORDER BY key, n`)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{}
	for rows.Next() {
		var k, id string
		if err := rows.Scan(&k, &id); err != nil {
			t.Fatal(err)
		}
		want[k] = append(want[k], id)
		total++
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	perKey := map[string][]string{}
	for _, m := range got {
		if seen[m.ID] {
			dups++
			continue
		}
		seen[m.ID] = true
		perKey[m.Key] = append(perKey[m.Key], m.ID)
	}
	lost := 0
	for k, ids := range want {
		g := perKey[k]
		for i := range ids {
			if i >= len(g) {
				lost += len(ids) - i
				break
			}
			if g[i] != ids[i] {
				t.Fatalf("key %s: message %d is %s, commit order says %s", k, i, g[i], ids[i])
			}
		}
	}
	if lost > 0 {
		t.Fatalf("%d of %d messages lost", lost, total)
	}
	if len(seen) != total {
		t.Fatalf("consumer saw %d distinct messages, ledger has %d", len(seen), total)
	}
	return total, dups
}

// ledgerMsg is a delivered message as the check needs it.
type ledgerMsg struct{ ID, Key string }

func brokerMsgs(ms []*reliable.Message) []ledgerMsg {
	out := make([]ledgerMsg, len(ms))
	for i, m := range ms {
		out[i] = ledgerMsg{m.ID, m.Key}
	}
	return out
}

// The log-reading relay relays what writers commit, in commit order per
// key, straight from the log (rows join lanes without a table read), and
// confirms the slot as rows are deleted.
func TestLogRelayHappyPathCommitOrderFromTheLog(t *testing.T) {
	t.Parallel()
	db := newTestDB(t, 16)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	slot := logSlot(t, db)
	lw := newLedger(t, db, 20)
	broker := reliabletest.NewBroker(reliabletest.BrokerOptions{Partitions: 4})
	broker.CreateTopic("orders")
	r := startRelay(t, db.pool, broker.Publisher(), logConfig(slot))
	waitState(t, r, "reading")
	st0, err := outbox.SlotStatus(ctx, db.pool, slot)
	if err != nil {
		t.Fatal(err)
	}

	if err := lw.write(ctx, 8, 2000, 0); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, "all rows relayed", func() bool { return db.count(t, `SELECT count(*) FROM reliable_outbox`) == 0 })
	total, dups := lw.check(t, brokerMsgs(broker.Messages("orders")))
	s := r.Stats()
	if s.LogRows == 0 {
		t.Fatalf("no row came from the log: %+v", s)
	}
	if s.LogState != "reading" || s.LogFallbacks != 0 {
		t.Fatalf("log state %q, %d fallbacks, want reading and none", s.LogState, s.LogFallbacks)
	}
	// The slot is confirmed past the rows once they are deleted.
	waitFor(t, 10*time.Second, "slot confirmed past the rows", func() bool {
		st, err := outbox.SlotStatus(ctx, db.pool, slot)
		return err == nil && lsnAfter(st.ConfirmedFlushLSN, st0.CurrentLSN)
	})
	t.Logf("%d messages in commit order, %d duplicates; %d of them joined lanes from the log; claims %d in %d queries; %d failed publishes; %d visibility waits",
		total, dups, s.LogRows, s.KeysLeased, s.ClaimQueries, s.Failures, s.LogVisibilityWaits)
}

// lsnAfter says whether LSN a (text, X/Y) is past b.
func lsnAfter(a, b string) bool { return parseLSN(a) > parseLSN(b) }

func parseLSN(s string) uint64 {
	hi, lo, ok := strings.Cut(s, "/")
	if !ok {
		return 0
	}
	var h, l uint64
	fmt.Sscanf(hi, "%X", &h)
	fmt.Sscanf(lo, "%X", &l)
	return h<<32 | l
}

// The rows the log reader tracks (IDs of rows not yet known done) are
// bounded by 4 x MaxBufferedRows however far behind the broker is (L05,
// L23): past it the reader stops reading and PostgreSQL holds the rest in
// the slot. Nothing is lost and order holds.
func TestLogRelayBoundsTheRowsItTracks(t *testing.T) {
	t.Parallel()
	db := newTestDB(t, 16)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	slot := logSlot(t, db)
	lw := newLedger(t, db, 50)
	broker := reliabletest.NewBroker(reliabletest.BrokerOptions{Partitions: 4})
	broker.CreateTopic("orders")
	pub := &slowPublisher{Publisher: broker.Publisher(), delay: 20 * time.Millisecond}
	cfg := logConfig(slot)
	cfg.MaxBufferedRows = 50 // tracks at most 200 rows
	cfg.MaxKeys = 25
	r := startRelay(t, db.pool, pub, cfg)
	waitState(t, r, "reading")
	maxPending := 0
	stop, sampled := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
				maxPending = max(maxPending, r.Stats().LogPending)
			}
		}
	}()
	if err := lw.write(ctx, 4, 1500, 0); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, "all rows relayed", func() bool { return db.count(t, `SELECT count(*) FROM reliable_outbox`) == 0 })
	close(stop)
	<-sampled
	total, dups := lw.check(t, brokerMsgs(broker.Messages("orders")))
	// A transaction has at most three rows: the bound plus one transaction.
	if maxPending > 200+3 {
		t.Fatalf("the log reader tracked %d rows at once, bound 200", maxPending)
	}
	t.Logf("%d messages in commit order, %d duplicates; at most %d rows tracked (bound 200); %d rows from the log",
		total, dups, maxPending, r.Stats().LogRows)
}
