package outbox_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/reliable-go/reliable/outbox"
	"github.com/reliable-go/reliable/reliabletest"
)

// Issue 19 (b), L19/L20: a killed relay's database session can commit a
// claim after the relay, restarted with the same Instance, took its leases
// over (the claim was on the wire, behind a fault proxy, or waiting on a
// row lock when the process died). The lease then names the live relay, so
// claims skip it ("leased by a live relay"), yet the relay does not work the
// key and never renews it: the key's rows waited for the lease to expire.
// The late commit is a session held open: it writes the lease before the
// relay starts and commits after the relay took its leases over.
//
// Before the fix (LeaseTTL 20 s): the key's rows were still pending after
// 4 s (they went out when the lease expired, ~20 s). After: the relay
// takes the lease back at its next sweep (within PollInterval) and the rows
// go out in order; every other key is unaffected.
func TestLeaseCommittedLateUnderOwnInstanceIsTakenBack(t *testing.T) {
	t.Parallel()
	db := newTestDB(t, 8)
	testOrphanLeaseTakenBack(t, db, testConfig())
}

// The same with the log-reading relay: the log shows the key's rows, its
// lease fails (held), and before the fix polling could not claim it either.
func TestLogRelayLeaseCommittedLateUnderOwnInstanceIsTakenBack(t *testing.T) {
	t.Parallel()
	db := newTestDB(t, 8)
	slot := logSlot(t, db)
	// Created first: creating a slot waits for open transactions, such as
	// the late claim's.
	must(t, outbox.CreateSlot(context.Background(), db.pool, slot))
	testOrphanLeaseTakenBack(t, db, logConfig(slot))
}

func testOrphanLeaseTakenBack(t *testing.T, db *testDB, cfg outbox.Config) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	broker := reliabletest.NewBroker(reliabletest.BrokerOptions{})
	broker.CreateTopic("orders")
	const instance = "relay-restarted"

	// The dead incarnation's session: a claim of key o-late, not yet
	// committed.
	late, err := pgx.Connect(ctx, db.dsn)
	must(t, err)
	defer late.Close(context.Background())
	_, err = late.Exec(ctx, `SET search_path TO `+db.schema)
	must(t, err)
	lateTx, err := late.Begin(ctx)
	must(t, err)
	_, err = lateTx.Exec(ctx, `INSERT INTO reliable_outbox_leases (lane, owner, expires_at)
		VALUES ('k:o-late', $1, now() + interval '20 seconds')`, instance)
	must(t, err)

	cfg.Instance, cfg.LeaseTTL, cfg.PublishTimeout = instance, 20*time.Second, 2*time.Second
	r := startRelay(t, db.pool, broker.Publisher(), cfg)
	if cfg.Mode == outbox.ModeLog {
		waitState(t, r, "reading")
	}
	first := msg("orders", "o-free", "0")
	must(t, addTx(ctx, db.pool, first))
	waitFor(t, 10*time.Second, "the relay at work", func() bool { return len(broker.Messages("orders")) >= 1 })
	// The relay took its Instance's leases over at start; now the late
	// claim commits.
	must(t, lateTx.Commit(ctx))
	if n := db.count(t, `SELECT count(*) FROM reliable_outbox_leases WHERE owner = $1 AND lane = 'k:o-late'`, instance); n != 1 {
		t.Fatalf("late lease not in place (%d rows)", n)
	}

	want := map[string][]string{"o-free": {first.ID}}
	for i := range 5 {
		for _, key := range []string{"o-late", "o-free"} {
			m := msg("orders", key, fmt.Sprint(i))
			must(t, addTx(ctx, db.pool, m))
			want[key] = append(want[key], m.ID)
		}
	}
	start := time.Now()
	waitFor(t, 4*time.Second, "the rows of the key with the late lease relayed (lease TTL 20 s)", func() bool {
		return db.count(t, `SELECT count(*) FROM reliable_outbox`) == 0
	})
	t.Logf("rows behind the late lease relayed in %s (lease TTL 20 s); stats %+v", time.Since(start).Round(time.Millisecond), r.Stats())
	if s := r.Stats(); s.OrphanLeases != 1 {
		// Exactly the late lease: the sweep never takes a lease the relay
		// works.
		t.Errorf("Stats.OrphanLeases = %d, want 1 (the late lease)", s.OrphanLeases)
	}
	got, _ := firstSeen(broker.Messages("orders"))
	for key, ids := range want {
		if fmt.Sprint(got[key]) != fmt.Sprint(ids) {
			t.Errorf("key %s published as %v, want %v (commit order, none lost)", key, got[key], ids)
		}
	}
}
