package observability_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/internal/testenv"
	"github.com/reliable-go/reliable/outbox"
	"github.com/reliable-go/reliable/reliabletest"
)

// The log-reading relay's and its replication slot's gauges, read from a
// real PostgreSQL slot and a running outbox.ModeLog relay, carry what
// outbox.SlotStatus and Relay.Stats report: while the relay reads, after
// the slot is dropped under it (a fallback, state "slot missing"), and on
// an idle slot, whose byte figures are compared with SlotStatus read just
// before and just after the scrape (other tests write WAL meanwhile, so
// the current position moves; the slot's own positions must not).
func TestWatchOutboxSlotAndRelay(t *testing.T) {
	b := setup(t)
	ctx := testenv.Context(t, 90*time.Second)
	pool := pgSchema(t, ctx)
	if err := outbox.Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	slot := testenv.UniqueName(t, "obs")
	if err := outbox.CreateSlot(ctx, pool, slot); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dropSlot(t, pool, slot) })

	broker := reliabletest.NewBroker(reliabletest.BrokerOptions{})
	broker.CreateTopic("orders")
	relay, err := outbox.NewRelay(pool, broker.Publisher(), outbox.Config{
		Instance: testenv.UniqueName(t, "relay"), Mode: outbox.ModeLog, Slot: slot,
		SlotCheckInterval: 200 * time.Millisecond, PollInterval: time.Second,
		Backoff: reliable.Backoff{Initial: 20 * time.Millisecond, Max: 200 * time.Millisecond}, Logger: quiet,
	})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	ran := make(chan error, 1)
	go func() { ran <- relay.Run(runCtx) }()
	stopped := false
	stopRelay := func() {
		if !stopped {
			stopped = true
			stop()
			if err := <-ran; err != nil {
				t.Errorf("Run: %v", err)
			}
		}
	}
	t.Cleanup(stopRelay)
	if _, err := b.tel.WatchRelay(relay); err != nil {
		t.Fatal(err)
	}
	if _, err := b.tel.WatchOutboxSlot(pool, slot); err != nil {
		t.Fatal(err)
	}
	rl, sl := `relay="`+relay.Instance()+`"`, `slot="`+slot+`"`

	// Reading: rows come from the log. One key, a transaction at a time:
	// the key's lane stays leased between them, so its later rows join it
	// straight from the log (Stats.LogRows).
	waitUntil(t, 20*time.Second, "the relay reads the log", func() bool { return relay.Stats().LogState == "reading" })
	const rows = 20
	for range rows {
		if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			return outbox.Add(ctx, tx, &reliable.Message{Topic: "orders", Key: "k"})
		}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond) // a trickle, not a batch
	}
	waitUntil(t, 20*time.Second, "rows published, some from the log, none pending", func() bool {
		s := relay.Stats()
		return len(broker.Messages("orders")) >= rows && s.LogRows > 0 && s.LogPending == 0
	})
	before := relay.Stats()
	text := b.scrape(t)
	after := relay.Stats()
	t.Logf("reading: Stats.LogRows %d..%d, LogConfirmed %d..%d; scraped rows %s, confirmed %s", before.LogRows, after.LogRows,
		before.LogConfirmed, after.LogConfirmed, sample(text, "reliable_outbox_log_rows_total", rl), sample(text, "reliable_outbox_log_confirmed_lsn", rl))
	wantValue(t, text, "reliable_outbox_log_reading", 1, 1, rl)
	wantValue(t, text, "reliable_outbox_log_state", 1, 1, rl, `state="reading"`)
	wantValue(t, text, "reliable_outbox_log_rows_total", float64(before.LogRows), float64(after.LogRows), rl)
	wantValue(t, text, "reliable_outbox_log_pending", 0, 0, rl)
	wantValue(t, text, "reliable_outbox_log_fallbacks_total", 0, 0, rl)
	wantValue(t, text, "reliable_outbox_log_confirmed_lsn", float64(before.LogConfirmed), float64(after.LogConfirmed), rl)
	wantValue(t, text, "reliable_outbox_slot_exists", 1, 1, sl)
	wantValue(t, text, "reliable_outbox_slot_lost", 0, 0, sl)
	wantValue(t, text, "reliable_outbox_slot_active", 1, 1, sl)
	if sample(text, "reliable_outbox_slot_retained_bytes", sl) == "" || sample(text, "reliable_outbox_slot_lag_bytes", sl) == "" {
		t.Errorf("no byte gauges of a slot being read:\n%s", grep(text, "reliable_outbox_slot"))
	}

	// The slot dropped under the relay: it falls back to polling.
	waitUntil(t, 20*time.Second, "slot dropped", func() bool {
		_, _ = pool.Exec(ctx, `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1 AND active`, slot)
		return outbox.DropSlot(ctx, pool, slot) == nil
	})
	waitUntil(t, 20*time.Second, "the relay polls: slot missing", func() bool { return relay.Stats().LogState == "slot missing" })
	s := relay.Stats()
	text = b.scrape(t)
	t.Logf("fallback: Stats.LogFallbacks %d, LogState %q; scraped fallbacks %s", s.LogFallbacks, s.LogState, sample(text, "reliable_outbox_log_fallbacks_total", rl))
	wantValue(t, text, "reliable_outbox_log_reading", 0, 0, rl)
	wantValue(t, text, "reliable_outbox_log_state", 1, 1, rl, `state="slot missing"`)
	if got := sample(text, "reliable_outbox_log_state", rl, `state="reading"`); got != "" {
		t.Errorf("state reading still reported (%s) after the fallback", got)
	}
	// Ending the walsender is an error fallback, then the slot is missing.
	if s.LogFallbacks == 0 {
		t.Fatalf("Stats.LogFallbacks = 0 after the slot was dropped")
	}
	wantValue(t, text, "reliable_outbox_log_fallbacks_total", float64(s.LogFallbacks), float64(s.LogFallbacks), rl)
	wantValue(t, text, "reliable_outbox_slot_exists", 0, 0, sl)
	wantValue(t, text, "reliable_outbox_slot_lost", 0, 0, sl)
	if got := grep(text, "reliable_outbox_slot_retained_bytes{"); got != "" {
		t.Errorf("byte gauges of a missing slot: %s", got)
	}

	// An idle slot: the gauges carry SlotStatus's figures.
	stopRelay()
	if err := outbox.CreateSlot(ctx, pool, slot); err != nil {
		t.Fatal(err)
	}
	first, err := outbox.SlotStatus(ctx, pool, slot)
	if err != nil {
		t.Fatal(err)
	}
	text = b.scrape(t)
	last, err := outbox.SlotStatus(ctx, pool, slot)
	if err != nil {
		t.Fatal(err)
	}
	if !first.Exists || first.Active || first.RestartLSN != last.RestartLSN || first.ConfirmedFlushLSN != last.ConfirmedFlushLSN {
		t.Fatalf("the idle slot moved or is read: %+v then %+v", first, last)
	}
	t.Logf("SlotStatus before the scrape: retained %d, lag %d, safe %d; after: %d, %d, %d; scraped: %s, %s, %s",
		first.RetainedBytes, first.LagBytes, first.SafeWALBytes, last.RetainedBytes, last.LagBytes, last.SafeWALBytes,
		sample(text, "reliable_outbox_slot_retained_bytes", sl), sample(text, "reliable_outbox_slot_lag_bytes", sl),
		sample(text, "reliable_outbox_slot_safe_wal_bytes", sl))
	wantValue(t, text, "reliable_outbox_slot_exists", 1, 1, sl)
	wantValue(t, text, "reliable_outbox_slot_lost", 0, 0, sl)
	wantValue(t, text, "reliable_outbox_slot_active", 0, 0, sl)
	wantValue(t, text, "reliable_outbox_slot_retained_bytes", float64(first.RetainedBytes), float64(last.RetainedBytes), sl)
	wantValue(t, text, "reliable_outbox_slot_lag_bytes", float64(first.LagBytes), float64(last.LagBytes), sl)
	if first.SafeWALBytes < 0 {
		wantValue(t, text, "reliable_outbox_slot_safe_wal_bytes", -1, -1, sl)
	} else { // shrinks as WAL is written
		wantValue(t, text, "reliable_outbox_slot_safe_wal_bytes", float64(last.SafeWALBytes), float64(first.SafeWALBytes), sl)
	}
	if got := sample(text, "reliable_observe_errors_total"); got != "" {
		t.Errorf("a watched source failed: %s", grep(text, "reliable_observe_errors_total"))
	}
}

// wantValue checks that the sample of name with labels is within [lo, hi].
func wantValue(t *testing.T, text, name string, lo, hi float64, labels ...string) {
	t.Helper()
	raw := sample(text, name, labels...)
	v, err := strconv.ParseFloat(raw, 64)
	if err != nil {
		t.Errorf("%s%v = %q, want %v..%v", name, labels, raw, lo, hi)
		return
	}
	if v < lo || v > hi {
		t.Errorf("%s%v = %v, want %v..%v", name, labels, v, lo, hi)
	}
}

// waitUntil polls cond until it holds, failing t after timeout.
func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// dropSlot drops slot and its publication, ending a walsender still
// streaming from it.
func dropSlot(t *testing.T, pool *pgxpool.Pool, slot string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		_, _ = pool.Exec(ctx, `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1 AND active`, slot)
		err := outbox.DropSlot(ctx, pool, slot)
		if err == nil {
			return
		}
		if ctx.Err() != nil {
			t.Errorf("dropping slot %s: %v", slot, err)
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}
