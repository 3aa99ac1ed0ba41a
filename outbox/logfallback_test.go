package outbox_test

import (
	"context"
	"testing"
	"time"

	"github.com/reliable-go/reliable/outbox"
	"github.com/reliable-go/reliable/reliabletest"
)

// dropSlotUnderRelay drops the slot a relay streams from, as an operator
// would: end its walsender, then drop (the relay may reconnect in between,
// so try until the drop wins).
func dropSlotUnderRelay(t *testing.T, db *testDB, slot string) {
	t.Helper()
	ctx := context.Background()
	waitFor(t, 20*time.Second, "slot dropped", func() bool {
		_, _ = db.pool.Exec(ctx, `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1 AND active`, slot)
		return outbox.DropSlot(ctx, db.pool, slot) == nil
	})
}

// The slot is dropped while the relay reads it and writers commit: the
// relay falls back to polling by itself (log line, Stats.LogFallbacks),
// loses nothing, keeps commit order, and reads the log again once an
// operator creates the slot again.
func TestLogRelaySlotDroppedWhileRunningFallsBackToPolling(t *testing.T) {
	t.Parallel()
	db := newTestDB(t, 16)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	slot := logSlot(t, db)
	lw := newLedger(t, db, 20)
	broker := reliabletest.NewBroker(reliabletest.BrokerOptions{Partitions: 4})
	broker.CreateTopic("orders")
	r := startRelay(t, db.pool, broker.Publisher(), logConfig(slot))
	waitState(t, r, "reading")

	written := make(chan error, 1)
	go func() { written <- lw.write(ctx, 4, 3000, 3*time.Millisecond) }()
	waitFor(t, 20*time.Second, "rows from the log", func() bool { return r.Stats().LogRows > 200 })
	dropSlotUnderRelay(t, db, slot)
	waitState(t, r, "slot missing")
	fromLog := r.Stats().LogRows
	if len(written) > 0 {
		t.Fatal("the writers finished before the drop")
	}
	if err := <-written; err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, "all rows relayed by polling", func() bool { return db.count(t, `SELECT count(*) FROM reliable_outbox`) == 0 })
	s := r.Stats()
	// Ending the walsender counts as an error fallback, then the slot is
	// missing: one or two.
	if s.LogFallbacks == 0 || s.LogRows != fromLog {
		t.Fatalf("%d fallbacks, %d rows from the log after the drop (%d before): want a fallback and none more", s.LogFallbacks, s.LogRows, fromLog)
	}

	// Back to the log once the slot exists again.
	if err := outbox.CreateSlot(ctx, db.pool, slot); err != nil {
		t.Fatal(err)
	}
	waitState(t, r, "reading")
	if err := lw.write(ctx, 4, 400, 0); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, "all rows relayed", func() bool { return db.count(t, `SELECT count(*) FROM reliable_outbox`) == 0 })
	total, dups := lw.check(t, brokerMsgs(broker.Messages("orders")))
	if r.Stats().LogRows == s.LogRows {
		t.Fatal("no row came from the log after the slot was created again")
	}
	t.Logf("%d messages in commit order, %d duplicates, 0 lost; %d rows from the log before the drop, %d after it was created again; fallbacks %d",
		total, dups, fromLog, r.Stats().LogRows-s.LogRows, s.LogFallbacks)
}

// A slot that retains more WAL than Config.SlotWALBudget makes the relay
// poll, move the slot to the current position (releasing the WAL) and say
// so; nothing is lost.
func TestLogRelayOverWALBudgetFallsBackAndReleasesTheWAL(t *testing.T) {
	t.Parallel()
	db := newTestDB(t, 16)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	slot := logSlot(t, db)
	lw := newLedger(t, db, 10)
	broker := reliabletest.NewBroker(reliabletest.BrokerOptions{Partitions: 4})
	broker.CreateTopic("orders")
	cfg := logConfig(slot)
	cfg.SlotWALBudget = 1 // any WAL retained is over it
	cfg.SlotRetry = time.Hour
	r := startRelay(t, db.pool, broker.Publisher(), cfg)
	waitState(t, r, "over WAL budget")
	if err := lw.write(ctx, 4, 1000, 0); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, "all rows relayed", func() bool { return db.count(t, `SELECT count(*) FROM reliable_outbox`) == 0 })
	total, dups := lw.check(t, brokerMsgs(broker.Messages("orders")))
	s := r.Stats()
	if s.LogFallbacks == 0 || s.LogRows != 0 {
		t.Fatalf("%d fallbacks, %d rows from the log: want a fallback and none", s.LogFallbacks, s.LogRows)
	}
	st, err := outbox.SlotStatus(ctx, db.pool, slot)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d messages by polling, %d duplicates; slot confirmed at %s, retains %d bytes (moved on at the fallback)", total, dups, st.ConfirmedFlushLSN, st.RetainedBytes)
}
