package main

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/internal/testenv"
	"github.com/reliable-go/reliable/outbox"
	"github.com/reliable-go/reliable/reliabletest"
	"github.com/reliable-go/reliable/retry"
)

// pgSchema creates a unique schema, dropped when t ends, and returns the DSN,
// the schema and a pool whose search_path is that schema.
func pgSchema(t *testing.T) (dsn, schema string, pool *pgxpool.Pool) {
	t.Helper()
	dsn = testenv.PostgresDSN(t)
	schema = testenv.UniqueName(t, "ctl")
	ctx := testenv.Context(t, 30*time.Second)
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if c, err := pgx.Connect(ctx, dsn); err == nil {
			_, _ = c.Exec(ctx, "DROP SCHEMA "+schema+" CASCADE")
			_ = c.Close(ctx)
		}
	})
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.RuntimeParams["search_path"] = schema
	cfg.MaxConns = 6
	pool, err = pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return dsn, schema, pool
}

// addOutbox writes msgs to the outbox in one transaction.
func addOutbox(t *testing.T, pool *pgxpool.Pool, msgs ...*reliable.Message) {
	t.Helper()
	ctx := testenv.Context(t, 10*time.Second)
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { return outbox.Add(ctx, tx, msgs...) })
	if err != nil {
		t.Fatal(err)
	}
}

// L18: the operator sees the outbox's backlog and dead rows, and retries or
// discards a dead row.
func TestOutboxCommands(t *testing.T) {
	dsn, schema, pool := pgSchema(t)
	ctx := testenv.Context(t, 60*time.Second)
	if err := outbox.Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{envPostgresDSN: dsn}

	// Two rows to a topic the broker does not have: permanent errors, dead
	// at once.
	addOutbox(t, pool, &reliable.Message{Topic: "missing", Key: "k1"}, &reliable.Message{Topic: "missing", Key: "k2"})
	broker := reliabletest.NewBroker(reliabletest.BrokerOptions{})
	relay, err := outbox.NewRelay(pool, broker.Publisher(), outbox.Config{PollInterval: 20 * time.Millisecond, Logger: quietLog})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	ran := make(chan error, 1)
	go func() { ran <- relay.Run(runCtx) }()
	for {
		st, err := outbox.ReadStatus(ctx, pool)
		if err != nil {
			t.Fatal(err)
		}
		if st.Dead == 2 {
			break
		}
		if ctx.Err() != nil {
			t.Fatal("rows did not die")
		}
		time.Sleep(20 * time.Millisecond)
	}
	stop()
	if err := <-ran; err != nil {
		t.Fatal(err)
	}
	addOutbox(t, pool, &reliable.Message{Topic: "orders", Key: "k3"}) // pending: no relay runs now

	r := cli(t, env, "outbox", "status", "--schema", schema, "--output", "json")
	r.expect(t, exitOK, "")
	var st outboxReport
	r.decode(t, &st)
	if st.Pending != 1 || st.Dead != 2 || len(st.DeadRows) != 2 || st.OldestPendingSeconds <= 0 {
		t.Fatalf("status %+v", st)
	}
	k1, k2 := st.DeadRows[0], st.DeadRows[1]
	if k1.Key != "k1" || k1.Topic != "missing" || k1.LastError == "" {
		t.Fatalf("dead row %+v", k1)
	}
	r = cli(t, env, "outbox", "status", "--schema", schema)
	r.expect(t, exitOK, "")

	cli(t, env, "outbox", "retry", "--schema", schema, "--id", itoa(k1.ID)).expect(t, exitOK, "")
	cli(t, env, "outbox", "discard", "--schema", schema, "--id", itoa(k2.ID)).expect(t, exitOK, "")
	after, err := outbox.ReadStatus(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}
	if after.Pending != 2 || after.Dead != 0 {
		t.Fatalf("after retry and discard: %+v, want 2 pending and 0 dead", after)
	}

	// Bad input changes nothing.
	cli(t, env, "outbox", "discard", "--schema", schema, "--id", itoa(k1.ID)).expect(t, exitFailure, "is not dead")
	cli(t, env, "outbox", "retry", "--schema", schema, "--id", "999999").expect(t, exitFailure, "no outbox row 999999")
	cli(t, env, "outbox", "status", "--schema", schema+"_nope").expect(t, exitFailure, "outbox tables not found in schema")
}

