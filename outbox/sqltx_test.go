package outbox_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/outbox"
	"github.com/reliable-go/reliable/reliabletest"
)

// sqlDB opens a database/sql handle (pgx's stdlib driver) on the test
// schema. simple selects the simple query protocol, as behind PgBouncer in
// transaction mode, where pgx interpolates the arguments itself.
func (db *testDB) sqlDB(t testing.TB, simple bool) *sql.DB {
	t.Helper()
	cfg, err := pgx.ParseConfig(db.dsn)
	if err != nil {
		t.Fatal(err)
	}
	cfg.RuntimeParams["search_path"] = db.schema
	if simple {
		cfg.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	}
	sdb := stdlib.OpenDB(*cfg)
	sdb.SetMaxOpenConns(8)
	t.Cleanup(func() { _ = sdb.Close() })
	return sdb
}

// addSQLTx adds msgs through AddSQL in one committed database/sql
// transaction.
func addSQLTx(ctx context.Context, sdb *sql.DB, msgs ...*reliable.Message) error {
	tx, err := sdb.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := outbox.AddSQL(ctx, tx, msgs...); err != nil {
		_ = tx.Rollback()
		return err
	}
	return tx.Commit()
}

// sqlOutboxRows returns every stored column of the outbox rows but the row ID
// and creation time, in row ID order, as PostgreSQL renders them.
func (db *testDB) sqlOutboxRows(t testing.TB) []string {
	t.Helper()
	rows, err := db.pool.Query(context.Background(), `SELECT row(lane, msg_id, topic, key, type, headers, payload, event_time)::text
		FROM reliable_outbox ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// parityBatches are Add calls whose every stored column an array encoding
// could get wrong: foreign bytes (NUL, invalid UTF-8, 3 KB keys, the
// store's own marker), quotes, backslashes, braces, commas and the word
// NULL as values, nil and empty payloads and headers, and times at the
// edges of the two encodings (sub-microsecond, before 1970, BC years, year
// 12000).
func parityBatches() [][]*reliable.Message {
	at := time.Date(2026, 12, 5, 6, 30, 0, 123456789, time.UTC)
	var foreign []*reliable.Message
	for _, key := range foreignKeys() {
		a, b := foreignMsg(key, "1"), foreignMsg(key, "2")
		foreign = append(foreign, a, b)
	}
	keyless := foreignMsg("", "keyless")
	keyless.ID = strings.Repeat("\xff", 2000)
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	odd := []*reliable.Message{
		{ID: `q"uote`, Topic: `to,pic`, Key: `NULL`, Type: `{a,b}`, Payload: nil},
		{ID: `back\slash`, Topic: "orders", Key: `k"\{}`, Type: `NULL`, Payload: []byte{},
			Headers: map[string]string{`h"1`: `v\1`, "NULL": ""}},
		{ID: "all-bytes", Topic: "orders", Key: "o-1", Payload: all, Headers: map[string]string{}},
		{ID: "ünïcode ✓", Topic: "orders", Key: "ключ", Type: "тип", Payload: []byte("x")},
	}
	times := []time.Time{
		at,
		time.Date(1969, 12, 31, 23, 59, 59, 999999500, time.UTC), // before the epoch, sub-µs
		time.Date(2026, 6, 1, 12, 0, 0, 999, time.FixedZone("x", 5*3600+1800)),
		time.Date(0, 3, 1, 0, 0, 0, 1500, time.UTC), // 1 BC
		time.Date(-100, 1, 1, 0, 0, 0, 0, time.UTC), // 101 BC
		time.Date(12000, 1, 1, 0, 0, 0, 42000, time.UTC),
	}
	var timed []*reliable.Message
	for i, tm := range times {
		timed = append(timed, &reliable.Message{ID: "time-" + string(rune('a'+i)), Topic: "orders", Key: "t", Time: tm})
	}
	batches := [][]*reliable.Message{foreign, {keyless}, odd, timed, sqlRandomMessages(200)}
	for _, b := range batches {
		for _, m := range b {
			if m.Time.IsZero() {
				m.Time = at
			}
		}
	}
	return batches
}

// sqlDiffAt is a around its first difference with b.
func sqlDiffAt(a, b string) string {
	i := 0
	for i < len(a) && i < len(b) && a[i] == b[i] {
		i++
	}
	return "..." + a[max(0, i-30):min(len(a), i+20)] + "..."
}

