package outbox_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/idempotency"
	"github.com/reliable-go/reliable/outbox"
)

// Environment of the relay child process (see TestMain).
const (
	childEnv       = "OUTBOX_TEST_RELAY_CHILD"
	childDSNEnv    = "OUTBOX_TEST_RELAY_DSN"
	childSchemaEnv = "OUTBOX_TEST_RELAY_SCHEMA"
	childFileEnv   = "OUTBOX_TEST_RELAY_FILE"
	// childBrokerEnv selects the child's publisher: "kafka" (brokers in
	// childFileEnv, comma separated), "rabbitmq" (URL in childFileEnv), or
	// empty for the file publisher.
	childBrokerEnv = "OUTBOX_TEST_RELAY_BROKER"
)

func TestMain(m *testing.M) {
	switch os.Getenv(childEnv) {
	case "kill-after-confirm":
		os.Exit(runKilledRelay())
	case "log-kill-after-n":
		os.Exit(runKilledLogRelay())
	}
	os.Exit(m.Run())
}

// runKilledRelay runs a relay whose publisher SIGKILLs its own process right
// after the first confirmed Publish: after the broker has the messages and
// before the relay could delete their rows.
func runKilledRelay() int {
	ctx := context.Background()
	cfg, err := pgxpool.ParseConfig(os.Getenv(childDSNEnv))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	cfg.ConnConfig.RuntimeParams["search_path"] = os.Getenv(childSchemaEnv)
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
	pub := &killAfterConfirm{Publisher: inner}
	rcfg := testConfig()
	rcfg.Instance = "relay-that-dies"
	// Room for a broker still settling after an earlier fault test.
	rcfg.PublishTimeout = 5 * time.Second
	rcfg.LeaseTTL = 15 * time.Second
	r, err := outbox.NewRelay(pool, pub, rcfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	_ = r.Run(ctx)
	return 3 // not reached: the publisher kills the process
}

type killAfterConfirm struct{ reliable.Publisher }

// Publish kills the process once the broker confirmed any of msgs. A call
// that confirmed only some (a slow broker hit PublishTimeout) kills too:
// returning would let the relay mark the confirmed ones, and the test wants
// every row still pending after the kill.
func (p *killAfterConfirm) Publish(ctx context.Context, msgs ...*reliable.Message) error {
	err := p.Publisher.Publish(ctx, msgs...)
	var pe *reliable.PublishError
	if err != nil && (!errors.As(err, &pe) || len(pe.Failed) >= len(msgs)) {
		return err // nothing confirmed: the relay tries again
	}
	_ = syscall.Kill(os.Getpid(), syscall.SIGKILL) // kill -9: no deferred code, no mark
	select {}
}

// filePublisher is a durable broker double shared by processes: it appends
// each message as a JSON line and fsyncs before confirming.
type filePublisher struct {
	mu   sync.Mutex
	path string
}

type fileRecord struct {
	ID, Key, Topic, Payload string
}

func (p *filePublisher) Publish(_ context.Context, msgs ...*reliable.Message) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	f, err := os.OpenFile(p.path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	enc := json.NewEncoder(f)
	for _, m := range msgs {
		if err := enc.Encode(fileRecord{ID: m.ID, Key: m.Key, Topic: m.Topic, Payload: string(m.Payload)}); err != nil {
			return err
		}
	}
	return f.Sync()
}

func (p *filePublisher) Close() error { return nil }

func readRecords(t *testing.T, path string) []fileRecord {
	t.Helper()
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []fileRecord
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var r fileRecord
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}

// kill -9 of the relay process between the broker's confirm and the delete
// of the rows: after a restart the rows are published again, the consumer's
// dedupe store absorbs the repeats, and nothing is lost or reordered (L03,
// L20).
func TestRelayKilledBetweenConfirmAndMarkRepublishesAndDedupeAbsorbs(t *testing.T) {
	t.Parallel()
	db := newTestDB(t, 8)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var added []*reliable.Message
	for i := range 50 {
		m := msg("orders", fmt.Sprintf("o-%d", i%5), fmt.Sprint(i))
		if err := addTx(ctx, db.pool, m); err != nil {
			t.Fatal(err)
		}
		added = append(added, m)
	}
	file := filepath.Join(t.TempDir(), "broker.jsonl")

	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=kill-after-confirm", childDSNEnv+"="+db.dsn,
		childSchemaEnv+"="+db.schema, childFileEnv+"="+file)
	out, err := cmd.CombinedOutput()
	var exitErr *exec.ExitError
	if !errors.As(err, &exitErr) || exitErr.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("child relay did not die by SIGKILL: %v\n%s", err, out)
	}
	before := readRecords(t, file)
	if len(before) == 0 {
		t.Fatal("the child died before publishing anything")
	}
	if n := db.count(t, `SELECT count(*) FROM reliable_outbox`); n != 50 {
		t.Fatalf("%d rows pending after the kill, want all 50 (none was marked)", n)
	}
	if n := db.count(t, `SELECT count(*) FROM reliable_outbox_leases WHERE owner = 'relay-that-dies'`); n == 0 {
		t.Fatal("the dead relay left no lease: the test did not kill it mid-work")
	}

	// A new relay (another ID) takes over once the dead relay's leases expire.
	startRelay(t, db.pool, &filePublisher{path: file}, testConfig())
	waitFor(t, 20*time.Second, "backlog relayed", func() bool { return db.count(t, `SELECT count(*) FROM reliable_outbox`) == 0 })

	// The consumer: dedupe by message ID, apply the first delivery of each.
	store := idempotency.NewMemory()
	applied := map[string][]string{}
	dups := 0
	for _, r := range readRecords(t, file) {
		st, err := store.Begin(ctx, r.ID)
		if err != nil {
			t.Fatal(err)
		}
		if st == idempotency.StatusDone {
			dups++
			continue
		}
		applied[r.Key] = append(applied[r.Key], r.ID)
		if err := store.Done(ctx, r.ID); err != nil {
			t.Fatal(err)
		}
	}
	want := map[string][]string{}
	for _, m := range added {
		want[m.Key] = append(want[m.Key], m.ID)
	}
	for k, ids := range want {
		if fmt.Sprint(applied[k]) != fmt.Sprint(ids) {
			t.Fatalf("key %s applied as %v, want %v", k, applied[k], ids)
		}
	}
	if dups != len(before) {
		t.Fatalf("%d duplicates absorbed, want %d (the rows the killed relay had confirmed)", dups, len(before))
	}
	t.Logf("child confirmed %d messages and died before marking; all republished, %d duplicates absorbed, 50 applied once in order", len(before), dups)
}
