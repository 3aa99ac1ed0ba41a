package retry_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/reliable-go/reliable/internal/testenv"
	"github.com/reliable-go/reliable/retry"
)

// gateTracer holds a Table.Blocked query, once armed, after its answer was
// read and before it returns to the KeyCache: the cache's question is then
// older than whatever happens while it is held. Blocked runs its query in a
// batch (after the statement that sets plan_cache_mode), so the hold is in
// the batch tracer's per-query hook, called as the query's rows close.
type gateTracer struct {
	armed    atomic.Bool
	answered chan struct{}
	release  chan struct{}
}

func (*gateTracer) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	return ctx
}

func (*gateTracer) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

func (*gateTracer) TraceBatchStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	return ctx
}

func (g *gateTracer) TraceBatchQuery(_ context.Context, _ *pgx.Conn, d pgx.TraceBatchQueryData) {
	if strings.Contains(d.SQL, "SELECT EXISTS") && g.armed.CompareAndSwap(true, false) {
		close(g.answered)
		<-g.release
	}
}

func (*gateTracer) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData) {}

// TestKeyCacheLoadIsNotUndoneByAnOlderAnswer: a Blocked question asked before
// another instance parked a key (the key was free then) must not make the
// cache forget the key that a Load, which ran after the park, found blocked.
// The load is what the ownership rule relies on (a partition that comes back
// to this instance after instance D parked one of its keys, or the listener's
// reload after it reconnected, when the park's or an operator RetryNow's
// announcement was lost): no announcement will mark the key again, so every
// later message of the key would be handled ahead of the parked one.
func TestKeyCacheLoadIsNotUndoneByAnOlderAnswer(t *testing.T) {
	b := setup(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	g := &gateTracer{answered: make(chan struct{}), release: make(chan struct{})}
	pcfg, err := pgxpool.ParseConfig(testenv.PostgresDSN(t))
	if err != nil {
		t.Fatal(err)
	}
	pcfg.MaxConns = 4
	pcfg.ConnConfig.Tracer = g
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	mine, err := retry.NewTable(pool, b.cfg) // instance C's view of the same table
	if err != nil {
		t.Fatal(err)
	}
	c := mine.NewKeyCache()
	if err := c.Load(ctx); err != nil {
		t.Fatal(err)
	}

	// C asks about order-1 (its previous owner epoch, or a key the cache
	// held); the table answers free, and the answer is held.
	g.armed.Store(true)
	asked := make(chan error, 1)
	go func() {
		blocked, err := c.Blocked(ctx, "order-1")
		if err == nil && blocked {
			err = errors.New("the held question found the key blocked")
		}
		asked <- err
	}()
	select {
	case <-g.answered:
	case <-ctx.Done():
		t.Fatal("the Blocked question never reached the table")
	}

	// Instance D parks order-1 (no announcement reaches C: its listener is
	// down), then C loads (it took the partition back, or its listener
	// reconnected) and finds the key.
	if err := b.table.Park(ctx, orderMsg("order-1", "created"), errors.New("down")); err != nil {
		t.Fatal(err)
	}
	if err := c.Load(ctx); err != nil {
		t.Fatal(err)
	}
	if !c.MaybeBlocked("order-1") {
		t.Fatal("the load did not find the parked key")
	}

	close(g.release)
	if err := <-asked; err != nil {
		t.Fatal(err)
	}
	if blocked, err := b.table.Blocked(ctx, "order-1"); err != nil || !blocked {
		t.Fatalf("table: blocked %v, %v; want blocked", blocked, err)
	}
	if !c.MaybeBlocked("order-1") {
		t.Fatal("the cache forgot order-1, which the table holds blocked and a load found after its park: " +
			"a question asked before the park undid the load, and the key's later messages would be handled ahead of the parked one")
	}
}

// TestKeyCacheHearsRetryNowWhateverTheSchemaSpelling: the operator's tool
// (reliablectl, an admin service) names the consumer's table with its schema
// while the consumer names it through the search_path (Schema empty), or the
// other way round: both are the same table and group. RetryNow of a released
// entry blocks the key again, and the consumer's listening cache must hear
// it; otherwise nothing marks the key until the next load (a rebalance), and
// every later message of the key is handled ahead of the retried entry. A
// park by a process that spells the table as the consumer does, announced
// after the RetryNow, shows the listener was live: notifications arrive in
// commit order.
func TestKeyCacheHearsRetryNowWhateverTheSchemaSpelling(t *testing.T) {
	b := setup(t, nil) // Schema empty: the search_path
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var schema string
	if err := b.pool.QueryRow(ctx, `SELECT current_schema()`).Scan(&schema); err != nil {
		t.Fatal(err)
	}
	opCfg := b.cfg
	opCfg.Schema = schema // the same table, named with its schema
	operator, err := retry.NewTable(b.pool, opCfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.table.DeadLetter(ctx, orderMsg("order-7", "created"), errors.New("bad")); err != nil {
		t.Fatal(err)
	}
	if _, err := operator.Release(ctx, "order-7"); err != nil {
		t.Fatal(err)
	}

	c := b.table.NewKeyCache()
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(runCtx, testLogger()) }()
	defer func() { stop(); <-done }()
	waitFor(t, 10*time.Second, "the listener's first load", func() bool { return c.Listening() })
	if c.MaybeBlocked("order-7") {
		t.Fatal("a released key is held as blocked")
	}

	es, err := operator.List(ctx, filterKey("order-7"))
	if err != nil || len(es) != 1 {
		t.Fatalf("entries = %v, %v", es, err)
	}
	if err := operator.RetryNow(ctx, es[0].ID); err != nil {
		t.Fatal(err)
	}
	if blocked, err := b.table.Blocked(ctx, "order-7"); err != nil || !blocked {
		t.Fatalf("after RetryNow the table says blocked %v, %v; want blocked", blocked, err)
	}
	if err := b.table.Park(ctx, orderMsg("sentinel", "created"), errors.New("down")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the later park's announcement", func() bool { return c.MaybeBlocked("sentinel") })
	if !c.MaybeBlocked("order-7") {
		t.Fatalf("the listening cache did not hear the RetryNow made through %q (the consumer names the table without its schema): "+
			"order-7 is blocked in the table but free in the cache", schema)
	}
}
