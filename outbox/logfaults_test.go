package outbox_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/reliable-go/reliable/internal/testenv"
	"github.com/reliable-go/reliable/outbox"
	"github.com/reliable-go/reliable/reliabletest"
)

// Two relays on one slot: one reads the log, the other stands by (polling,
// which is safe beside it: leases). kill -9 of the reader: the standby
// reads the log within a few slot checks; every message arrives, in commit
// order per key, duplicates only.
func TestLogRelayStandbyTakesOverTheSlotOnKill(t *testing.T) {
	db := newTestDB(t, 16) // not parallel: t.Setenv
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	slot := logSlot(t, db)
	if err := outbox.CreateSlot(ctx, db.pool, slot); err != nil {
		t.Fatal(err)
	}
	lw := newLedger(t, db, 20)
	file := filepath.Join(t.TempDir(), "broker.jsonl")

	// A short lease: the keys relay A held wait for it to run out.
	t.Setenv(childTTLEnv, "3s")
	reader := startLogChild(t, ctx, db, slot, "relay-a", "", file, 0)
	waitFor(t, 20*time.Second, "relay A reads the slot", func() bool {
		st, err := outbox.SlotStatus(ctx, db.pool, slot)
		return err == nil && st.Active
	})
	cfg := logConfig(slot)
	cfg.Instance = "relay-b"
	standby := startRelay(t, db.pool, &filePublisher{path: file}, cfg)
	waitState(t, standby, "standby")

	written := make(chan error, 1)
	go func() { written <- lw.write(ctx, 4, 6000, 3*time.Millisecond) }()
	waitFor(t, 30*time.Second, "relay A publishes", func() bool { return len(readRecords(t, file)) > 1000 })
	if err := reader.Process.Kill(); err != nil { // SIGKILL
		t.Fatal(err)
	}
	waitKilled(t, reader)
	killedAt := time.Now()
	waitState(t, standby, "reading")
	took := time.Since(killedAt)
	if len(written) > 0 {
		t.Fatal("the writers finished before the standby took over")
	}
	if err := <-written; err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, "all rows relayed", func() bool { return db.count(t, `SELECT count(*) FROM reliable_outbox`) == 0 })
	recs := readRecords(t, file)
	got := make([]ledgerMsg, len(recs))
	for i, rc := range recs {
		got[i] = ledgerMsg{rc.ID, rc.Key}
	}
	total, dups := lw.check(t, got)
	s := standby.Stats()
	if s.LogRows == 0 {
		t.Fatal("the standby never took rows from the log")
	}
	t.Logf("standby reads the slot %s after the kill; %d messages in commit order, %d duplicates, 0 lost; standby took %d rows from the log",
		took.Round(time.Millisecond), total, dups, s.LogRows)
}

// Every PostgreSQL connection of the relay (pool and replication stream)
// is cut for two seconds while writers commit, as a database restart or
// failover looks from the client: the relay polls meanwhile, reads the log
// again after, loses nothing and keeps order. (internal/testenv has no
// PostgreSQL restart helper; a real restart would stop every test on this
// machine.)
func TestLogRelayDatabaseConnectionsCutResumesTheLog(t *testing.T) {
	t.Parallel()
	db := newTestDB(t, 16)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	slot := logSlot(t, db)
	if err := outbox.CreateSlot(ctx, db.pool, slot); err != nil {
		t.Fatal(err)
	}
	lw := newLedger(t, db, 20)
	broker := reliabletest.NewBroker(reliabletest.BrokerOptions{Partitions: 4})
	broker.CreateTopic("orders")

	pcfg, err := pgxpool.ParseConfig(db.dsn)
	if err != nil {
		t.Fatal(err)
	}
	proxy := testenv.NewFaultProxy(t, fmt.Sprintf("%s:%d", pcfg.ConnConfig.Host, pcfg.ConnConfig.Port))
	pcfg.ConnConfig.Host, pcfg.ConnConfig.Port = proxy.Host(), proxy.Port()
	pcfg.ConnConfig.RuntimeParams["search_path"] = db.schema
	pcfg.MaxConns = 12
	relayPool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(relayPool.Close)
	r := startRelay(t, relayPool, broker.Publisher(), logConfig(slot))
	waitState(t, r, "reading")

	written := make(chan error, 1)
	go func() { written <- lw.write(ctx, 4, 3000, 3*time.Millisecond) }()
	waitFor(t, 20*time.Second, "rows from the log", func() bool { return r.Stats().LogRows > 200 })
	proxy.Down()
	waitFor(t, 20*time.Second, "the relay notices", func() bool { return r.Stats().LogState != "reading" })
	time.Sleep(2 * time.Second) // the outage
	proxy.Up()
	before := r.Stats().LogRows
	waitState(t, r, "reading")
	if err := <-written; err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, "all rows relayed", func() bool { return db.count(t, `SELECT count(*) FROM reliable_outbox`) == 0 })
	total, dups := lw.check(t, brokerMsgs(broker.Messages("orders")))
	s := r.Stats()
	if s.LogRows == before {
		t.Fatal("no row came from the log after the outage")
	}
	t.Logf("%d messages in commit order, %d duplicates, 0 lost; %d rows from the log before the cut, %d after; fallbacks %d",
		total, dups, before, s.LogRows-before, s.LogFallbacks)
}
