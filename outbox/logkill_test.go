package outbox_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/outbox"
)

// Environment of the log-reading child relay.
const (
	childSlotEnv  = "OUTBOX_TEST_RELAY_SLOT"
	childAfterEnv = "OUTBOX_TEST_RELAY_KILL_AFTER"
	childIDEnv    = "OUTBOX_TEST_RELAY_ID"
	childTTLEnv   = "OUTBOX_TEST_RELAY_TTL"
)

// runKilledLogRelay runs a relay in ModeLog that SIGKILLs its own process
// once the broker confirmed childAfterEnv messages (0: never): mid-stream,
// with rows in flight and confirmed rows not yet deleted.
func runKilledLogRelay() int {
	ctx := context.Background()
	cfg, err := pgxpool.ParseConfig(os.Getenv(childDSNEnv))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	cfg.ConnConfig.RuntimeParams["search_path"] = os.Getenv(childSchemaEnv)
	cfg.MaxConns = 8
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	inner, err := childPublisher(os.Getenv(childBrokerEnv), os.Getenv(childFileEnv))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	after, _ := strconv.Atoi(os.Getenv(childAfterEnv))
	pub := &killAfterN{Publisher: inner, after: int64(after)}
	rcfg := logConfig(os.Getenv(childSlotEnv))
	rcfg.Instance = os.Getenv(childIDEnv)
	rcfg.PublishTimeout = 5 * time.Second
	rcfg.LeaseTTL = 15 * time.Second
	if d, err := time.ParseDuration(os.Getenv(childTTLEnv)); err == nil {
		rcfg.LeaseTTL, rcfg.PublishTimeout = d, d/3
	}
	r, err := outbox.NewRelay(pool, pub, rcfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	// Die mid-stream, once the slot was confirmed at least once: a restart
	// must resume from a position, not from the slot's start.
	pub.ready = func() bool { return r.Stats().LogConfirmed > 0 }
	_ = r.Run(ctx)
	return 3
}

// killAfterN kills the process once n messages were confirmed in all and
// ready says so.
type killAfterN struct {
	reliable.Publisher
	after int64
	n     atomic.Int64
	ready func() bool
}

func (p *killAfterN) Publish(ctx context.Context, msgs ...*reliable.Message) error {
	// One slow key: its rows stay pending for a while as the log moves on,
	// so a slot confirmed past pending rows shows in the test.
	if slices.ContainsFunc(msgs, func(m *reliable.Message) bool { return m.Key == "order-0" }) {
		time.Sleep(200 * time.Millisecond)
	}
	err := p.Publisher.Publish(ctx, msgs...)
	if err == nil && p.after > 0 && p.n.Add(int64(len(msgs))) >= p.after && (p.ready == nil || p.ready()) {
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL) // kill -9: no deferred code, no mark
		select {}
	}
	return err
}

// startLogChild starts the log-reading child relay; it publishes to the
// broker kind at endpoint (see childPublisher) and dies by SIGKILL after
// `after` confirms (0: runs until killed).
func startLogChild(t *testing.T, ctx context.Context, db *testDB, slot, id, broker, endpoint string, after int) *exec.Cmd {
	t.Helper()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=log-kill-after-n", childDSNEnv+"="+db.dsn,
		childSchemaEnv+"="+db.schema, childFileEnv+"="+endpoint, childBrokerEnv+"="+broker,
		childSlotEnv+"="+slot, childIDEnv+"="+id, childAfterEnv+"="+strconv.Itoa(after))
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return cmd
}

// waitKilled waits for cmd to die by SIGKILL.
func waitKilled(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	err := cmd.Wait()
	var exitErr *exec.ExitError
	if !errors.As(err, &exitErr) || exitErr.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("child relay did not die by SIGKILL: %v", err)
	}
}

