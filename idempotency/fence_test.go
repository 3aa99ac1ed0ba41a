package idempotency_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/reliable-go/reliable/idempotency"
)

// Issue 15 item 2 (L19, L20): DoneTx is fenced to the claim's owner. Claim
// TTL 1 s: store A claims, its handler runs 1.5 s, store B claims the
// expired ID and commits its effects with DoneTx. Before, A's DoneTx then
// committed too (2 effects). Now A's DoneTx fails with ErrClaimLost, A rolls
// back, and the effect is applied once.
func TestDoneTxAfterTheClaimWasTakenOverFails(t *testing.T) {
	t.Parallel()
	pool := testPool(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg := idempotency.PostgresConfig{Namespace: "kitchen", Table: uniqueName("idem_"), ClaimTTL: time.Second}
	dropTable(t, pool, cfg.Table, cfg.Table+"_migrations")
	a := newPostgresStore(t, pool, cfg)
	b, err := idempotency.NewPostgres(pool, cfg)
	must(t, err)
	effects := uniqueName("fx_")
	dropTable(t, pool, effects)
	_, err = pool.Exec(ctx, `CREATE TABLE `+effects+` (who text)`)
	must(t, err)
	apply := func(s *idempotency.PostgresStore, who string) error {
		return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `INSERT INTO `+effects+` VALUES ($1)`, who); err != nil {
				return err
			}
			return s.DoneTx(ctx, tx, "order-1")
		})
	}

	st, err := a.Begin(ctx, "order-1")
	if err != nil || st != idempotency.StatusNew {
		t.Fatalf("A Begin: %s, %v", st, err)
	}
	time.Sleep(1500 * time.Millisecond) // A's handler outlives its 1 s claim
	st, err = b.Begin(ctx, "order-1")
	if err != nil || st != idempotency.StatusNew {
		t.Fatalf("B Begin after A's claim expired: %s, %v", st, err)
	}
	must(t, apply(b, "B"))
	if err := apply(a, "A"); !errors.Is(err, idempotency.ErrClaimLost) {
		t.Fatalf("A's DoneTx after B took the claim over: %v, want ErrClaimLost", err)
	}
	rows, err := pool.Query(ctx, `SELECT who FROM `+effects)
	must(t, err)
	whos, err := pgx.CollectRows(rows, pgx.RowTo[string])
	must(t, err)
	if len(whos) != 1 || whos[0] != "B" {
		t.Fatalf("effects committed: %v, want [B]", whos)
	}
	if st, err := a.Begin(ctx, "order-1"); err != nil || st != idempotency.StatusDone {
		t.Fatalf("status after B's commit: %s, %v", st, err)
	}
}

// The other order: A's handler outlived its claim but nobody took the ID:
// A still owns it and its DoneTx commits; B's later Begin sees it done.
func TestDoneTxAfterAnExpiredClaimNobodyTookCommits(t *testing.T) {
	t.Parallel()
	pool := testPool(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg := idempotency.PostgresConfig{Namespace: "kitchen", Table: uniqueName("idem_"), ClaimTTL: 100 * time.Millisecond}
	dropTable(t, pool, cfg.Table, cfg.Table+"_migrations")
	a := newPostgresStore(t, pool, cfg)
	b, err := idempotency.NewPostgres(pool, cfg)
	must(t, err)
	st, err := a.Begin(ctx, "order-1")
	if err != nil || st != idempotency.StatusNew {
		t.Fatalf("A Begin: %s, %v", st, err)
	}
	time.Sleep(200 * time.Millisecond)
	must(t, pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { return a.DoneTx(ctx, tx, "order-1") }))
	if st, err := b.Begin(ctx, "order-1"); err != nil || st != idempotency.StatusDone {
		t.Fatalf("B Begin after A's commit: %s, %v", st, err)
	}
}
