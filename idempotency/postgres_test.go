package idempotency_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/reliable-go/reliable/idempotency"
)

func newPostgresStore(t *testing.T, pool *pgxpool.Pool, cfg idempotency.PostgresConfig) *idempotency.PostgresStore {
	t.Helper()
	if cfg.Table == "" {
		cfg.Table = uniqueName("idem_")
		dropTable(t, pool, cfg.Table, cfg.Table+"_migrations")
	}
	if cfg.Namespace == "" {
		cfg.Namespace = "kitchen"
	}
	s, err := idempotency.NewPostgres(pool, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	must(t, s.Migrate(ctx))
	return s
}

func TestPostgresMigrateConcurrentlyAndTwice(t *testing.T) {
	t.Parallel()
	pool := testPool(t)
	table := uniqueName("idem_")
	dropTable(t, pool, table, table+"_migrations")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for range 4 {
		s, err := idempotency.NewPostgres(pool, idempotency.PostgresConfig{Namespace: "g", Table: table})
		must(t, err)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.Migrate(ctx); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	s, _ := idempotency.NewPostgres(pool, idempotency.PostgresConfig{Namespace: "g", Table: table})
	must(t, s.Migrate(ctx))
	var n int
	must(t, pool.QueryRow(ctx, "SELECT count(*) FROM "+table+"_migrations").Scan(&n))
	files, err := os.ReadDir("migrations")
	must(t, err)
	if n != len(files) {
		t.Fatalf("%d migration records, want one per file: %d", n, len(files))
	}
}

// L20: recording done inside the handler's transaction ties the record to
// the effect: a rolled-back transaction leaves neither.
func TestPostgresDoneTxFollowsTheTransaction(t *testing.T) {
	t.Parallel()
	pool := testPool(t)
	s := newPostgresStore(t, pool, idempotency.PostgresConfig{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	begin(t, s, "rolled-back", idempotency.StatusNew)
	tx, err := pool.Begin(ctx)
	must(t, err)
	must(t, s.DoneTx(ctx, tx, "rolled-back"))
	must(t, tx.Rollback(ctx))
	begin(t, s, "rolled-back", idempotency.StatusInProgress) // still our claim, not done
	must(t, s.Abort(ctx, "rolled-back"))
	begin(t, s, "rolled-back", idempotency.StatusNew)

	begin(t, s, "committed", idempotency.StatusNew)
	tx, err = pool.Begin(ctx)
	must(t, err)
	must(t, s.DoneTx(ctx, tx, "committed"))
	must(t, tx.Commit(ctx))
	begin(t, s, "committed", idempotency.StatusDone)
}

// L19, L20: ProcessTx runs the effect once in effect even when many
// deliveries of the message race, and a failed effect leaves no record.
func TestPostgresProcessTxExactlyOnce(t *testing.T) {
	t.Parallel()
	pool := testPool(t)
	s := newPostgresStore(t, pool, idempotency.PostgresConfig{})
	ledger := uniqueName("ledger_")
	dropTable(t, pool, ledger)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := pool.Exec(ctx, "CREATE TABLE "+ledger+" (msg text NOT NULL)")
	must(t, err)
	apply := func(ctx context.Context, tx pgx.Tx, id string) error {
		_, err := tx.Exec(ctx, "INSERT INTO "+ledger+" (msg) VALUES ($1)", id)
		return err
	}

	var ran atomic.Int32
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := s.ProcessTx(ctx, "m1", func(ctx context.Context, tx pgx.Tx) error {
				time.Sleep(20 * time.Millisecond) // hold the row lock while others arrive
				return apply(ctx, tx, "m1")
			})
			if err != nil {
				t.Error(err)
			}
			if st == idempotency.StatusNew {
				ran.Add(1)
			}
		}()
	}
	wg.Wait()
	if ran.Load() != 1 {
		t.Fatalf("%d ProcessTx calls ran the effect, want 1", ran.Load())
	}

	boom := errors.New("downstream down")
	_, err = s.ProcessTx(ctx, "m2", func(ctx context.Context, tx pgx.Tx) error {
		if err := apply(ctx, tx, "m2"); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("ProcessTx = %v, want the handler's error", err)
	}
	st, err := s.ProcessTx(ctx, "m2", func(ctx context.Context, tx pgx.Tx) error { return apply(ctx, tx, "m2") })
	must(t, err)
	if st != idempotency.StatusNew {
		t.Fatalf("retry after failure: %v, want StatusNew", st)
	}
	var n1, n2 int
	must(t, pool.QueryRow(ctx, "SELECT count(*) FILTER (WHERE msg='m1'), count(*) FILTER (WHERE msg='m2') FROM "+ledger).Scan(&n1, &n2))
	if n1 != 1 || n2 != 1 {
		t.Fatalf("ledger has m1 %d times and m2 %d times, want once each", n1, n2)
	}
	begin(t, s, "m1", idempotency.StatusDone) // Begin/Done see ProcessTx records
}

// L17: Cleanup removes expired records in batches and keeps live ones.
func TestPostgresCleanup(t *testing.T) {
	t.Parallel()
	pool := testPool(t)
	table := uniqueName("idem_")
	dropTable(t, pool, table, table+"_migrations")
	// The background cleanup is off: this test counts what Cleanup deletes.
	old := newPostgresStore(t, pool, idempotency.PostgresConfig{Table: table, Retention: 50 * time.Millisecond, ClaimTTL: 50 * time.Millisecond, CleanupBatchSize: 10, CleanupInterval: -1})
	live := newPostgresStore(t, pool, idempotency.PostgresConfig{Table: table, CleanupInterval: -1})
	other := newPostgresStore(t, pool, idempotency.PostgresConfig{Table: table, Namespace: "billing", Retention: 50 * time.Millisecond, CleanupInterval: -1})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := range 25 {
		must(t, old.Done(ctx, fmt.Sprint("done-", i)))
	}
	for i := range 3 {
		begin(t, old, fmt.Sprint("claim-", i), idempotency.StatusNew)
	}
	must(t, other.Done(ctx, "other-ns"))
	time.Sleep(100 * time.Millisecond)
	for i := range 5 {
		must(t, live.Done(ctx, fmt.Sprint("live-", i))) // same namespace, 7-day retention
	}
	n, err := old.Cleanup(ctx)
	must(t, err)
	if n != 28 {
		t.Fatalf("Cleanup deleted %d rows, want 28", n)
	}
	var left int
	must(t, pool.QueryRow(ctx, "SELECT count(*) FROM "+table).Scan(&left))
	if left != 6 { // 5 live + the other namespace's row
		t.Fatalf("%d rows left, want 6", left)
	}

	// RunCleanup does the same periodically.
	must(t, other.Done(ctx, "other-2"))
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); other.RunCleanup(runCtx, 20*time.Millisecond, nil) }()
	waitRows := time.Now().Add(5 * time.Second)
	for {
		must(t, pool.QueryRow(ctx, "SELECT count(*) FROM "+table+" WHERE namespace = 'billing'").Scan(&left))
		if left == 0 {
			break
		}
		if time.Now().After(waitRows) {
			t.Fatalf("RunCleanup left %d expired rows", left)
		}
		time.Sleep(20 * time.Millisecond)
	}
	stop()
	<-done
}
