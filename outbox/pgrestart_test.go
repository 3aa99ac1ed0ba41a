package outbox_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/internal/testenv"
	"github.com/reliable-go/reliable/outbox"
	"github.com/reliable-go/reliable/reliabletest"
)

// PostgreSQL restarts (fast shutdown: every session ends, the relay's pool
// and its replication connection included, open transactions roll back)
// while writers commit and the polling relay publishes: the relay
// reconnects by itself, and every message arrives, in commit order per key,
// with at most the rows in flight at the restart as duplicates. (issue 19)
func TestRelayPollModeLosesNothingAcrossPostgresRestart(t *testing.T) {
	testRelayAcrossPostgresRestart(t, false)
}

// The same in ModeLog: the restart ends the walsender, the reader falls
// back to polling, then reads the slot again from its confirmed position
// (Stats.LogState back to "reading", LogRows grows after the restart),
// losing nothing and keeping order. (issue 19)
func TestRelayLogModeResumesTheSlotAfterPostgresRestart(t *testing.T) {
	testRelayAcrossPostgresRestart(t, true)
}

// restartBufferedRows is the relay's MaxBufferedRows in these tests: the
// rows it can hold published but not yet deleted when the server goes
// away, and so the bound on duplicates.
const restartBufferedRows = 256

func testRelayAcrossPostgresRestart(t *testing.T, logMode bool) {
	// Not parallel: the restart cuts every session of this process too.
	pg := testenv.Postgres(t) // exclusive: other processes' PostgreSQL tests wait
	db := newTestDB(t, 16)
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	cfg := testConfig()
	var slot string
	if logMode {
		slot = logSlot(t, db)
		if err := outbox.CreateSlot(ctx, db.pool, slot); err != nil {
			t.Fatal(err)
		}
		cfg = logConfig(slot)
	}
	cfg.MaxBufferedRows = restartBufferedRows
	lw := newLedger(t, db, 20)
	broker := reliabletest.NewBroker(reliabletest.BrokerOptions{Partitions: 4})
	broker.CreateTopic("orders")
	r := startRelay(t, db.newPool(t, 8), broker.Publisher(), cfg)
	if logMode {
		waitState(t, r, "reading")
	}
	started := serverStart(t, ctx, db)

	w := &retryingWriter{lw: lw}
	written := make(chan error, 1)
	go func() { written <- w.write(ctx, 4, 6000, 3*time.Millisecond) }()
	waitFor(t, 30*time.Second, "the relay publishes", func() bool {
		s := r.Stats()
		return s.Published > 500 && (!logMode || s.LogRows > 300)
	})

	before := r.Stats()
	restartAt := time.Now()
	if err := pg.Restart(ctx); err != nil {
		t.Fatalf("restarting PostgreSQL: %v", err)
	}
	restartTook := time.Since(restartAt)
	if restartTook > 30*time.Second {
		// A log reader that keeps its walsender holds a fast shutdown until
		// wal_sender_timeout (60 s): the relay must let it go.
		t.Errorf("the restart took %s: something held PostgreSQL's shutdown", restartTook)
	}
	if now := serverStart(t, ctx, db); !now.After(started) {
		t.Fatalf("PostgreSQL did not restart: started at %s before and after", now)
	}
	// The relay's old sessions are dead now: what it does from here on, it
	// does on new ones.
	after := r.Stats()
	if logMode {
		waitState(t, r, "reading")
		waitFor(t, 60*time.Second, "rows from the slot after the restart", func() bool { return r.Stats().LogRows > after.LogRows })
	} else {
		waitFor(t, 20*time.Second, "publishes after the restart", func() bool { return r.Stats().Published > after.Published })
	}
	resumed := time.Since(restartAt)
	if len(written) > 0 {
		t.Fatal("the writers finished before the relay resumed: the test did not restart mid-stream")
	}
	if err := <-written; err != nil {
		t.Fatal(err)
	}
	if w.retries.Load() == 0 {
		t.Error("no writer transaction failed: the restart did not hit the writers mid-stream")
	}
	waitFor(t, 60*time.Second, "all rows relayed", func() bool {
		n, err := countRows(ctx, db, `SELECT count(*) FROM reliable_outbox`)
		return err == nil && n == 0
	})
	drained := time.Since(restartAt)
	db.pool.Reset() // idle connections from before the restart are dead
	total, dups := lw.check(t, brokerMsgs(broker.Messages("orders")))
	if dups > restartBufferedRows {
		t.Fatalf("%d duplicates, more than the %d rows the relay can hold in flight", dups, restartBufferedRows)
	}
	s := r.Stats()
	if logMode && s.LogFallbacks <= before.LogFallbacks {
		t.Errorf("LogFallbacks %d -> %d: the reader did not notice its replication connection end",
			before.LogFallbacks, s.LogFallbacks)
	}
	t.Logf("restart took %s, relay resumed %s after it began, backlog drained %s after it; "+
		"%d messages (%d transactions committed, %d retried by writers) in commit order, 0 lost, %d duplicates; "+
		"published %d before the restart, %d in all; log rows %d before, %d after; fallbacks %d; last error %q",
		restartTook.Round(time.Millisecond), resumed.Round(time.Millisecond), drained.Round(time.Millisecond),
		total, w.committed.Load(), w.retries.Load(), dups, before.Published, s.Published,
		before.LogRows, s.LogRows-after.LogRows, s.LogFallbacks, s.LastError)
}