// peekSlotIDs returns the IDs of the outbox rows inserted after the slot's
// confirmed position, read without consuming them.
func peekSlotIDs(t *testing.T, db *testDB, slot string) map[int64]bool {
	t.Helper()
	ctx := context.Background()
	var changes [][]byte
	var lastErr error
	defer func() {
		if t.Failed() {
			t.Logf("peeking the slot: %v", lastErr)
		}
	}()
	waitFor(t, 20*time.Second, "the dead relay's walsender to end", func() bool {
		rows, err := db.pool.Query(ctx, `SELECT data FROM pg_logical_slot_peek_binary_changes($1::name, NULL, NULL,
			'proto_version', '1', 'publication_names', $2::text)`, slot, slot)
		if err == nil {
			changes, err = pgx.CollectRows(rows, pgx.RowTo[[]byte])
		}
		lastErr = err
		return err == nil
	})
	ids := map[int64]bool{}
	for _, c := range changes {
		m, err := pglogrepl.Parse(c)
		if err != nil {
			t.Fatal(err)
		}
		if ins, ok := m.(*pglogrepl.InsertMessage); ok {
			id, err := strconv.ParseInt(string(ins.Tuple.Columns[0].Data), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			ids[id] = true
		}
	}
	return ids
}

// kill -9 of a log-reading relay mid-stream, while writers commit: a new
// relay resumes from the slot's confirmed position; the consumer sees
// every message, in commit order per key, with duplicates only (L03, L20).
func TestLogRelayKilledMidStreamResumesFromTheSlot(t *testing.T) {
	t.Parallel()
	db := newTestDB(t, 16)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	slot := logSlot(t, db)
	if err := outbox.CreateSlot(ctx, db.pool, slot); err != nil {
		t.Fatal(err)
	}
	st0, err := outbox.SlotStatus(ctx, db.pool, slot)
	if err != nil {
		t.Fatal(err)
	}
	lw := newLedger(t, db, 20)
	file := filepath.Join(t.TempDir(), "broker.jsonl")

	written := make(chan error, 1)
	go func() { written <- lw.write(ctx, 8, 6000, 5*time.Millisecond) }()
	child := startLogChild(t, ctx, db, slot, "log-relay-that-dies", "", file, 1200)
	waitKilled(t, child)
	before := readRecords(t, file)
	stKill, err := outbox.SlotStatus(ctx, db.pool, slot)
	if err != nil {
		t.Fatal(err)
	}
	pendingAtKill := db.count(t, `SELECT count(*) FROM reliable_outbox`)
	// Never skips: every row still pending is ahead of the slot's confirmed
	// position, in the changes a reader gets next. (Pending first: the
	// writers go on, and the peek sees what committed before it.)
	rows, err := db.pool.Query(ctx, `SELECT id FROM reliable_outbox`)
	if err != nil {
		t.Fatal(err)
	}
	pending, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		t.Fatal(err)
	}
	ahead := peekSlotIDs(t, db, slot)
	for _, id := range pending {
		if !ahead[id] {
			cancel() // stop the writers before the test ends
			t.Fatalf("row %d is pending but the slot was confirmed past its insert", id)
		}
	}
	if len(written) > 0 {
		t.Fatal("the writers finished before the kill: the test did not kill the relay mid-stream")
	}

	// Restarted with its ID, as a pod with a stable name: it takes the dead
	// relay's leases over at once.
	cfg := logConfig(slot)
	cfg.Instance = "log-relay-that-dies"
	r := startRelay(t, db.pool, &filePublisher{path: file}, cfg)
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
	s := r.Stats()
	if s.LogState != "reading" || s.LogRows == 0 {
		t.Fatalf("the new relay did not read the log: state %q, %d rows from it", s.LogState, s.LogRows)
	}
	if !lsnAfter(stKill.ConfirmedFlushLSN, st0.ConfirmedFlushLSN) {
		t.Fatalf("the killed relay never confirmed the slot (%s, created at %s)", stKill.ConfirmedFlushLSN, st0.ConfirmedFlushLSN)
	}
	waitFor(t, 10*time.Second, "slot confirmed past the kill", func() bool {
		st, err := outbox.SlotStatus(ctx, db.pool, slot)
		return err == nil && lsnAfter(st.ConfirmedFlushLSN, stKill.ConfirmedFlushLSN)
	})
	t.Logf("child confirmed %d messages, died with %d rows pending, all ahead of the slot (at %s, %d inserts ahead); %d messages in commit order, %d duplicates, 0 lost; the new relay took %d rows from the log",
		len(before), pendingAtKill, stKill.ConfirmedFlushLSN, len(ahead), total, dups, s.LogRows)
}
