package idempotency_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/reliable-go/reliable/idempotency"
	"github.com/reliable-go/reliable/internal/testenv"
)

// testSQLDB opens a database/sql handle through pgx's stdlib driver, as a
// service on sqlx, GORM or sqlc would.
func testSQLDB(t testing.TB) *sql.DB {
	t.Helper()
	cfg, err := pgx.ParseConfig(testenv.PostgresDSN(t))
	if err != nil {
		t.Fatal(err)
	}
	db := stdlib.OpenDB(*cfg)
	db.SetMaxOpenConns(12)
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// effects is a handler's side-effect table: one row per applied delivery,
// no unique key, so a message applied twice shows as two rows.
type sqlEffects struct {
	pool  *pgxpool.Pool
	table string
}

func newSQLEffects(t *testing.T, pool *pgxpool.Pool) *sqlEffects {
	t.Helper()
	e := &sqlEffects{pool: pool, table: uniqueName("fx_")}
	dropTable(t, pool, e.table)
	_, err := pool.Exec(context.Background(), `CREATE TABLE `+e.table+` (msg text NOT NULL, who text NOT NULL DEFAULT '')`)
	must(t, err)
	return e
}

// apply is the handler's effect, written in the handler's transaction.
func (e *sqlEffects) apply(ctx context.Context, tx *sql.Tx, msg, who string) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO `+e.table+` (msg, who) VALUES ($1, $2)`, msg, who)
	return err
}

func (e *sqlEffects) count(t *testing.T, msg string) int {
	t.Helper()
	var n int
	must(t, e.pool.QueryRow(context.Background(), `SELECT count(*) FROM `+e.table+` WHERE msg = $1`, msg).Scan(&n))
	return n
}

// sqlRecords counts the store's rows for id (done or claimed).
func sqlRecords(t *testing.T, pool *pgxpool.Pool, table, id string) int {
	t.Helper()
	var n int
	must(t, pool.QueryRow(context.Background(), `SELECT count(*) FROM `+table+` WHERE id = $1`, id).Scan(&n))
	return n
}

// Issue 17 item 3 (L20): DoneTxSQL ties the done record to the handler's
// *sql.Tx: rolled back, the effect and the record are gone and the claim is
// still the caller's; committed, both are there and Begin sees done.
func TestDoneTxSQLFollowsTheTransaction(t *testing.T) {
	t.Parallel()
	pool, db := testPool(t), testSQLDB(t)
	s := newPostgresStore(t, pool, idempotency.PostgresConfig{})
	fx := newSQLEffects(t, pool)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	begin(t, s, "rolled-back", idempotency.StatusNew)
	tx, err := db.BeginTx(ctx, nil)
	must(t, err)
	must(t, fx.apply(ctx, tx, "rolled-back", ""))
	must(t, s.DoneTxSQL(ctx, tx, "rolled-back"))
	must(t, tx.Rollback())
	if n := fx.count(t, "rolled-back"); n != 0 {
		t.Fatalf("%d effects after the rollback", n)
	}
	begin(t, s, "rolled-back", idempotency.StatusInProgress) // still our claim, not done
	must(t, s.Abort(ctx, "rolled-back"))
	begin(t, s, "rolled-back", idempotency.StatusNew)

	begin(t, s, "committed", idempotency.StatusNew)
	tx, err = db.BeginTx(ctx, nil)
	must(t, err)
	must(t, fx.apply(ctx, tx, "committed", ""))
	must(t, s.DoneTxSQL(ctx, tx, "committed"))
	must(t, tx.Commit())
	begin(t, s, "committed", idempotency.StatusDone)
	if n := fx.count(t, "committed"); n != 1 {
		t.Fatalf("%d effects after the commit, want 1", n)
	}
}

// Issue 17 item 3 (issue 15 item 2, L19, L20): DoneTxSQL is fenced to the
// claim's owner as DoneTx is. A's claim expires while its handler runs and
// B claims the ID; A's DoneTxSQL fails with ErrClaimLost, before and after
// B commits its effect, A rolls back, and the effect is applied once (B's).
// On an ID done already, DoneTxSQL fails the same way.
func TestDoneTxSQLAfterTheClaimWasTakenOverFails(t *testing.T) {
	t.Parallel()
	pool, db := testPool(t), testSQLDB(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg := idempotency.PostgresConfig{Namespace: "kitchen", Table: uniqueName("idem_"), ClaimTTL: 300 * time.Millisecond}
	dropTable(t, pool, cfg.Table, cfg.Table+"_migrations")
	a := newPostgresStore(t, pool, cfg)
	b, err := idempotency.NewPostgres(pool, cfg)
	must(t, err)
	fx := newSQLEffects(t, pool)
	handle := func(s *idempotency.PostgresStore, who string) error {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		defer func() { _ = tx.Rollback() }()
		if err := fx.apply(ctx, tx, "order-1", who); err != nil {
			return err
		}
		if err := s.DoneTxSQL(ctx, tx, "order-1"); err != nil {
			return err
		}
		return tx.Commit()
	}

	begin(t, a, "order-1", idempotency.StatusNew)
	deadline := time.Now().Add(5 * time.Second)
	for { // A's handler outlives its claim: B claims once it expired
		st, err := b.Begin(ctx, "order-1")
		must(t, err)
		if st == idempotency.StatusNew {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("B never took the expired claim over: %s", st)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// A finishes first, while B's claim is live: the owner fence refuses A.
	if err := handle(a, "A"); !errors.Is(err, idempotency.ErrClaimLost) {
		t.Fatalf("A's DoneTxSQL after B took the claim over: %v, want ErrClaimLost", err)
	}
	must(t, handle(b, "B"))
	// A's redelivered attempt after B's commit: the done fence refuses it.
	if err := handle(a, "A"); !errors.Is(err, idempotency.ErrClaimLost) {
		t.Fatalf("A's DoneTxSQL after B committed: %v, want ErrClaimLost", err)
	}
	if n, nb := fx.count(t, "order-1"), sqlCountWho(t, fx, "B"); n != 1 || nb != 1 {
		t.Fatalf("%d effects committed (%d by B), want B's only", n, nb)
	}
	begin(t, a, "order-1", idempotency.StatusDone)

	must(t, a.Done(ctx, "order-2"))
	tx, err := db.BeginTx(ctx, nil)
	must(t, err)
	defer func() { _ = tx.Rollback() }()
	if err := a.DoneTxSQL(ctx, tx, "order-2"); !errors.Is(err, idempotency.ErrClaimLost) {
		t.Fatalf("DoneTxSQL of a done ID: %v, want ErrClaimLost", err)
	}
}

func sqlCountWho(t *testing.T, fx *sqlEffects, who string) int {
	t.Helper()
	var n int
	must(t, fx.pool.QueryRow(context.Background(), `SELECT count(*) FROM `+fx.table+` WHERE who = $1`, who).Scan(&n))
	return n
}

// Issue 17 item 3 (L19, L20): ProcessTxSQL applies a message's effect
// exactly once: concurrent duplicates (on both the database/sql and the
// pgx path) apply it once; a handler error, a connection killed before the
// commit (the server ends the session, as on a consumer crash) and a panic
// each leave neither the effect nor the record, and the redelivery applies
// it once; an ID of any bytes is the same record on both paths.
func TestProcessTxSQLExactlyOnceEffect(t *testing.T) {
	t.Parallel()
	pool, db := testPool(t), testSQLDB(t)
	cfg := idempotency.PostgresConfig{Namespace: "kitchen", Table: uniqueName("idem_")}
	dropTable(t, pool, cfg.Table, cfg.Table+"_migrations")
	s := newPostgresStore(t, pool, cfg)
	fx := newSQLEffects(t, pool)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	apply := func(id string) func(context.Context, *sql.Tx) error {
		return func(ctx context.Context, tx *sql.Tx) error { return fx.apply(ctx, tx, id, "") }
	}
	// redeliver processes id again and wants it applied now, then skipped.
	redeliver := func(id string) {
		t.Helper()
		for _, want := range []idempotency.Status{idempotency.StatusNew, idempotency.StatusDone} {
			st, err := s.ProcessTxSQL(ctx, db, id, apply(id))
			must(t, err)
			if st != want {
				t.Fatalf("%q redelivered: %s, want %s", id, st, want)
			}
		}
		if n := fx.count(t, id); n != 1 {
			t.Fatalf("%q applied %d times, want once", id, n)
		}
	}
	untouched := func(what, id string) {
		t.Helper()
		if n, r := fx.count(t, id), sqlRecords(t, pool, cfg.Table, id); n != 0 || r != 0 {
			t.Fatalf("%s: %d effects and %d records left, want none", what, n, r)
		}
	}

	// Concurrent duplicates, six on database/sql and two on pgx.
	var news, dones atomic.Int32
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			var st idempotency.Status
			var err error
			if i < 6 {
				st, err = s.ProcessTxSQL(ctx, db, "m1", func(ctx context.Context, tx *sql.Tx) error {
					time.Sleep(20 * time.Millisecond) // hold the row lock while the others arrive
					return fx.apply(ctx, tx, "m1", "sql")
				})
			} else {
				st, err = s.ProcessTx(ctx, "m1", func(ctx context.Context, tx pgx.Tx) error {
					time.Sleep(20 * time.Millisecond)
					_, err := tx.Exec(ctx, `INSERT INTO `+fx.table+` (msg, who) VALUES ('m1', 'pgx')`)
					return err
				})
			}
			if err != nil {
				t.Error(err)
			}
			switch st {
			case idempotency.StatusNew:
				news.Add(1)
			case idempotency.StatusDone:
				dones.Add(1)
			}
		})
	}
	wg.Wait()
	if news.Load() != 1 || dones.Load() != 7 || fx.count(t, "m1") != 1 {
		t.Fatalf("8 concurrent deliveries: %d new, %d done, %d effects; want 1, 7, 1", news.Load(), dones.Load(), fx.count(t, "m1"))
	}

	// The handler fails after writing its effect.
	boom := errors.New("downstream down")
	_, err := s.ProcessTxSQL(ctx, db, "m2", func(ctx context.Context, tx *sql.Tx) error {
		if err := fx.apply(ctx, tx, "m2", ""); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("ProcessTxSQL = %v, want the handler's error", err)
	}
	untouched("handler error", "m2")
	redeliver("m2")

	// The session dies after the effect, before the commit.
	_, err = s.ProcessTxSQL(ctx, db, "m3", func(ctx context.Context, tx *sql.Tx) error {
		if err := fx.apply(ctx, tx, "m3", ""); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `SELECT pg_terminate_backend(pg_backend_pid())`)
		return err
	})
	if err == nil {
		t.Fatal("ProcessTxSQL on a killed session succeeded")
	}
	t.Logf("killed session: %v", err)
	untouched("killed session", "m3")
	redeliver("m3")

	// The handler panics after the effect.
	func() {
		defer func() {
			if recover() == nil {
				t.Fatal("the handler's panic did not propagate")
			}
		}()
		_, _ = s.ProcessTxSQL(ctx, db, "m4", func(ctx context.Context, tx *sql.Tx) error {
			if err := fx.apply(ctx, tx, "m4", ""); err != nil {
				return err
			}
			panic("handler bug")
		})
	}()
	untouched("panic", "m4")
	redeliver("m4")

	// Any bytes: one record, seen by both paths.
	foreign := "id\x00\xff" + strings.Repeat("x", 3000)
	st, err := s.ProcessTxSQL(ctx, db, foreign, func(context.Context, *sql.Tx) error { return nil })
	if err != nil || st != idempotency.StatusNew {
		t.Fatalf("foreign ID: %s, %v", st, err)
	}
	if st, err := s.ProcessTx(ctx, foreign, func(context.Context, pgx.Tx) error { return nil }); err != nil || st != idempotency.StatusDone {
		t.Fatalf("foreign ID on the pgx path: %s, %v, want done", st, err)
	}
	begin(t, s, foreign, idempotency.StatusDone)
}

// Issue 17 item 3 (L19, L20): a ledger of 300 messages, each delivered one
// to three times in random order by 8 concurrent workers, a quarter of the
// first attempts failing after the effect was written (rolled back and
// redelivered): every message is applied exactly once and recorded done,
// through ProcessTxSQL and through the consumer's flow (Begin, the effect
// and DoneTxSQL in the handler's *sql.Tx, Abort on failure).
func TestSQLTxDedupeUnderRedeliveriesAndFailures(t *testing.T) {
	t.Parallel()
	for _, flow := range []string{"ProcessTxSQL", "Begin+DoneTxSQL"} {
		t.Run(flow, func(t *testing.T) {
			pool, db := testPool(t), testSQLDB(t)
			cfg := idempotency.PostgresConfig{Namespace: "kitchen", Table: uniqueName("idem_")}
			dropTable(t, pool, cfg.Table, cfg.Table+"_migrations")
			s := newPostgresStore(t, pool, cfg)
			fx := newSQLEffects(t, pool)
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()

			const messages, workers = 300, 8
			var deliveries []string
			rng := rand.New(rand.NewPCG(3, 17))
			for i := range messages {
				for range 1 + rng.IntN(3) {
					deliveries = append(deliveries, fmt.Sprintf("msg-%03d", i))
				}
			}
			rng.Shuffle(len(deliveries), func(i, j int) { deliveries[i], deliveries[j] = deliveries[j], deliveries[i] })

			var (
				mu                     sync.Mutex
				failed                 = map[string]bool{}
				attempts, fails, skips atomic.Int32
				pending                sync.WaitGroup
				queue                  = make(chan string, 4*len(deliveries))
				errs                   = make(chan error, workers)
			)
			// failOnce fails a quarter of the messages on their first attempt.
			failOnce := func(id string) bool {
				mu.Lock()
				defer mu.Unlock()
				if failed[id] || rng.IntN(4) != 0 {
					failed[id] = true
					return false
				}
				failed[id] = true
				return true
			}
			errFail := errors.New("handler failed")
			handler := func(ctx context.Context, tx *sql.Tx, id string) error {
				if err := fx.apply(ctx, tx, id, ""); err != nil {
					return err
				}
				if failOnce(id) {
					return errFail
				}
				return nil
			}
			// deliver processes one delivery and says whether it must be redelivered.
			deliver := func(id string) (bool, error) {
				attempts.Add(1)
				if flow == "ProcessTxSQL" {
					st, err := s.ProcessTxSQL(ctx, db, id, func(ctx context.Context, tx *sql.Tx) error { return handler(ctx, tx, id) })
					if errors.Is(err, errFail) {
						fails.Add(1)
						return true, nil
					}
					if st == idempotency.StatusDone {
						skips.Add(1)
					}
					return false, err
				}
				st, err := s.Begin(ctx, id)
				if err != nil {
					return false, err
				}
				switch st {
				case idempotency.StatusDone:
					skips.Add(1)
					return false, nil
				case idempotency.StatusInProgress:
					return true, nil
				}
				tx, err := db.BeginTx(ctx, nil)
				if err != nil {
					return false, err
				}
				err = handler(ctx, tx, id)
				if err == nil {
					err = s.DoneTxSQL(ctx, tx, id)
				}
				if err == nil {
					err = tx.Commit()
				} else {
					_ = tx.Rollback()
				}
				if err != nil {
					fails.Add(1)
					return true, s.Abort(ctx, id)
				}
				return false, nil
			}
			for _, id := range deliveries {
				pending.Add(1)
				queue <- id
			}
			for range workers {
				go func() {
					for id := range queue {
						again, err := deliver(id)
						if err != nil {
							errs <- err
						}
						if again {
							pending.Add(1)
							time.Sleep(2 * time.Millisecond)
							queue <- id
						}
						pending.Done()
					}
				}()
			}
			pending.Wait()
			close(queue)
			select {
			case err := <-errs:
				t.Fatal(err)
			default:
			}
			var distinct, total, done int
			must(t, pool.QueryRow(ctx, `SELECT count(DISTINCT msg), count(*) FROM `+fx.table).Scan(&distinct, &total))
			must(t, pool.QueryRow(ctx, `SELECT count(*) FROM `+cfg.Table+` WHERE done`).Scan(&done))
			if distinct != messages || total != messages || done != messages {
				t.Fatalf("%d messages: %d applied, %d effects, %d done records; want %d each", messages, distinct, total, done, messages)
			}
			t.Logf("%s: %d messages, %d deliveries, %d attempts, %d failed and rolled back, %d duplicates skipped: %d effects, each once",
				flow, messages, len(deliveries), attempts.Load(), fails.Load(), skips.Load(), total)
		})
	}
}
