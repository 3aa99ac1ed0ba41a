package main

import (
	"errors"
	"log/slog"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/internal/testenv"
	"github.com/reliable-go/reliable/outbox"
)

// The verdict is only as good as its queries: each broken promise, planted
// in the tables by hand, must be counted, and a clean ledger must pass.
func TestVerifyCountsEveryBrokenPromise(t *testing.T) {
	ctx := testenv.Context(t, 2*time.Minute)
	cfg, pool := testSchema(ctx, t, "verify", 4)
	exec := func(sql string, args ...any) {
		t.Helper()
		if _, err := pool.Exec(ctx, sql, args...); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	order := func(id, key string, seq int, kind string) {
		exec(`INSERT INTO soak_orders (msg_id, key, seq, poison, oversize) VALUES ($1, $2, $3, $4, $5)`,
			id, key, seq, kind == "poison", kind == "oversize")
	}
	deadInOutbox := func(id, key string) {
		t.Helper()
		tx, err := pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := outbox.Add(ctx, tx, &reliable.Message{ID: id, Topic: "orders", Key: key}); err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, `UPDATE reliable_outbox SET dead_at = now(), last_error = 'too large' WHERE msg_id = $1`, id); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	}
	apply := func(id, key string, seq int) {
		exec(`INSERT INTO soak_results (msg_id, key, seq, process, attempt) VALUES ($1, $2, $3, 'test', 1)`, id, key, seq)
	}

	// A clean ledger: key a applied 1, 2, 3; a poison message dead.
	order("a1", "a", 1, "")
	order("a2", "a", 2, "")
	order("a3", "a", 3, "")
	apply("a1", "a", 1)
	apply("a2", "a", 2)
	apply("a3", "a", 3)
	order("p1", "poison-1", 1, "poison")
	order("o1", "oversize-1", 1, "oversize")
	deadInOutbox("o1", "oversize-1")
	table, err := newRetryTable(pool, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := table.DeadLetter(ctx, &reliable.Message{ID: "p1", Topic: "orders", Key: "poison-1"}, reliable.Permanent(errPoison)); err != nil {
		t.Fatal(err)
	}
	v, err := verify(ctx, pool, cfg.Group, rules{})
	if err != nil {
		t.Fatal(err)
	}
	if !v.OK() || v.Orders != 5 || v.AppliedUnique != 3 || v.DeadExpected != 1 || v.OutboxDeadExpected != 1 {
		t.Fatalf("clean ledger: %+v, problems %v", v, v.Problems())
	}

	// Now break every promise once.
	order("b1", "b", 1, "")
	order("b2", "b", 2, "")
	apply("b2", "b", 2) // L09: "paid" before "placed"
	apply("b1", "b", 1)
	order("c1", "c", 1, "") // lost
	apply("a2", "a", 2)     // applied twice (L20)
	apply("x1", "x", 1)     // never produced
	order("d1", "d", 1, "")
	if err := table.DeadLetter(ctx, &reliable.Message{ID: "d1", Topic: "orders", Key: "d"}, errors.New("gave up")); err != nil {
		t.Fatal(err)
	}
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := outbox.Add(ctx, tx, &reliable.Message{Topic: "orders", Key: "e"}); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	order("f1", "f", 1, "")
	deadInOutbox("f1", "f") // an innocent row the relay gave up on

	v, err = verify(ctx, pool, cfg.Group, rules{})
	if err != nil {
		t.Fatal(err)
	}
	want := Verdict{
		Orders: 10, Poison: 1, Oversize: 1, Applied: 7, AppliedUnique: 6,
		Lost: 1, AppliedTwice: 1, Repeats: 1, Profile: profileTuned, OutOfOrder: 1, Phantom: 1,
		DeadExpected: 1, DeadUnexpected: 1, OutboxPending: 1, OutboxDeadExpected: 1, OutboxDead: 1,
	}
	got := v
	got.Gaps, got.Samples = 0, nil
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("verdict\n got %+v\nwant %+v", got, want)
	}
	// Gaps: b2 first (after nothing), then b1 after b2. The repeat of a2 is
	// not an order problem but a duplicate.
	if v.Gaps != 2 {
		t.Errorf("gaps = %d, want 2", v.Gaps)
	}
	if v.OK() {
		t.Error("a broken ledger passed")
	}
	joined := strings.Join(v.Samples, "\n")
	for _, s := range []string{"lost c1", "applied 2x a2", "key b seq 2 applied after seq", "dead not poison d1", "outbox pending", "outbox dead f1"} {
		if !strings.Contains(joined, s) {
			t.Errorf("samples lack %q:\n%s", s, joined)
		}
	}
}

// Which repeats fail depends on the profile: all of them with the dedupe
// record in the handler's transaction (tuned), none without a dedupe store
// (zero), and with Redis dedupe beside an upsert (quick start) only those
// whose first application was not followed within killWindow by a kill -9
// of the applying process.
func TestVerifyRepeatRulesByProfile(t *testing.T) {
	ctx := testenv.Context(t, 2*time.Minute)
	cfg, pool := testSchema(ctx, t, "repeats", 4)
	exec := func(sql string, args ...any) {
		t.Helper()
		if _, err := pool.Exec(ctx, sql, args...); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	for _, id := range []string{"a1", "b1", "c1"} {
		exec(`INSERT INTO soak_orders (msg_id, key, seq) VALUES ($1, $2, 1)`, id, id[:1])
	}
	apply := func(id string, pid int) {
		exec(`INSERT INTO soak_results (msg_id, key, seq, process, pid, attempt) VALUES ($1, $2, 1, 'test', $3, 1)`, id, id[:1], pid)
	}
	apply("a1", 100) // pid 100 is killed right after: its dedupe record may be missing
	apply("b1", 200) // pid 200 is never killed
	apply("c1", 300) // pid 300 is killed, but long after
	var now time.Time
	if err := pool.QueryRow(ctx, `SELECT clock_timestamp()`).Scan(&now); err != nil {
		t.Fatal(err)
	}
	apply("a1", 101)
	apply("b1", 201)
	apply("c1", 301)
	kills := []Kill{{Name: "consumer-1", PID: 100, At: now.Add(time.Second)}, {Name: "consumer-3", PID: 300, At: now.Add(time.Minute)}}

	for _, tc := range []struct {
		profile      string
		appliedTwice int64
	}{{profileTuned, 3}, {profileQuickstart, 2}, {profileZero, 0}} {
		v, err := verify(ctx, pool, cfg.Group, rules{profile: tc.profile, kills: kills})
		if err != nil {
			t.Fatal(err)
		}
		if v.Repeats != 3 || v.RepeatsAfterKill != 1 || v.AppliedTwice != tc.appliedTwice || v.OK() != (tc.appliedTwice == 0) {
			t.Errorf("%s: repeats %d (want 3), after kill %d (want 1), applied twice %d (want %d), ok %v",
				tc.profile, v.Repeats, v.RepeatsAfterKill, v.AppliedTwice, tc.appliedTwice, v.OK())
		}
		if len(v.Samples) == 0 {
			t.Errorf("%s: no samples name the repeated messages", tc.profile)
		}
	}
}
