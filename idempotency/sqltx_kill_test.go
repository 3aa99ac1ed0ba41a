package idempotency_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/reliable-go/reliable/idempotency"
	"github.com/reliable-go/reliable/internal/testenv"
)

// Environment of the consumer child process of
// TestSQLTxConsumerKilledMidStreamAppliesEachMessageOnce.
const (
	sqlChildEnv     = "IDEMPOTENCY_TEST_SQL_CHILD"
	sqlChildDSN     = "IDEMPOTENCY_TEST_SQL_DSN"
	sqlChildTable   = "IDEMPOTENCY_TEST_SQL_TABLE"
	sqlChildEffects = "IDEMPOTENCY_TEST_SQL_EFFECTS"
	sqlChildCount   = "IDEMPOTENCY_TEST_SQL_COUNT"
)

// killClaimTTL is the claim TTL of the killed consumer: its claims in
// flight expire after it, and the redeliveries take them over.
const killClaimTTL = 2 * time.Second

// The child re-execs this test binary; init runs it before any test (a
// TestMain here could collide with another file's).
func init() {
	if os.Getenv(sqlChildEnv) == "consume" {
		if err := runSQLConsumerChild(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		select {} // processed everything: wait for the parent's kill
	}
}

// sqlConsumer is the consumer's dedupe flow with the effect in a
// database/sql transaction: Begin, then the effect and DoneTxSQL in one
// *sql.Tx, Abort when that fails. hold is how long the transaction stays
// open after the effect, so that a kill finds transactions in flight.
type sqlConsumer struct {
	store   *idempotency.PostgresStore
	pool    *pgxpool.Pool
	db      *sql.DB
	effects string
	hold    time.Duration
}

// deliver processes one delivery of id; busy means another consumer holds
// a live claim (redeliver later).
func (c *sqlConsumer) deliver(ctx context.Context, id string) (st idempotency.Status, err error) {
	st, err = c.store.Begin(ctx, id)
	if err != nil || st != idempotency.StatusNew {
		return st, err
	}
	tx, err := c.db.BeginTx(ctx, nil)
	if err != nil {
		_ = c.store.Abort(ctx, id)
		return 0, err
	}
	defer func() { _ = tx.Rollback() }()
	if _, err = tx.ExecContext(ctx, `INSERT INTO `+c.effects+` (msg) VALUES ($1)`, id); err == nil {
		time.Sleep(c.hold)
		if err = c.store.DoneTxSQL(ctx, tx, id); err == nil {
			err = tx.Commit()
		}
	}
	if err != nil {
		_ = c.store.Abort(ctx, id)
		return 0, err
	}
	return st, nil
}

// openSQLConsumer opens a consumer whose connections carry app as their
// application_name, so the test can see when a killed one's sessions ended.
func openSQLConsumer(ctx context.Context, dsn, app, table, effects string, hold time.Duration) (*sqlConsumer, error) {
	pcfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, err
	}
	pcfg.ConnConfig.RuntimeParams["application_name"] = app
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, err
	}
	cfg := pcfg.ConnConfig.Copy()
	store, err := idempotency.NewPostgres(pool, idempotency.PostgresConfig{Namespace: "kitchen", Table: table, ClaimTTL: killClaimTTL, CleanupInterval: -1})
	if err != nil {
		return nil, err
	}
	return &sqlConsumer{store: store, pool: pool, db: stdlib.OpenDB(*cfg), effects: effects, hold: hold}, nil
}

// runSQLConsumerChild consumes msg-0 .. msg-(n-1) with 4 workers.
func runSQLConsumerChild() error {
	ctx := context.Background()
	n, err := strconv.Atoi(os.Getenv(sqlChildCount))
	if err != nil {
		return err
	}
	table := os.Getenv(sqlChildTable)
	c, err := openSQLConsumer(ctx, os.Getenv(sqlChildDSN), table, table, os.Getenv(sqlChildEffects), 10*time.Millisecond)
	if err != nil {
		return err
	}
	ids := make(chan string)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for id := range ids {
				if _, err := c.deliver(ctx, id); err != nil {
					fmt.Fprintln(os.Stderr, err)
				}
			}
		})
	}
	for i := range n {
		ids <- fmt.Sprintf("msg-%03d", i)
	}
	close(ids)
	wg.Wait()
	return nil
}

