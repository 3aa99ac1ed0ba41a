package retry_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/retry"
)

// testLogger is quiet unless RELIABLE_TEST_LOG=1.
func testLogger() *slog.Logger {
	if os.Getenv("RELIABLE_TEST_LOG") == "1" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// fastBackoff keeps integration tests quick.
var fastBackoff = reliable.Backoff{Initial: 5 * time.Millisecond, Max: 40 * time.Millisecond}

type bundle struct {
	pool  *pgxpool.Pool
	table *retry.Table
	cfg   retry.TableConfig
	dead  chan retry.DeadEntry
}

// setup makes a retry table with its own unique name, migrated, dropped at
// the end of the test.
func setup(t *testing.T, mod func(*retry.TableConfig)) *bundle {
	t.Helper()
	pool := testPool(t)
	b := &bundle{pool: pool, dead: make(chan retry.DeadEntry, 100)}
	b.cfg = retry.TableConfig{
		Group: "kitchen", Table: uniqueName("rt_"), Backoff: fastBackoff, Logger: testLogger(),
		Notifier: retry.NotifierFunc(func(_ context.Context, e retry.DeadEntry) error { b.dead <- e; return nil }),
	}
	if mod != nil {
		mod(&b.cfg)
	}
	dropTable(t, pool, b.cfg.Table, b.cfg.Table+"_leases", b.cfg.Table+"_migrations")
	tbl, err := retry.NewTable(pool, b.cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := tbl.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	b.table = tbl
	return b
}

// startRetrier runs a retrier until the test ends or stop is called.
func startRetrier(t *testing.T, tbl *retry.Table, h reliable.Handler, cfg retry.RetrierConfig, prep ...func(*retry.Retrier)) (stop func()) {
	t.Helper()
	if cfg.PollInterval == 0 {
		cfg.PollInterval = 20 * time.Millisecond
	}
	if cfg.LeaseTTL == 0 {
		cfg.LeaseTTL = 3 * time.Second
	}
	r, err := retry.NewRetrier(tbl, h, cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range prep {
		p(r)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := r.Run(ctx); err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case <-done:
			case <-time.After(15 * time.Second):
				t.Error("retrier did not stop within 15s")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// consume is what the consumer pipeline does with one delivery, inside its
// key's lane: park behind a blocked key, else handle and park on failure.
func consume(ctx context.Context, tbl *retry.Table, h reliable.Handler, msg *reliable.Message) error {
	blocked, err := tbl.Blocked(ctx, msg.Key)
	if err != nil {
		return err
	}
	if blocked {
		// nil: not handled, so no attempt is counted even if the retrier
		// drains the key between Blocked and Park.
		return tbl.Park(ctx, msg, nil)
	}
	msg.Delivery.Attempt = 1
	if err := h.Handle(ctx, msg); err != nil {
		if reliable.IsPermanent(err) {
			return tbl.DeadLetter(ctx, msg, err)
		}
		return tbl.Park(ctx, msg, err)
	}
	return nil
}

var errKeyBlocked = errors.New("key has earlier messages waiting")

func orderMsg(key, typ string) *reliable.Message {
	return &reliable.Message{ID: key + "/" + typ, Topic: "orders", Key: key, Type: "order." + typ, Payload: []byte(typ)}
}

// ledger records applied messages: per key in apply order, and per ID how
// often; it flags two handlers running for one key at once.
type ledger struct {
	mu       sync.Mutex
	byKey    map[string][]string
	count    map[string]int
	inflight map[string]int
	errs     []string
}

func newLedger() *ledger {
	return &ledger{byKey: map[string][]string{}, count: map[string]int{}, inflight: map[string]int{}}
}

// enter marks a handler running for key; exit must follow.
func (l *ledger) enter(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.inflight[key]++
	if l.inflight[key] > 1 {
		l.errs = append(l.errs, fmt.Sprintf("key %s handled by %d handlers at once", key, l.inflight[key]))
	}
}

func (l *ledger) exit(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.inflight[key]--
}

func (l *ledger) apply(msg *reliable.Message) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.byKey[msg.Key] = append(l.byKey[msg.Key], msg.Type)
	l.count[msg.ID]++
}

func (l *ledger) applied(key string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.byKey[key]...)
}

func (l *ledger) total() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.count)
}

func (l *ledger) check(t *testing.T) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, e := range l.errs {
		t.Error(e)
	}
	for id, n := range l.count {
		if n != 1 {
			t.Errorf("message %s applied %d times", id, n)
		}
	}
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