// L11: the operator lists a group's retry entries by key and state, looks at
// one, and retries, discards or releases.
func TestRetryCommands(t *testing.T) {
	dsn, schema, pool := pgSchema(t)
	ctx := testenv.Context(t, 60*time.Second)
	const group = "kitchen"
	table, err := retry.NewTable(pool, retry.TableConfig{Group: group, Schema: schema, Logger: quietLog})
	if err != nil {
		t.Fatal(err)
	}
	if err := table.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	msg := func(key, typ string) *reliable.Message {
		m := &reliable.Message{ID: reliable.NewID(), Topic: "orders", Key: key, Type: typ,
			Headers: map[string]string{"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}, Payload: []byte(`{"secret":"x"}`)}
		m.Delivery.Attempt = 1
		return m
	}
	if err := table.Park(ctx, msg("o-1", "order.placed"), errors.New("replica lag")); err != nil {
		t.Fatal(err)
	}
	if err := table.DeadLetter(ctx, msg("o-2", "order.paid"), reliable.Permanent(errors.New("poison"))); err != nil {
		t.Fatal(err)
	}
	if err := table.Park(ctx, msg("o-2", "order.completed"), nil); err != nil { // behind the dead one
		t.Fatal(err)
	}
	env := map[string]string{envPostgresDSN: dsn}
	base := []string{"--group", group, "--schema", schema}
	args := func(cmd string, extra ...string) []string {
		return append(append([]string{"retry", cmd}, base...), extra...)
	}

	r := cli(t, env, args("stats", "--output", "json")...)
	r.expect(t, exitOK, "")
	var stats statsView
	r.decode(t, &stats)
	if stats.Pending != 2 || stats.Dead != 1 || stats.BlockedKeys != 2 || stats.OldestEntryAgeSecs <= 0 {
		t.Fatalf("stats %+v, want 2 pending, 1 dead, 2 blocked keys", stats)
	}
	cli(t, env, args("stats")...).expect(t, exitOK, "")

	r = cli(t, env, args("list", "--output", "json")...)
	r.expect(t, exitOK, "")
	var list struct {
		Entries []entryView `json:"entries"`
	}
	r.decode(t, &list)
	if len(list.Entries) != 3 {
		t.Fatalf("%d entries, want 3", len(list.Entries))
	}
	placed, paid, completed := list.Entries[0], list.Entries[1], list.Entries[2]
	if placed.State != retry.StatePending || placed.Attempts != 1 || placed.LastError != "replica lag" ||
		paid.State != retry.StateDead || completed.Key != "o-2" {
		t.Fatalf("entries %+v", list.Entries)
	}
	if placed.Payload != "" || placed.Headers != nil {
		t.Fatal("list shows payload or header values")
	}
	r = cli(t, env, args("list", "--state", "dead", "--output", "json")...)
	r.expect(t, exitOK, "")
	r.decode(t, &list)
	if len(list.Entries) != 1 || list.Entries[0].ID != paid.ID {
		t.Fatalf("dead entries %+v", list.Entries)
	}
	cli(t, env, args("list", "--key", "o-1")...).expect(t, exitOK, "")

	r = cli(t, env, args("show", "--id", itoa(paid.ID))...)
	r.expect(t, exitOK, "")
	for _, want := range []string{"dead", "o-2", "order.paid", "poison", "traceparent"} {
		if !contains(r.stdout, want) {
			t.Errorf("show does not say %q", want)
		}
	}
	if contains(r.stdout, "secret") {
		t.Error("show printed the payload without --values")
	}
	if r := cli(t, env, args("show", "--id", itoa(paid.ID), "--values")...); !contains(r.stdout, `{"secret":"x"}`) {
		t.Error("show --values does not print the payload")
	}

	// Release the dead head of o-2: its later entry flows.
	cli(t, env, args("release", "--key", "o-2")...).expect(t, exitOK, "")
	if e, _ := table.Get(ctx, paid.ID); e.State != retry.StateReleased {
		t.Fatalf("after release the entry is %s", e.State)
	}
	cli(t, env, args("release", "--key", "o-2")...).expect(t, exitFailure, "has no dead entries")

	// Retry the released one now: pending again, in its place.
	cli(t, env, args("retry-now", "--id", itoa(paid.ID))...).expect(t, exitOK, "")
	if e, _ := table.Get(ctx, paid.ID); e.State != retry.StatePending || e.NextAttemptAt.After(time.Now().Add(time.Second)) {
		t.Fatalf("after retry-now the entry is %s due %s", e.State, e.NextAttemptAt)
	}
	cli(t, env, args("retry-now", "--key", "o-1")...).expect(t, exitOK, "")
	cli(t, env, args("retry-now", "--key", "o-9")...).expect(t, exitFailure, "has no pending or dead entries")

	cli(t, env, args("discard", "--id", itoa(placed.ID))...).expect(t, exitOK, "")
	if e, _ := table.Get(ctx, placed.ID); e.State != retry.StateDiscarded {
		t.Fatalf("after discard the entry is %s", e.State)
	}

	// Bad input.
	cli(t, env, args("show", "--id", "999999")...).expect(t, exitFailure, "no retry entry 999999")
	cli(t, env, args("discard", "--id", "999999")...).expect(t, exitFailure, "no retry entry 999999")
	cli(t, env, args("list", "--table", "no_such_table")...).expect(t, exitFailure, "retry table no_such_table not found")
	r = cli(t, env, "retry", "list", "--group", "other-group", "--schema", schema)
	r.expect(t, exitOK, "")
	if !contains(r.stdout, "(no entries)") {
		t.Errorf("another group's list is not empty:\n%s", r.stdout)
	}
}
