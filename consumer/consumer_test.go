package consumer_test

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/consumer"
	"github.com/reliable-go/reliable/idempotency"
	"github.com/reliable-go/reliable/reliabletest"
)

var quiet = slog.New(slog.DiscardHandler)

// ledger records what handlers applied, to check nothing was lost, nothing
// applied twice, and each key in order.
type ledger struct {
	mu      sync.Mutex
	applied map[string]int   // message ID -> times applied
	seq     map[string][]int // key -> applied sequence numbers in order
}

func newLedger() *ledger {
	return &ledger{applied: make(map[string]int), seq: make(map[string][]int)}
}

func (l *ledger) apply(msg *reliable.Message) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.applied[msg.ID]++
	n, _ := strconv.Atoi(msg.Headers["seq"])
	l.seq[msg.Key] = append(l.seq[msg.Key], n)
}

func (l *ledger) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.applied)
}

// check fails t unless every message in want was applied exactly once and
// every key in sequence.
func (l *ledger) check(t testing.TB, want []*reliable.Message) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, m := range want {
		if n := l.applied[m.ID]; n != 1 {
			t.Fatalf("message %s (key %s seq %s) applied %d times", m.ID, m.Key, m.Headers["seq"], n)
		}
	}
	for key, s := range l.seq {
		for i := range s {
			if s[i] != i {
				t.Fatalf("key %s applied out of order: %v", key, s)
			}
		}
	}
}

type bundle struct {
	broker *reliabletest.Broker
	pub    reliable.Publisher
	dedupe *idempotency.MemoryStore
	table  *reliabletest.RetryTable
	ledger *ledger
}

func setup(t *testing.T, partitions int) *bundle {
	t.Helper()
	b := reliabletest.NewBroker(reliabletest.BrokerOptions{Partitions: partitions})
	b.CreateTopic("orders")
	table := reliabletest.NewRetryTable()
	table.Backoff = reliable.Backoff{Initial: 5 * time.Millisecond, Max: 20 * time.Millisecond}
	return &bundle{broker: b, pub: b.Publisher(), dedupe: idempotency.NewMemory(), table: table, ledger: newLedger()}
}

// publish publishes n messages over keys, each with a per-key "seq" header.
func (b *bundle) publish(t *testing.T, n, keys int, msgType string) []*reliable.Message {
	t.Helper()
	msgs := make([]*reliable.Message, n)
	seq := make(map[int]int)
	for i := range msgs {
		k := i % keys
		msgs[i] = &reliable.Message{Topic: "orders", Key: "order-" + strconv.Itoa(k), Type: msgType,
			Headers: map[string]string{"seq": strconv.Itoa(seq[k])}}
		seq[k]++
	}
	if err := b.pub.Publish(context.Background(), msgs...); err != nil {
		t.Fatal(err)
	}
	return msgs
}

func (b *bundle) config() consumer.Config {
	return consumer.Config{Topic: "orders", Dedupe: b.dedupe, RetryTable: b.table, Logger: quiet,
		Backoff: reliable.Backoff{Initial: time.Millisecond, Max: 10 * time.Millisecond}}
}

