package outbox_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/idempotency"
	"github.com/reliable-go/reliable/internal/testenv"
	"github.com/reliable-go/reliable/outbox"
)

// Issue 17 item 3: a database/sql transaction (pgx's stdlib driver) writes
// a business row and its outbox message with AddSQL. Rolled back, neither
// exists and nothing reaches the real broker; committed, the relay publishes
// exactly the committed messages, in order per key. Both relay modes: rows
// found by polling, and rows read from the log (ModeLog).
func TestRealBrokersAddSQLRollbackPublishesNothingCommitExactlyTheTx(t *testing.T) {
	for _, mode := range []outbox.Mode{outbox.ModePoll, outbox.ModeLog} {
		t.Run(mode.String(), func(t *testing.T) {
			eachBroker(t, func(t *testing.T, k *brokerKit) { addSQLRollbackCommit(t, k, mode) })
		})
	}
}

func addSQLRollbackCommit(t *testing.T, k *brokerKit, mode outbox.Mode) {
	db := newTestDB(t, 8)
	sdb := db.sqlDB(t, false)
	ctx := testenv.Context(t, 60*time.Second)
	if _, err := sdb.ExecContext(ctx, `CREATE TABLE orders (id text PRIMARY KEY, status text NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig()
	if mode == outbox.ModeLog {
		cfg = logConfig(logSlot(t, db))
	}
	c := k.consume(t)
	r := startRelay(t, db.pool, k.publisher(t), cfg)
	if mode == outbox.ModeLog {
		waitState(t, r, "reading")
	}

	write := func(tx *sql.Tx, m *reliable.Message) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO orders (id, status) VALUES ($1, $2)
				ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status`, m.Key, string(m.Payload)); err != nil {
			return err
		}
		return outbox.AddSQL(ctx, tx, m)
	}
	tx, err := sdb.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	rolledBack := msg(k.topic, "o-1", "placed")
	if err := write(tx, rolledBack); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	if n := db.count(t, `SELECT count(*) FROM orders`) + db.count(t, `SELECT count(*) FROM reliable_outbox`); n != 0 {
		t.Fatalf("rollback left %d order and outbox rows", n)
	}

	committed := []*reliable.Message{msg(k.topic, "o-2", "placed"), msg(k.topic, "o-2", "paid"), msg(k.topic, "o-3", "placed")}
	tx, err = sdb.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range committed {
		if err := write(tx, m); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "3 messages consumed", func() bool { return c.distinct() >= 3 })
	time.Sleep(time.Second) // nothing else may arrive
	c.check(t, map[string][]string{"o-2": {committed[0].ID, committed[1].ID}, "o-3": {committed[2].ID}})
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, m := range c.all {
		if m.ID == rolledBack.ID {
			t.Fatal("rolled-back message reached the broker")
		}
	}
	if len(c.all) != 3 {
		t.Fatalf("%d deliveries, want 3", len(c.all))
	}
	if n := db.count(t, `SELECT count(*) FROM orders WHERE id = 'o-2' AND status = 'paid'`); n != 1 {
		t.Fatal("the committed business row is missing")
	}
	t.Logf("%s, %s relay: rolled back: 0 rows, 0 published; committed: 3 published once each, o-2 in order (%d rows joined from the log)",
		k.kind, mode, r.Stats().LogRows)
}

// sqlWriter commits, from several goroutines, database/sql transactions
// that each add two messages of one key with AddSQL and number them in a
// ledger table (key, n) in the same transaction: AddSQL holds the key's
// lock until commit, so the ledger order of a key is its commit order, the
// order consumers must see (L08, L12).
type sqlWriter struct {
	commits atomic.Int64
	stop    chan struct{}
	once    sync.Once
	wg      sync.WaitGroup
	errs    chan error
}

func startSQLWriter(t *testing.T, ctx context.Context, sdb *sql.DB, topic string, writers, txsEach, keys int) *sqlWriter {
	t.Helper()
	if _, err := sdb.ExecContext(ctx, `CREATE TABLE ledger (key text, n int, msg_id text, PRIMARY KEY (key, n))`); err != nil {
		t.Fatal(err)
	}
	w := &sqlWriter{stop: make(chan struct{}), errs: make(chan error, writers)}
	for i := range writers {
		w.wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(i), 17))
			tick := time.NewTicker(15 * time.Millisecond)
			defer tick.Stop()
			for range txsEach {
				select {
				case <-w.stop:
					return
				case <-tick.C:
				}
				key := fmt.Sprintf("order-%d", rng.IntN(keys))
				if err := w.commit(ctx, sdb, topic, key); err != nil {
					w.errs <- err
					return
				}
				w.commits.Add(1)
			}
		})
	}
	t.Cleanup(w.Stop)
	return w
}