// Issue 17 item 3 (L20): a consumer whose handler writes its effect and
// the done record in one *sql.Tx (Begin, effect, DoneTxSQL, Commit) is
// killed with SIGKILL mid-stream, four transactions open. The server rolls
// them back; their claims expire after the claim TTL. A new consumer then
// gets every message twice (the broker redelivers all): each message's
// effect is applied exactly once, committed ones are skipped as done, the
// ones in flight at the kill are applied after their claims expired.
func TestSQLTxConsumerKilledMidStreamAppliesEachMessageOnce(t *testing.T) {
	t.Parallel()
	const messages = 300
	pool := testPool(t)
	dsn := testenv.PostgresDSN(t)
	table := uniqueName("idem_")
	dropTable(t, pool, table, table+"_migrations")
	newPostgresStore(t, pool, idempotency.PostgresConfig{Table: table}) // migrates
	fx := newSQLEffects(t, pool)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), sqlChildEnv+"=consume", sqlChildDSN+"="+dsn, sqlChildTable+"="+table,
		sqlChildEffects+"="+fx.table, sqlChildCount+"="+strconv.Itoa(messages))
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	must(t, cmd.Start())
	var committed int
	deadline := time.Now().Add(30 * time.Second)
	for committed < messages/4 {
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			t.Fatalf("the child committed %d effects in 30 s\n%s", committed, out.String())
		}
		time.Sleep(10 * time.Millisecond)
		must(t, pool.QueryRow(ctx, `SELECT count(*) FROM `+fx.table).Scan(&committed))
	}
	must(t, cmd.Process.Signal(syscall.SIGKILL))
	err := cmd.Wait()
	var exitErr *exec.ExitError
	if !errors.As(err, &exitErr) || exitErr.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("child did not die by SIGKILL: %v\n%s", err, out.String())
	}
	// The server notices the dead connections and rolls their transactions
	// back; a commit the child sent before it died may still land. Count
	// once none of its sessions is left.
	deadline = time.Now().Add(20 * time.Second)
	for {
		var sessions int
		must(t, pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE application_name = $1`, table).Scan(&sessions))
		if sessions == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d sessions of the killed consumer still open after 20 s", sessions)
		}
		time.Sleep(20 * time.Millisecond)
	}
	var effectsAtKill, doneAtKill, claimsAtKill int
	must(t, pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM `+fx.table+`),
		count(*) FILTER (WHERE done), count(*) FILTER (WHERE NOT done) FROM `+table).Scan(&effectsAtKill, &doneAtKill, &claimsAtKill))
	if effectsAtKill != doneAtKill {
		t.Fatalf("after the kill: %d effects but %d done records: an effect committed without its record", effectsAtKill, doneAtKill)
	}
	if claimsAtKill == 0 || doneAtKill >= messages {
		t.Fatalf("after the kill: %d done, %d claims open: the kill was not mid-stream", doneAtKill, claimsAtKill)
	}

	// The replacement consumer gets every message twice.
	c, err := openSQLConsumer(ctx, dsn, "replacement", table, fx.table, 0)
	must(t, err)
	t.Cleanup(func() { _ = c.db.Close(); c.pool.Close() })
	var news, skips, busy atomic.Int32
	queue := make(chan string, 4*messages)
	var pending sync.WaitGroup
	for range 2 {
		for i := range messages {
			pending.Add(1)
			queue <- fmt.Sprintf("msg-%03d", i)
		}
	}
	errs := make(chan error, 8)
	for range 8 {
		go func() {
			for id := range queue {
				st, err := c.deliver(ctx, id)
				switch {
				case err != nil:
					errs <- err
				case st == idempotency.StatusNew:
					news.Add(1)
				case st == idempotency.StatusDone:
					skips.Add(1)
				case st == idempotency.StatusInProgress: // the dead consumer's claim: redelivered later
					busy.Add(1)
					pending.Add(1)
					time.Sleep(50 * time.Millisecond)
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
	must(t, pool.QueryRow(ctx, `SELECT count(*) FROM `+table+` WHERE done`).Scan(&done))
	if distinct != messages || total != messages || done != messages {
		t.Fatalf("%d messages: %d applied, %d effects, %d done records; want %d each", messages, distinct, total, done, messages)
	}
	if int(news.Load()) != messages-doneAtKill {
		t.Fatalf("the new consumer applied %d, want the %d not committed before the kill", news.Load(), messages-doneAtKill)
	}
	t.Logf("killed after %d of %d committed, %d claims in flight (rolled back); 600 redeliveries: %d applied, %d skipped as done, %d waited for an expired claim; %d effects, each message once",
		doneAtKill, messages, claimsAtKill, news.Load(), skips.Load(), busy.Load(), total)
}

// lockedBuffer collects a child's output from two pipes.
type lockedBuffer struct {
	mu sync.Mutex
	b  []byte
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.b = append(b.b, p...)
	return len(p), nil
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.b)
}
