package idempotency_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/reliable-go/reliable/idempotency"
	"github.com/reliable-go/reliable/internal/testenv"
)

// claimGate holds every claim statement of the store under test, once it
// has been answered, until the test opens the gate: the claims are made,
// and their callers may stop waiting meanwhile.
type claimGate struct {
	reached chan string // the SQL of each held statement
	open    chan struct{}
}

func (g *claimGate) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	if strings.Contains(d.SQL, "claim AS") {
		return context.WithValue(ctx, g, d.SQL)
	}
	return ctx
}

func (g *claimGate) TraceQueryEnd(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryEndData) {
	if sql, ok := ctx.Value(g).(string); ok {
		g.reached <- sql
		<-g.open
	}
}

// The claim statements run in a batch (after the statement that sets
// plan_cache_mode): they are held in the batch tracer's per-query hook,
// called once their rows were read.

func (*claimGate) TraceBatchStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	return ctx
}

func (g *claimGate) TraceBatchQuery(_ context.Context, _ *pgx.Conn, d pgx.TraceBatchQueryData) {
	if strings.Contains(d.SQL, "claim AS") {
		g.reached <- d.SQL
		<-g.open
	}
}

func (*claimGate) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData) {}

// TestBatchedBeginReleasesAbandonedClaims: a Begin whose caller stops
// waiting (its context ends: shutdown, a revoked partition) while the claim
// is being made leaves no claim behind: the batch aborts it, so another
// instance claims the message at once instead of after ClaimTTL; and the
// callers that kept waiting in the same round trips keep their own claims
// and results. Covered: a lone call abandoned while its statement runs
// (whose caller either gets the claim or holds none, never a claim the
// store aborts), and a call abandoned while queued behind the round trips
// in flight, whose ID the next batch claims together with a live call's.
func TestBatchedBeginReleasesAbandonedClaims(t *testing.T) {
	cfg, err := pgxpool.ParseConfig(testenv.PostgresDSN(t))
	if err != nil {
		t.Fatal(err)
	}
	g := &claimGate{reached: make(chan string, 16), open: make(chan struct{})}
	cfg.ConnConfig.Tracer = g
	cfg.MaxConns = 8
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	table := uniqueName("idem_abandon_")
	dropTable(t, pool, table)
	// ClaimTTL is long: a claim left behind would hold its message for it.
	pcfg := idempotency.PostgresConfig{Namespace: "abandon", Table: table, ClaimTTL: 10 * time.Minute}
	s, err := idempotency.NewPostgres(pool, pcfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	other, err := idempotency.NewPostgres(testPool(t), pcfg) // another instance
	if err != nil {
		t.Fatal(err)
	}
	await := func(what string) {
		t.Helper()
		select {
		case <-g.reached:
		case <-ctx.Done():
			t.Fatalf("%s: no claim statement reached the database", what)
		}
	}

	type result struct {
		st  idempotency.Status
		err error
	}
	begin := func(bctx context.Context, id string) <-chan result {
		ch := make(chan result, 1)
		go func() {
			st, err := s.Begin(bctx, id)
			ch <- result{st, err}
		}()
		return ch
	}

	// Four lone calls lead the four round trips a store keeps in flight;
	// the first is abandoned while its statement is held.
	lctx, abandonLead := context.WithCancel(ctx)
	lead := begin(lctx, "lead-abandoned")
	await("lead")
	var leaders []<-chan result
	for _, id := range []string{"lead-2", "lead-3", "lead-4"} {
		leaders = append(leaders, begin(ctx, id))
		await(id)
	}
	abandonLead()

	// Two more calls queue behind them; one stops waiting while queued.
	qctx, abandonQueued := context.WithCancel(ctx)
	queued := begin(qctx, "queued-abandoned")
	live := begin(ctx, "queued-live")
	abandonQueued()
	if r := <-queued; !errors.Is(r.err, context.Canceled) {
		t.Fatalf("abandoned queued Begin = %v, %v; want context.Canceled", r.st, r.err)
	}

	var open sync.Once
	release := func() { open.Do(func() { close(g.open) }) }
	t.Cleanup(release)
	release()
	// The lead's context ended while its statement ran: it either returns
	// the claim (the answer beat the cancellation; the caller holds it and
	// must use or abort it) or context.Canceled, and then holds nothing.
	// Never both: a claim the store aborts must not be reported as held.
	leadHeld := false
	switch r := <-lead; {
	case r.err == nil && r.st == idempotency.StatusNew:
		leadHeld = true
	case errors.Is(r.err, context.Canceled):
	default:
		t.Fatalf("abandoned lead Begin = %v, %v; want its claim or context.Canceled", r.st, r.err)
	}
	for i, ch := range leaders {
		if r := <-ch; r.err != nil || r.st != idempotency.StatusNew {
			t.Fatalf("leader %d: %v, %v; want its own claim", i+2, r.st, r.err)
		}
	}
	if r := <-live; r.err != nil || r.st != idempotency.StatusNew {
		t.Fatalf("queued live Begin = %v, %v; want its own claim", r.st, r.err)
	}

	// The abandoned claims are aborted by the time their batches returned
	// to the live callers or soon after: another instance claims them.
	abandoned := []string{"queued-abandoned"}
	if !leadHeld {
		abandoned = append(abandoned, "lead-abandoned")
	}
	for _, id := range abandoned {
		deadline := time.Now().Add(5 * time.Second)
		for {
			st, err := other.Begin(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if st == idempotency.StatusNew {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: another instance still gets %v after 5s: the abandoned claim was left to expire", id, st)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	// The live claims stay theirs.
	held := []string{"lead-2", "lead-3", "lead-4", "queued-live"}
	if leadHeld {
		held = append(held, "lead-abandoned")
	}
	for _, id := range held {
		if st, err := other.Begin(ctx, id); err != nil || st != idempotency.StatusInProgress {
			t.Fatalf("%s: another instance gets %v, %v; want in progress (the live caller's claim)", id, st, err)
		}
	}
}