// run starts a consumer and returns a stop function that waits for Run.
func run(t *testing.T, sub reliable.Subscriber, h reliable.Handler, cfg consumer.Config) (*consumer.Consumer, func() error) {
	t.Helper()
	c, err := consumer.New(sub, h, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	var once sync.Once
	var runErr error
	stop := func() error {
		once.Do(func() {
			cancel()
			runErr = <-done
		})
		return runErr
	}
	t.Cleanup(func() { _ = stop() })
	return c, stop
}

func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestHandlesEveryMessageOnceInOrder(t *testing.T) {
	b := setup(t, 4)
	msgs := b.publish(t, 2000, 50, "order.updated")
	h := reliable.HandlerFunc(func(_ context.Context, m *reliable.Message) error { b.ledger.apply(m); return nil })
	_, stop := run(t, b.broker.Subscriber("kitchen", reliabletest.SubscriberOptions{}), h, b.config())
	eventually(t, 10*time.Second, "all messages", func() bool { return b.ledger.count() == len(msgs) })
	mustStop(t, stop)
	b.ledger.check(t, msgs)
	if lag := b.broker.Lag("kitchen", "orders"); lag != 0 {
		t.Fatalf("lag %d after every message was handled", lag)
	}
}

func TestTransientFailureParksKeyWithoutBlockingOthers(t *testing.T) {
	// L09, L10, L11: "placed" of order-0 fails on a network blip; "paid" and
	// "completed" of order-0 must wait behind it in the retry table, while
	// other orders flow. After recovery the three apply in order.
	b := setup(t, 1)
	var blip atomic.Bool
	blip.Store(true)
	h := reliable.HandlerFunc(func(_ context.Context, m *reliable.Message) error {
		if m.Key == "order-0" && m.Headers["seq"] == "0" && blip.Load() {
			return errors.New("connection reset by peer")
		}
		b.ledger.apply(m)
		return nil
	})
	msgs := b.publish(t, 30, 10, "order.event") // 3 events per order
	_, stop := run(t, b.broker.Subscriber("kitchen", reliabletest.SubscriberOptions{}), h, b.config())
	eventually(t, 5*time.Second, "other orders", func() bool { return b.ledger.count() == 27 })
	if n := b.table.Len(); n != 3 {
		t.Fatalf("retry table holds %d entries, want order-0's 3", n)
	}
	if lag := b.broker.Lag("kitchen", "orders"); lag != 0 {
		t.Fatalf("parked messages must be committed (lag %d)", lag)
	}
	blip.Store(false) // the consumer's own retrier replays order-0 now
	eventually(t, 5*time.Second, "replay", func() bool { return b.table.Len() == 0 })
	mustStop(t, stop)
	b.ledger.check(t, msgs)
}

func TestDuplicateAfterCrashBeforeCommitIsSkipped(t *testing.T) {
	// L20: the consumer dies after the handler succeeded but before the
	// offset was committed; the redelivered message must not apply twice.
	b := setup(t, 1)
	msgs := b.publish(t, 20, 2, "order.event")
	var calls atomic.Int64
	h := reliable.HandlerFunc(func(_ context.Context, m *reliable.Message) error {
		calls.Add(1)
		b.ledger.apply(m)
		return nil
	})
	first := b.broker.Subscriber("kitchen", reliabletest.SubscriberOptions{CommitInterval: time.Hour})
	_, stop := run(t, first, h, b.config())
	eventually(t, 5*time.Second, "first pass", func() bool { return b.ledger.count() == 20 })
	first.Crash() // nothing was committed
	_ = stop()    // Run reports that the subscription ended
	if c := b.broker.Committed("kitchen", "orders"); c[0] != 0 {
		t.Fatalf("committed %v before the crash", c)
	}
	var dups atomic.Int64
	cfg := b.config()
	cfg.Observe = func(e consumer.Event) {
		if e.Outcome == consumer.OutcomeDuplicate {
			dups.Add(1)
		}
	}
	_, stop2 := run(t, b.broker.Subscriber("kitchen", reliabletest.SubscriberOptions{}), h, cfg)
	eventually(t, 5*time.Second, "redelivery", func() bool { return dups.Load() == 20 })
	mustStop(t, stop2)
	if calls.Load() != 20 {
		t.Fatalf("handler called %d times for 20 messages", calls.Load())
	}
	b.ledger.check(t, msgs)
}

func TestPoisonIsDeadLetteredAndBlocksItsKey(t *testing.T) {
	b := setup(t, 1)
	h := reliable.HandlerFunc(func(_ context.Context, m *reliable.Message) error {
		if m.Key == "order-1" && m.Headers["seq"] == "0" {
			return reliable.Permanent(errors.New("payload does not parse"))
		}
		b.ledger.apply(m)
		return nil
	})
	b.publish(t, 6, 2, "order.event")
	_, stop := run(t, b.broker.Subscriber("kitchen", reliabletest.SubscriberOptions{}), h, b.config())
	eventually(t, 5*time.Second, "order-0", func() bool { return b.ledger.count() == 3 })
	eventually(t, 5*time.Second, "order-1 parked", func() bool { return b.table.Len() == 3 })
	mustStop(t, stop)
	dead := b.table.Dead()
	if len(dead) != 1 || dead[0].LastError != "payload does not parse" {
		t.Fatalf("dead entries %v", dead)
	}
}

func TestWrongEnvironmentNeverHandled(t *testing.T) {
	// L07: a staging consumer pointed at production messages must not handle them.
	b := setup(t, 1)
	prod := &reliable.Message{Topic: "orders", Key: "o1", Headers: map[string]string{reliable.HeaderEnvironment: "prod"}}
	if err := b.pub.Publish(context.Background(), prod); err != nil {
		t.Fatal(err)
	}
	var called atomic.Bool
	h := reliable.HandlerFunc(func(context.Context, *reliable.Message) error { called.Store(true); return nil })
	cfg := b.config()
	cfg.Environment = "staging"
	_, stop := run(t, b.broker.Subscriber("kitchen-staging", reliabletest.SubscriberOptions{}), h, cfg)
	eventually(t, 5*time.Second, "dead letter", func() bool { return len(b.table.Dead()) == 1 })
	mustStop(t, stop)
	if called.Load() {
		t.Fatal("the handler saw a message from another environment")
	}
	if reason := b.table.Dead()[0].LastError; !strings.Contains(reason, "environment prod") || !strings.Contains(reason, "staging") {
		t.Fatalf("the dead entry's reason %q does not name both environments", reason)
	}
}

func TestCommittedOffsetNeverPassesIncompleteMessage(t *testing.T) {
	// L05, L12: with 64 lanes finishing in random order, the committed offset
	// must at every moment be at or below the first unfinished message.
	b := setup(t, 1)
	msgs := b.publish(t, 10000, 200, "order.event")
	var mu sync.Mutex
	completed := make(map[int64]bool)
	h := reliable.HandlerFunc(func(_ context.Context, m *reliable.Message) error {
		time.Sleep(time.Duration(m.Delivery.Offset%7) * 100 * time.Microsecond)
		b.ledger.apply(m)
		mu.Lock()
		completed[m.Delivery.Offset] = true
		mu.Unlock()
		return nil
	})
	cfg := b.config()
	cfg.Concurrency = 64
	_, stop := run(t, b.broker.Subscriber("kitchen", reliabletest.SubscriberOptions{}), h, cfg)
	checks := 0
	verified := int64(0) // every offset below it was complete when checked
	for b.ledger.count() < len(msgs) {
		committed := b.broker.Committed("kitchen", "orders")
		if len(committed) == 1 {
			mu.Lock()
			for ; verified < committed[0]; verified++ {
				if !completed[verified] {
					mu.Unlock()
					t.Fatalf("committed offset %d passes incomplete offset %d", committed[0], verified)
				}
			}
			mu.Unlock()
			checks++
		}
		time.Sleep(200 * time.Microsecond)
	}
	mustStop(t, stop)
	b.ledger.check(t, msgs)
	t.Logf("checked the committed offset %d times", checks)
}

func TestStoreOutageHoldsOnlyThatKey(t *testing.T) {
	// A dedupe store that fails for a while must not lose the message nor
	// let it through unrecorded; other keys go on.
	b := setup(t, 1)
	flaky := &flakyStore{Store: b.dedupe, failID: "", fails: 5}
	msgs := b.publish(t, 10, 10, "order.event")
	flaky.failID = msgs[0].ID
	cfg := b.config()
	cfg.Dedupe = flaky
	h := reliable.HandlerFunc(func(_ context.Context, m *reliable.Message) error { b.ledger.apply(m); return nil })
	_, stop := run(t, b.broker.Subscriber("kitchen", reliabletest.SubscriberOptions{}), h, cfg)
	eventually(t, 5*time.Second, "all", func() bool { return b.ledger.count() == 10 })
	mustStop(t, stop)
	b.ledger.check(t, msgs)
	if flaky.fails != 0 {
		t.Fatalf("store failures left: %d", flaky.fails)
	}
}

func TestInlineRetryWithoutTableHoldsUntilHandled(t *testing.T) {
	// Without a retry table a failing message is tried again in its lane
	// and never nacked: it is handled on its third try and then committed.
	b := setup(t, 1)
	b.publish(t, 1, 1, "order.event")
	var calls atomic.Int64
	h := reliable.HandlerFunc(func(context.Context, *reliable.Message) error {
		if calls.Add(1) <= 2 {
			return errors.New("blip")
		}
		return nil
	})
	cfg := b.config()
	cfg.RetryTable = nil
	var handled atomic.Bool
	cfg.Observe = func(e consumer.Event) {
		if e.Outcome == consumer.OutcomeHandled {
			handled.Store(true)
		}
	}
	_, stop := run(t, b.broker.Subscriber("kitchen", reliabletest.SubscriberOptions{}), h, cfg)
	eventually(t, 5*time.Second, "handled after inline retries", handled.Load)
	mustStop(t, stop)
	if calls.Load() != 3 {
		t.Fatalf("handler called %d times, want 3", calls.Load())
	}
	if c := b.broker.Committed("kitchen", "orders"); c[0] != 1 {
		t.Fatalf("committed %v, want 1 (acked once handled)", c)
	}
}

func TestPanickingHandlerIsParked(t *testing.T) {
	b := setup(t, 1)
	b.publish(t, 1, 1, "order.event")
	h := reliable.HandlerFunc(func(context.Context, *reliable.Message) error { panic("nil map") })
	cfg := b.config()
	cfg.DisableRetrier = true
	_, stop := run(t, b.broker.Subscriber("kitchen", reliabletest.SubscriberOptions{}), h, cfg)
	eventually(t, 5*time.Second, "parked", func() bool { return b.table.Len() == 1 })
	mustStop(t, stop)
}

func TestShutdownFinishesInFlightAndCommits(t *testing.T) {
	b := setup(t, 1)
	msgs := b.publish(t, 5, 5, "order.event")
	started := make(chan struct{}, 5)
	h := reliable.HandlerFunc(func(_ context.Context, m *reliable.Message) error {
		started <- struct{}{}
		time.Sleep(100 * time.Millisecond)
		b.ledger.apply(m)
		return nil
	})
	_, stop := run(t, b.broker.Subscriber("kitchen", reliabletest.SubscriberOptions{CommitInterval: time.Hour}), h, b.config())
	for range 5 {
		<-started
	}
	mustStop(t, stop) // handlers are mid-flight
	b.ledger.check(t, msgs)
	if c := b.broker.Committed("kitchen", "orders"); c[0] != 5 {
		t.Fatalf("committed %v after a graceful shutdown, want 5", c)
	}
}

func TestConfigListsEveryProblem(t *testing.T) {
	_, err := consumer.New(nil, nil, consumer.Config{Concurrency: -1})
	var ce *reliable.ConfigError
	if !errors.As(err, &ce) || len(ce.Problems) != 4 {
		t.Fatalf("got %v", err)
	}
}

type flakyStore struct {
	idempotency.Store
	mu     sync.Mutex
	failID string
	fails  int
}

func (f *flakyStore) Begin(ctx context.Context, id string) (idempotency.Status, error) {
	f.mu.Lock()
	if id == f.failID && f.fails > 0 {
		f.fails--
		f.mu.Unlock()
		return 0, errors.New("redis: connection refused")
	}
	f.mu.Unlock()
	return f.Store.Begin(ctx, id)
}

func mustStop(t *testing.T, stop func() error) {
	t.Helper()
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
}