// sqlRandomMessages are n messages of random bytes in every field (a quarter
// of them keyless) and random times between 4000 BC and AD 100000, from a
// fixed seed.
func sqlRandomMessages(n int) []*reliable.Message {
	rng := rand.New(rand.NewPCG(17, 3))
	str := func(max int) string {
		b := make([]byte, rng.IntN(max+1))
		for i := range b {
			b[i] = byte(rng.IntN(256))
		}
		return string(b)
	}
	msgs := make([]*reliable.Message, n)
	for i := range msgs {
		m := &reliable.Message{ID: fmt.Sprint(i, str(20)), Topic: "t" + str(8), Type: str(8), Payload: []byte(str(64))}
		if rng.IntN(4) > 0 {
			m.Key = "k" + str(12)
		}
		for range rng.IntN(3) {
			if m.Headers == nil {
				m.Headers = map[string]string{}
			}
			m.Headers["h"+str(6)] = str(10)
		}
		sec := rng.Int64N(int64(104000*365.25*86400)) - int64(5970*365.25*86400) // seconds since 1970
		m.Time = time.Unix(sec, rng.Int64N(1e9)).UTC()
		msgs[i] = m
	}
	return msgs
}

func sqlClones(msgs []*reliable.Message) []*reliable.Message {
	out := make([]*reliable.Message, len(msgs))
	for i, m := range msgs {
		out[i] = m.Clone()
	}
	return out
}

// Issue 17 item 3: AddSQL stores exactly the rows Add stores, column for
// column, on pgx's stdlib driver with the extended and the simple query
// protocol: same validation, same text forms (internal/storetext), same
// lanes, same order within a call, same times (L03, L08).
func TestAddSQLStoresTheRowsAddStores(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	viaPgx, viaSQL, viaSimple := newTestDB(t, 4), newTestDB(t, 4), newTestDB(t, 4)
	sqlExt, sqlSimple := viaSQL.sqlDB(t, false), viaSimple.sqlDB(t, true)
	for _, b := range parityBatches() {
		if err := addTx(ctx, viaPgx.pool, sqlClones(b)...); err != nil {
			t.Fatalf("Add: %v", err)
		}
		if err := addSQLTx(ctx, sqlExt, sqlClones(b)...); err != nil {
			t.Fatalf("AddSQL: %v", err)
		}
		if err := addSQLTx(ctx, sqlSimple, sqlClones(b)...); err != nil {
			t.Fatalf("AddSQL, simple protocol: %v", err)
		}
	}
	want := viaPgx.sqlOutboxRows(t)
	for name, db := range map[string]*testDB{"extended": viaSQL, "simple": viaSimple} {
		got := db.sqlOutboxRows(t)
		if len(got) != len(want) {
			t.Fatalf("%s: AddSQL stored %d rows, Add %d", name, len(got), len(want))
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("%s: row %d differs\nAddSQL: %s\nAdd:    %s", name, i, sqlDiffAt(got[i], want[i]), sqlDiffAt(want[i], got[i]))
			}
		}
	}
	t.Logf("%d rows identical column for column through Add, AddSQL and AddSQL on the simple protocol", len(want))

	// Like Add, AddSQL sets a missing ID and time in place.
	m := msg("orders", "o-9", "x")
	before := time.Now()
	if err := addSQLTx(ctx, sqlExt, m); err != nil {
		t.Fatal(err)
	}
	if m.ID == "" || m.Time.Before(before) {
		t.Fatalf("AddSQL left ID %q and time %s", m.ID, m.Time)
	}
	if n := viaSQL.count(t, `SELECT count(*) FROM reliable_outbox WHERE msg_id = $1`, m.ID); n != 1 {
		t.Fatalf("%d rows with the ID AddSQL set, want 1", n)
	}
}

// Issue 17 item 3 (issue 15 item 7): AddSQL refuses what Add refuses, with
// the same errors, and writes nothing: a nil message, two messages with one
// ID, and a time PostgreSQL cannot hold (permanent, naming the SQLSTATE).
func TestAddSQLRefusesWhatAddRefuses(t *testing.T) {
	t.Parallel()
	db := newTestDB(t, 4)
	sdb := db.sqlDB(t, false)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, b := msg("orders", "order-1", "placed"), msg("orders", "order-2", "placed")
	a.ID, b.ID = "same", "same"
	ancient := msg("orders", "order-3", "x")
	ancient.Time = time.Date(-10000, 1, 1, 0, 0, 0, 0, time.UTC)
	for name, batch := range map[string][]*reliable.Message{
		"nil":            {msg("orders", "order-0", "ok"), nil},
		"same ID":        {msg("orders", "order-0", "ok"), a, b},
		"before 4713 BC": {msg("orders", "order-0", "ok"), ancient},
	} {
		errPgx := addTx(ctx, db.pool, sqlClonesOrNil(batch)...)
		errSQL := addSQLTx(ctx, sdb, sqlClonesOrNil(batch)...)
		if errSQL == nil || !reliable.IsPermanent(errSQL) {
			t.Fatalf("%s: AddSQL = %v, want a permanent error", name, errSQL)
		}
		if errors.Is(errPgx, reliable.ErrInvalidMessage) != errors.Is(errSQL, reliable.ErrInvalidMessage) ||
			strings.Contains(errPgx.Error(), "cannot hold") != strings.Contains(errSQL.Error(), "cannot hold") ||
			strings.Contains(errPgx.Error(), "SQLSTATE 22008") != strings.Contains(errSQL.Error(), "SQLSTATE 22008") {
			t.Fatalf("%s: AddSQL = %v\nAdd = %v", name, errSQL, errPgx)
		}
		t.Logf("%s: AddSQL: %v", name, errSQL)
	}
	if n := db.count(t, `SELECT count(*) FROM reliable_outbox`); n != 0 {
		t.Fatalf("%d rows written, want none", n)
	}
	if err := outbox.AddSQL(ctx, nil, msg("orders", "o", "x")); err == nil {
		t.Fatal("AddSQL on a nil tx succeeded")
	}
}

