package outbox

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/internal/testenv"
)

type nopPublisher struct{}

func (nopPublisher) Publish(context.Context, ...*reliable.Message) error { return nil }
func (nopPublisher) Close() error                                        { return nil }

// Issue 19 (a), L19: a claim can lease a key again in the moment between
// the mark statement that released it (its last row confirmed and deleted)
// and applyMark, when a new row of the key committed meanwhile. The claim
// found the released lane still in r.lanes and took it for "ours again"
// (reading no rows), then applyMark dropped it as released: the lease,
// fresh and under this relay's Instance, was worked by no lane, renewed by
// nothing and skipped by every claim, so the key's new row waited for the
// lease to expire (LeaseTTL). The steps run the relay's own functions in
// that order against the real PostgreSQL, without the loops.
//
// Before the fix: after applyMark no lane worked the key while its lease
// was the relay's. After: the claim makes a new lane holding the new row,
// which is publishable at once.
func TestClaimBetweenReleaseAndApplyMarkKeepsTheKeyWorked(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pool := internalTestPool(t, ctx)
	r, err := NewRelay(pool, nopPublisher{}, Config{
		Instance: "race", LeaseTTL: 20 * time.Second, PublishTimeout: 2 * time.Second,
		PollInterval: time.Hour, // no sweep: the sweep would mend the orphan within PollInterval
		Logger:       slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	r.lastSweep = time.Now()
	add := func(body string) *reliable.Message {
		m := &reliable.Message{Topic: "orders", Key: "k", Type: "t", Payload: []byte(body)}
		if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { return Add(ctx, tx, m) }); err != nil {
			t.Fatal(err)
		}
		return m
	}
	const laneK = "k:k"

	first := add("1")
	if n, err := r.claim(ctx); err != nil || n != 1 {
		t.Fatalf("first claim: %d keys, %v", n, err)
	}
	batch, _ := r.takeBatch(time.Now())
	if len(batch) != 1 || batch[0].msg.ID != first.ID {
		t.Fatalf("took %d rows, want the first row", len(batch))
	}
	// Confirmed: the mark statement deletes the row and releases the key.
	p := r.planMark([]markItem{{row: batch[0], kind: markSent}})
	if len(p.release) != 1 {
		t.Fatalf("mark plan releases %v, want the key", p.release)
	}
	if err := r.execMark(ctx, p); err != nil {
		t.Fatal(err)
	}
	// A new row commits and a claim runs before applyMark.
	second := add("2")
	if n, err := r.claim(ctx); err != nil || n != 1 {
		t.Fatalf("claim between mark and applyMark: %d keys, %v", n, err)
	}
	r.applyMark(p)

	var owner string
	if err := pool.QueryRow(ctx, `SELECT owner FROM reliable_outbox_leases WHERE lane = $1`, laneK).Scan(&owner); err != nil {
		t.Fatalf("lease of the key: %v", err)
	}
	r.mu.Lock()
	l := r.lanes[laneK]
	r.mu.Unlock()
	if l == nil {
		t.Fatalf("the key's lease is held by %q (this relay) but no lane works it: its row waits for the lease to expire", owner)
	}
	batch, _ = r.takeBatch(time.Now())
	if len(batch) != 1 || batch[0].msg.ID != second.ID {
		t.Fatalf("took %d rows after applyMark, want the second row at once", len(batch))
	}
}

// internalTestPool is a pool on a new migrated schema, dropped at the end.
func internalTestPool(t *testing.T, ctx context.Context) *pgxpool.Pool {
	t.Helper()
	dsn := testenv.PostgresDSN(t)
	schema := fmt.Sprintf("outbox_itest_%d_%d", time.Now().UnixNano(), rand.IntN(1e6))
	admin, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn, err := pgx.Connect(context.Background(), dsn)
		if err != nil {
			return
		}
		defer conn.Close(context.Background())
		_, _ = conn.Exec(context.Background(), "DROP SCHEMA "+schema+" CASCADE")
	})
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.RuntimeParams["search_path"] = schema
	cfg.MaxConns = 4
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if err := Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	return pool
}