// serverStart returns pg_postmaster_start_time(), retrying while the server
// or the pool's connections are not back.
func serverStart(t *testing.T, ctx context.Context, db *testDB) time.Time {
	t.Helper()
	var at time.Time
	var lastErr error
	defer func() {
		if t.Failed() && lastErr != nil {
			t.Logf("last error: %v", lastErr)
		}
	}()
	waitFor(t, 30*time.Second, "PostgreSQL answers", func() bool {
		lastErr = db.pool.QueryRow(ctx, `SELECT pg_postmaster_start_time()`).Scan(&at)
		return lastErr == nil
	})
	return at
}

// countRows runs a count query; an error (a pool connection that died with
// the server) is returned for the caller to retry.
func countRows(ctx context.Context, db *testDB, sql string) (int64, error) {
	var n int64
	err := db.pool.QueryRow(ctx, sql).Scan(&n)
	return n, err
}

// retryingWriter commits ledger transactions like ledgerWriter.write, but
// retries a failed transaction (new messages, new IDs) until it commits, as
// an application does across a database restart. A transaction whose commit
// failed with the connection may have committed after all: its messages
// are then in the ledger and in the outbox, both or neither, since they
// share the transaction.
type retryingWriter struct {
	lw        *ledgerWriter
	committed atomic.Int64
	retries   atomic.Int64
}

func (w *retryingWriter) write(ctx context.Context, writers, txs int, pause time.Duration) error {
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for i := range writers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(i), uint64(time.Now().UnixNano())))
			for range txs / writers {
				key := fmt.Sprintf("order-%d", rng.IntN(w.lw.keys))
				n := 1 + rng.IntN(3)
				for {
					err := w.tx(ctx, key, n)
					if err == nil {
						break
					}
					if ctx.Err() != nil {
						errs <- fmt.Errorf("writer %d: %w (last error: %v)", i, ctx.Err(), err)
						return
					}
					w.retries.Add(1)
					time.Sleep(50 * time.Millisecond)
				}
				w.committed.Add(1)
				time.Sleep(pause)
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}

func (w *retryingWriter) tx(ctx context.Context, key string, n int) error {
	return pgx.BeginFunc(ctx, w.lw.db.pool, func(tx pgx.Tx) error {
		msgs := make([]*reliable.Message, n)
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
}