func (w *sqlWriter) commit(ctx context.Context, sdb *sql.DB, topic, key string) error {
	tx, err := sdb.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	msgs := []*reliable.Message{msg(topic, key, "a"), msg(topic, key, "b")}
	if err := outbox.AddSQL(ctx, tx, msgs...); err != nil {
		return err
	}
	for _, m := range msgs {
		if _, err := tx.ExecContext(ctx, `INSERT INTO ledger
			SELECT $1, coalesce(max(n), 0) + 1, $2 FROM ledger WHERE key = $1`, key, m.ID); err != nil {
			return err
		}
	}
	return tx.Commit()
}

// Stop ends the writers and waits for their last commits.
func (w *sqlWriter) Stop() { w.once.Do(func() { close(w.stop); w.wg.Wait() }) }

// Wait waits for the writers to finish and fails on a writer's error.
func (w *sqlWriter) Wait(t *testing.T) {
	t.Helper()
	w.wg.Wait()
	close(w.errs)
	for err := range w.errs {
		t.Fatal(err)
	}
}

// sqlLedger returns each key's message IDs in commit order.
func (db *testDB) sqlLedger(t *testing.T) (map[string][]string, int) {
	t.Helper()
	rows, err := db.pool.Query(context.Background(), `SELECT key, msg_id FROM ledger ORDER BY key, n`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	want, n := map[string][]string{}, 0
	for rows.Next() {
		var key, id string
		if err := rows.Scan(&key, &id); err != nil {
			t.Fatal(err)
		}
		want[key] = append(want[key], id)
		n++
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return want, n
}

// sqlApplier consumes k's topic as a service on database/sql does: each
// delivery's effect (a row in applied, numbered in processing order) and
// its dedupe record commit in one *sql.Tx through ProcessTxSQL, then the
// delivery is acked. A repeat finds the record and is skipped.
type sqlApplier struct {
	mu    sync.Mutex
	seen  map[string]int // message ID -> deliveries
	order []string       // IDs in delivery order
	skips []string       // IDs skipped as done
	news  int
}

func consumeIntoSQL(t *testing.T, k *brokerKit, db *testDB, sdb *sql.DB) *sqlApplier {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	if _, err := sdb.ExecContext(ctx, `CREATE TABLE applied (seq bigserial PRIMARY KEY, key text NOT NULL, msg_id text NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	store, err := idempotency.NewPostgres(db.pool, idempotency.PostgresConfig{Namespace: "orders-view"})
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	ch, closeSub := k.subscribe(t, ctx)
	a := &sqlApplier{seen: map[string]int{}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for d := range ch {
			m := d.Message
			st, err := store.ProcessTxSQL(ctx, sdb, m.ID, func(ctx context.Context, tx *sql.Tx) error {
				_, err := tx.ExecContext(ctx, `INSERT INTO applied (key, msg_id) VALUES ($1, $2)`, m.Key, m.ID)
				return err
			})
			if err != nil {
				if ctx.Err() == nil {
					t.Errorf("apply %s: %v", m.ID, err)
				}
				_ = d.Nack(ctx)
				continue
			}
			a.mu.Lock()
			a.seen[m.ID]++
			a.order = append(a.order, m.ID)
			if st == idempotency.StatusDone {
				a.skips = append(a.skips, m.ID)
			} else {
				a.news++
			}
			a.mu.Unlock()
			_ = d.Ack(ctx)
		}
	}()
	t.Cleanup(func() {
		cancel()
		closeSub()
		<-done
	})
	return a
}

func (a *sqlApplier) applied() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.news
}

// Issue 17 item 3 (L03, L08, L20), end to end on database/sql: writers
// commit messages with AddSQL before, during and after a kill -9 of the
// relay process mid-stream (right after the broker confirmed its first
// publish, before any row was marked). A new relay takes over. The
// consumer applies each delivery with ProcessTxSQL, the effect and the
// dedupe record in one *sql.Tx. Every committed message is applied exactly
// once, per key in commit order (the writers' ledger), and the only
// deliveries skipped as repeats are the messages the killed relay had
// published.
func TestRealBrokersRelayKilledMidStreamAfterAddSQL(t *testing.T) {
	eachBroker(t, func(t *testing.T, k *brokerKit) {
		db := newTestDB(t, 12)
		sdb := db.sqlDB(t, false)
		ctx := testenv.Context(t, 150*time.Second)
		w := startSQLWriter(t, ctx, sdb, k.topic, 4, 60, 8)
		waitFor(t, 20*time.Second, "writes before the relay starts", func() bool { return w.commits.Load() >= 20 })

		cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), childEnv+"=kill-after-confirm", childDSNEnv+"="+db.dsn,
			childSchemaEnv+"="+db.schema, childBrokerEnv+"="+k.kind, childFileEnv+"="+k.endpoint)
		out, err := cmd.CombinedOutput()
		var exitErr *exec.ExitError
		if !errors.As(err, &exitErr) || exitErr.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("child relay did not die by SIGKILL: %v\n%s", err, out)
		}
		atKill := w.commits.Load()
		if n := db.count(t, `SELECT count(*) FROM reliable_outbox_leases WHERE owner = 'relay-that-dies'`); n == 0 {
			t.Fatal("the dead relay left no lease: the test did not kill it mid-work")
		}

		// What the killed relay got onto the broker, read before the new
		// relay starts: the only messages allowed to arrive twice.
		a := consumeIntoSQL(t, k, db, sdb)
		waitFor(t, 30*time.Second, "the killed relay's messages on the broker", func() bool { return a.applied() > 0 })
		last, stable := a.applied(), time.Now()
		waitFor(t, 20*time.Second, "the killed relay's messages all arrived", func() bool {
			if n := a.applied(); n != last {
				last, stable = n, time.Now()
			}
			return time.Since(stable) > 3*time.Second
		})
		a.mu.Lock()
		before := map[string]bool{}
		for _, id := range a.order {
			before[id] = true
		}
		skipsBefore := len(a.skips)
		a.mu.Unlock()
		if skipsBefore != 0 {
			t.Fatalf("%d repeats before the new relay started, want 0", skipsBefore)
		}

		r := startRelay(t, db.pool, k.publisher(t), testConfig())
		w.Wait(t)
		if w.commits.Load() <= atKill {
			t.Fatalf("no commits after the kill (%d at the kill, %d in all): not mid-stream", atKill, w.commits.Load())
		}
		want, total := db.sqlLedger(t)
		waitFor(t, 90*time.Second, fmt.Sprintf("all %d applied", total), func() bool { return a.applied() >= total })
		waitFor(t, 30*time.Second, "the killed relay's messages repeated", func() bool {
			a.mu.Lock()
			defer a.mu.Unlock()
			n := 0
			for _, id := range a.skips {
				if before[id] {
					n++
				}
			}
			return n >= len(before)
		})
		time.Sleep(time.Second) // nothing else may arrive

		// The effects, as committed: once each, per key in commit order.
		got := map[string][]string{}
		rows, err := db.pool.Query(ctx, `SELECT key, msg_id FROM applied ORDER BY seq`)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for rows.Next() {
			var key, id string
			if err := rows.Scan(&key, &id); err != nil {
				t.Fatal(err)
			}
			got[key] = append(got[key], id)
			n++
		}
		rows.Close()
		if n != total {
			t.Fatalf("%d effects committed, want %d (one per message)", n, total)
		}
		for key, ids := range want {
			if fmt.Sprint(got[key]) != fmt.Sprint(ids) {
				t.Fatalf("key %s applied as %v, want %v", key, got[key], ids)
			}
		}
		a.mu.Lock()
		defer a.mu.Unlock()
		// Repeats: each message the killed relay published, once. Any other
		// repeat must come from a publish the new relay saw fail (a timeout
		// under load whose messages reached the broker after all), which it
		// retries: at least once, counted in Stats.Failures.
		ofKilled, explained := 0, r.Stats().Failures > 0
		var other []string
		for _, id := range a.skips {
			if before[id] {
				ofKilled++
			} else {
				other = append(other, id)
			}
		}
		if ofKilled != len(before) {
			t.Fatalf("%d of the killed relay's %d messages repeated, want each once", ofKilled, len(before))
		}
		if len(other) > 0 && !explained {
			id := other[0]
			var at []int
			for i, o := range a.order {
				if o == id {
					at = append(at, i)
				}
			}
			t.Fatalf("%d repeats the killed relay never published, and no failed publish explains them: %s delivered at %v of %d (%d read before the restart); new relay: %+v",
				len(other), id, at, len(a.order), len(before), r.Stats())
		}
		for id, n := range a.seen {
			if n > 2 && !explained {
				t.Fatalf("message %s delivered %d times", id, n)
			}
		}
		t.Logf("%s: %d transactions (%d when the kill ended), %d messages over %d keys: %d effects, 0 lost, 0 applied twice, per key in commit order; the killed relay published %d, each repeated once and skipped by the dedupe; %d other repeats (new relay's failed publishes: %d)",
			k.kind, w.commits.Load(), atKill, total, len(want), n, len(before), len(other), r.Stats().Failures)
	})
}