func sqlClonesOrNil(msgs []*reliable.Message) []*reliable.Message {
	out := make([]*reliable.Message, len(msgs))
	for i, m := range msgs {
		if m != nil {
			out[i] = m.Clone()
		}
	}
	return out
}

// Issue 17 item 3 (L08): AddSQL takes the same key lock as Add, so writers
// of both kinds on one key serialise: T1 (database/sql) adds "placed" and
// stays open; T2 (pgx) on the same key waits in Add until T1 commits, while
// another key goes through; the relay publishes placed before paid.
func TestAddSQLLocksTheKeyAsAddDoes(t *testing.T) {
	t.Parallel()
	db := newTestDB(t, 8)
	sdb := db.sqlDB(t, false)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	broker := reliabletest.NewBroker(reliabletest.BrokerOptions{})
	broker.CreateTopic("orders")
	startRelay(t, db.pool, broker.Publisher(), testConfig())

	placed, paid := msg("orders", "o-7", "placed"), msg("orders", "o-7", "paid")
	t1, err := sdb.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = t1.Rollback() }()
	if err := outbox.AddSQL(ctx, t1, placed); err != nil {
		t.Fatal(err)
	}
	t2done := make(chan error, 1)
	go func() { t2done <- addTx(ctx, db.pool, paid) }()
	waitFor(t, 5*time.Second, "T2 waiting on T1's key lock", func() bool {
		return db.count(t, `SELECT count(*) FROM pg_stat_activity
			WHERE wait_event_type = 'Lock' AND query LIKE '%reliable_outbox_keys%'`) > 0
	})
	select {
	case err := <-t2done:
		t.Fatalf("T2 committed while T1 held the key: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	other := msg("orders", "o-8", "placed")
	if err := addSQLTx(ctx, sdb, other); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "other key relayed", func() bool { return len(broker.Messages("orders")) == 1 })
	if got := broker.Messages("orders")[0]; got.ID != other.ID {
		t.Fatalf("published %s before T1 committed", got)
	}
	if err := t1.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := <-t2done; err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "o-7 relayed", func() bool {
		perKey, _ := firstSeen(broker.Messages("orders"))
		return len(perKey["o-7"]) == 2
	})
	if got, _ := firstSeen(broker.Messages("orders")); got["o-7"][0] != placed.ID || got["o-7"][1] != paid.ID {
		t.Fatalf("o-7 published as %v, want placed, paid", got["o-7"])
	}
}

// Issue 17 item 3: the log-reading relay (ModeLog) reads AddSQL's rows
// from the log like Add's: 4 database/sql writers, 960 messages over 8
// keys, each key's messages published in commit order (the writers'
// ledger), and rows joined lanes from the log.
func TestLogRelayReadsAddSQLRows(t *testing.T) {
	t.Parallel()
	db := newTestDB(t, 12)
	sdb := db.sqlDB(t, false)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	broker := reliabletest.NewBroker(reliabletest.BrokerOptions{Partitions: 4})
	broker.CreateTopic("orders")
	r := startRelay(t, db.pool, broker.Publisher(), logConfig(logSlot(t, db)))
	waitState(t, r, "reading")
	w := startSQLWriter(t, ctx, sdb, "orders", 4, 120, 8)
	w.Wait(t)
	want, total := db.sqlLedger(t)
	waitFor(t, 60*time.Second, "all rows relayed", func() bool { return db.count(t, `SELECT count(*) FROM reliable_outbox`) == 0 })
	got, dups := firstSeen(broker.Messages("orders"))
	for key, ids := range want {
		if fmt.Sprint(got[key]) != fmt.Sprint(ids) {
			t.Fatalf("key %s published as %v, want %v", key, got[key], ids)
		}
	}
	s := r.Stats()
	if s.LogRows == 0 {
		t.Fatalf("no row came from the log: %+v", s)
	}
	t.Logf("%d messages in commit order per key, %d repeats; %d joined lanes from the log (state %s, %d fallbacks)", total, dups, s.LogRows, s.LogState, s.LogFallbacks)
}
