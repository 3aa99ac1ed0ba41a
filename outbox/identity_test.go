package outbox_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/outbox"
	"github.com/reliable-go/reliable/reliabletest"
)

// Issue 15 item 7: the documented promise holds. A relay (ID
// "relay-that-dies", LeaseTTL 15 s) is killed with kill -9 holding leases;
// a relay restarted with the same ID takes them over at once and drains the
// backlog in order, in well under the lease TTL. Before, it waited for the
// 15 s leases to expire.
func TestRelayRestartedWithItsIDTakesItsLeasesOverAtOnce(t *testing.T) {
	t.Parallel()
	db := newTestDB(t, 8)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for i := range 50 {
		must(t, addTx(ctx, db.pool, msg("orders", fmt.Sprintf("o-%d", i%5), fmt.Sprint(i))))
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
	if n := db.count(t, `SELECT count(*) FROM reliable_outbox_leases WHERE owner = 'relay-that-dies' AND expires_at > now() + interval '5 seconds'`); n == 0 {
		t.Fatal("the killed relay left no live lease: nothing to take over")
	}

	cfg := testConfig()
	cfg.Instance, cfg.LeaseTTL, cfg.PublishTimeout = "relay-that-dies", 15*time.Second, 5*time.Second
	start := time.Now()
	startRelay(t, db.pool, &filePublisher{path: file}, cfg)
	waitFor(t, 5*time.Second, "the backlog relayed by the restarted relay, within 5 s of its 15 s lease TTL", func() bool {
		return db.count(t, `SELECT count(*) FROM reliable_outbox`) == 0
	})
	t.Logf("restarted relay drained the backlog in %s (lease TTL 15 s)", time.Since(start).Round(time.Millisecond))
	seen, _ := firstSeen(recordsAsMessages(readRecords(t, file)))
	for k, ids := range seen {
		if len(ids) != 10 {
			t.Fatalf("key %s: %d distinct messages, want 10", k, len(ids))
		}
	}
}

func recordsAsMessages(rs []fileRecord) []*reliable.Message {
	out := make([]*reliable.Message, len(rs))
	for i, r := range rs {
		out[i] = &reliable.Message{ID: r.ID, Key: r.Key, Topic: r.Topic, Payload: []byte(r.Payload)}
	}
	return out
}

// Issue 15 item 7: two live relays sharing an ID are detected: the second
// Run returns ErrDuplicateInstance once it waited LeaseTTL (3 s) for the ID; once
// the first stops, the ID is free. Before, both ran, renewing each other's
// leases.
func TestSecondLiveRelayWithTheSameIDIsRefused(t *testing.T) {
	t.Parallel()
	db := newTestDB(t, 8)
	broker := reliabletest.NewBroker(reliabletest.BrokerOptions{})
	cfg := testConfig()
	cfg.Instance = "pod-0"
	first, err := outbox.NewRelay(db.pool, broker.Publisher(), cfg)
	must(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- first.Run(ctx) }()
	t.Cleanup(cancel)
	waitFor(t, 10*time.Second, "the first relay ready", func() bool { return first.Ready(context.Background()) == nil })

	second, err := outbox.NewRelay(db.pool, broker.Publisher(), cfg)
	must(t, err)
	sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer scancel()
	if err := second.Run(sctx); !errors.Is(err, outbox.ErrDuplicateInstance) {
		t.Fatalf("second relay with ID pod-0: Run returned %v, want ErrDuplicateInstance", err)
	}
	cancel()
	must(t, <-done)
	third, err := outbox.NewRelay(db.pool, broker.Publisher(), cfg)
	must(t, err)
	tctx, tcancel := context.WithTimeout(context.Background(), time.Second)
	defer tcancel()
	if err := third.Run(tctx); err != nil {
		t.Fatalf("a relay with ID pod-0 after the first stopped: %v", err)
	}
}
