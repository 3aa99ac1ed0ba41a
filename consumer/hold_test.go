package consumer_test

// Unit tests on the in-memory broker (reliabletest, a test double): what the
// consumer does with a failing message when no retry table or dead-letter
// path is configured, and on the way out.

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/consumer"
	"github.com/reliable-go/reliable/idempotency"
	"github.com/reliable-go/reliable/reliabletest"
)

// zeroConfig is the consumer config with every optional field at its zero
// value, as a new user writes it, but for a quiet logger and a short backoff.
func zeroConfig() consumer.Config {
	return consumer.Config{Topic: "orders", Logger: quiet,
		Backoff: reliable.Backoff{Initial: time.Millisecond, Max: 20 * time.Millisecond}}
}

func TestDownstreamOutageWithoutRetryTableKeepsOrder(t *testing.T) {
	// L09: without a retry table, a message whose inline attempts all failed
	// was nacked while its key's next messages, already in the lane, were
	// applied: 64-179 of 2,000 out of order on Kafka. Every call fails for
	// 300 ms here (a downstream outage); afterwards every key must have been
	// applied exactly once and in order.
	b := setup(t, 3)
	msgs := b.publish(t, 600, 30, "order.event")
	outageEnds := time.Now().Add(300 * time.Millisecond)
	h := reliable.HandlerFunc(func(_ context.Context, m *reliable.Message) error {
		if time.Now().Before(outageEnds) {
			return errors.New("kitchen database unavailable")
		}
		b.ledger.apply(m)
		return nil
	})
	cfg := zeroConfig()
	cfg.Dedupe = b.dedupe
	_, stop := run(t, b.broker.Subscriber("kitchen", reliabletest.SubscriberOptions{}), h, cfg)
	eventually(t, 10*time.Second, "all applied", func() bool { return b.ledger.count() == len(msgs) })
	mustStop(t, stop)
	b.ledger.check(t, msgs)
}

func TestPoisonWithoutDeadLetterPathBlocksOnlyItsKey(t *testing.T) {
	// With no retry table and no dead-letter path nothing is skipped: the
	// poison message holds its key (the key's later messages wait), other
	// keys are applied, the key is reported blocked, and the committed
	// offset stays before the poison message.
	b := setup(t, 1)
	msgs := b.publish(t, 30, 3, "order.event") // order-0, order-1, order-2 interleaved
	poison := msgs[4]                          // order-1, seq 1
	var poisonCalls atomic.Int64
	h := reliable.HandlerFunc(func(_ context.Context, m *reliable.Message) error {
		if m.ID == poison.ID {
			poisonCalls.Add(1)
			return reliable.Permanent(errors.New("payload does not parse"))
		}
		b.ledger.apply(m)
		return nil
	})
	c, stop := run(t, b.broker.Subscriber("kitchen", reliabletest.SubscriberOptions{}), h, zeroConfig())
	eventually(t, 5*time.Second, "other keys applied", func() bool { return b.ledger.count() == 21 })
	eventually(t, 5*time.Second, "poison retried", func() bool { return poisonCalls.Load() >= 3 })
	blocked := c.Blocked()
	if len(blocked) != 1 || blocked[0].Key != "order-1" || blocked[0].MessageID != poison.ID || blocked[0].LastError == "" {
		t.Fatalf("Blocked() = %+v, want order-1 waiting for %s", blocked, poison.ID)
	}
	mustStop(t, stop)
	b.ledger.mu.Lock()
	got := b.ledger.seq["order-1"]
	b.ledger.mu.Unlock()
	if len(got) != 1 || got[0] != 0 {
		t.Fatalf("order-1 applied %v, want only seq 0 (seq 1 is poison, the rest waits)", got)
	}
	if c := b.broker.Committed("kitchen", "orders"); c[0] > 4 {
		t.Fatalf("committed offset %d passed the poison message at offset 4", c[0])
	}
}

func TestHeldKeyTakesNoConcurrencySlot(t *testing.T) {
	// L10: with one slot, a failing key must not stall every other key while
	// it waits for its next try.
	b := setup(t, 1)
	msgs := b.publish(t, 40, 20, "order.event")
	var failures atomic.Int64
	h := reliable.HandlerFunc(func(_ context.Context, m *reliable.Message) error {
		if m.Key == "order-0" && failures.Add(1) <= 3 {
			return errors.New("blip")
		}
		b.ledger.apply(m)
		return nil
	})
	cfg := zeroConfig()
	cfg.Concurrency = 1
	cfg.Backoff = reliable.Backoff{Initial: 200 * time.Millisecond, Max: 200 * time.Millisecond, Jitter: -1}
	_, stop := run(t, b.broker.Subscriber("kitchen", reliabletest.SubscriberOptions{}), h, cfg)
	eventually(t, 400*time.Millisecond, "other keys during order-0's first wait", func() bool { return b.ledger.count() == 38 })
	eventually(t, 5*time.Second, "order-0 after its tries", func() bool { return b.ledger.count() == 40 })
	mustStop(t, stop)
	b.ledger.check(t, msgs)
}

func TestShutdownLeavesAHeldKeyUnsettled(t *testing.T) {
	// Run must not wait out a held key's backoff on the way out, and must not
	// apply the key's later messages after leaving the held one unsettled.
	b := setup(t, 1)
	b.publish(t, 3, 1, "order.event")
	var calls atomic.Int64
	h := reliable.HandlerFunc(func(_ context.Context, m *reliable.Message) error {
		calls.Add(1)
		if m.Headers["seq"] == "0" {
			return errors.New("blip")
		}
		b.ledger.apply(m)
		return nil
	})
	cfg := zeroConfig()
	cfg.Backoff = reliable.Backoff{Initial: time.Hour, Max: time.Hour}
	_, stop := run(t, b.broker.Subscriber("kitchen", reliabletest.SubscriberOptions{}), h, cfg)
	eventually(t, 5*time.Second, "first try", func() bool { return calls.Load() == 1 })
	start := time.Now()
	mustStop(t, stop)
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Run took %s to stop with a held key", d)
	}
	if n := b.ledger.count(); n != 0 {
		t.Fatalf("%d later messages of the held key were applied", n)
	}
	if c := b.broker.Committed("kitchen", "orders"); c[0] != 0 {
		t.Fatalf("committed %d, want 0: nothing of the key is complete", c[0])
	}
}

func TestDoneIsRecordedAfterTheShutdownDeadline(t *testing.T) {
	// A handler that finishes after ShutdownTimeout already had its effect:
	// recording it as done must not be cut by the shutdown, or the claim
	// stays and the redelivery is handled a second time (L20).
	b := setup(t, 1)
	msgs := b.publish(t, 1, 1, "order.event")
	started := make(chan struct{})
	h := reliable.HandlerFunc(func(_ context.Context, m *reliable.Message) error {
		close(started)
		time.Sleep(300 * time.Millisecond) // ignores ctx, as many handlers do
		b.ledger.apply(m)
		return nil
	})
	cfg := zeroConfig()
	cfg.Dedupe = b.dedupe
	cfg.ShutdownTimeout = 50 * time.Millisecond
	_, stop := run(t, b.broker.Subscriber("kitchen", reliabletest.SubscriberOptions{}), h, cfg)
	<-started
	mustStop(t, stop)
	eventually(t, 5*time.Second, "handled", func() bool { return b.ledger.count() == 1 })
	eventually(t, 5*time.Second, "recorded done", func() bool {
		st, err := b.dedupe.Begin(context.Background(), msgs[0].ID)
		return err == nil && st == idempotency.StatusDone
	})
}

func TestClosedPublisherIsNotPoison(t *testing.T) {
	// A handler that publishes through a producer the application already
	// closed gets ErrClosed: that says nothing about the message, which must
	// be tried again, not dead-lettered.
	for _, withTable := range []bool{true, false} {
		t.Run(fmt.Sprintf("retry table %v", withTable), func(t *testing.T) {
			b := setup(t, 1)
			msgs := b.publish(t, 1, 1, "order.event")
			var calls atomic.Int64
			h := reliable.HandlerFunc(func(_ context.Context, m *reliable.Message) error {
				if calls.Add(1) == 1 {
					return fmt.Errorf("publish ticket: %w", reliable.ErrClosed)
				}
				b.ledger.apply(m)
				return nil
			})
			cfg := b.config()
			if !withTable {
				cfg = zeroConfig()
			}
			_, stop := run(t, b.broker.Subscriber("kitchen", reliabletest.SubscriberOptions{}), h, cfg)
			eventually(t, 5*time.Second, "handled on a later try", func() bool { return b.ledger.count() == 1 })
			mustStop(t, stop)
			b.ledger.check(t, msgs)
			if d := b.table.Dead(); len(d) != 0 {
				t.Fatalf("dead-lettered: %+v", d)
			}
		})
	}
}

func TestKeylessMessagesDoNotShareOneLane(t *testing.T) {
	// Messages without a key promise no order; they must not queue behind
	// each other in a single lane.
	b := setup(t, 1)
	for i := 0; i < 8; i++ {
		if err := b.pub.Publish(context.Background(), &reliable.Message{Topic: "orders"}); err != nil {
			t.Fatal(err)
		}
	}
	var running, peak atomic.Int64
	var handled atomic.Int64
	h := reliable.HandlerFunc(func(context.Context, *reliable.Message) error {
		n := running.Add(1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		time.Sleep(50 * time.Millisecond)
		running.Add(-1)
		handled.Add(1)
		return nil
	})
	_, stop := run(t, b.broker.Subscriber("kitchen", reliabletest.SubscriberOptions{}), h, zeroConfig())
	eventually(t, 5*time.Second, "handled", func() bool { return handled.Load() == 8 })
	mustStop(t, stop)
	if peak.Load() < 2 {
		t.Fatalf("keyless messages ran one at a time (peak %d)", peak.Load())
	}
}

func TestMessageWithoutIDIsHandledWithoutDedupe(t *testing.T) {
	// A message from another client may have no ID. With a dedupe store it
	// looped forever on idempotency.ErrEmptyID; it must be handled (at least
	// once) and reported as not deduplicated.
	sub := newStaticSubscriber(&reliable.Message{Topic: "orders", Key: "order-1", Payload: []byte("{}")})
	var handled atomic.Int64
	h := reliable.HandlerFunc(func(context.Context, *reliable.Message) error { handled.Add(1); return nil })
	cfg := zeroConfig()
	cfg.Dedupe = idempotency.NewMemory()
	var notDeduplicated atomic.Int64
	cfg.Observe = func(e consumer.Event) {
		if e.NotDeduplicated {
			notDeduplicated.Add(1)
		}
	}
	_, stop := run(t, sub, h, cfg)
	eventually(t, 5*time.Second, "acked", func() bool { return sub.acks.Load() == 1 })
	mustStop(t, stop)
	if handled.Load() != 1 || notDeduplicated.Load() != 1 {
		t.Fatalf("handled %d, reported not deduplicated %d, want 1 and 1", handled.Load(), notDeduplicated.Load())
	}
}

func TestStaleDeliveryIsNotHandled(t *testing.T) {
	// A delivery whose partition moved to another member is delivered there
	// again; handling it here too could apply it after that member applied
	// the key's later messages.
	sub := newStaticSubscriber(&reliable.Message{ID: "m1", Topic: "orders", Key: "order-1"})
	sub.stale.Store(true)
	var handled atomic.Int64
	h := reliable.HandlerFunc(func(context.Context, *reliable.Message) error { handled.Add(1); return nil })
	_, stop := run(t, sub, h, zeroConfig())
	eventually(t, 5*time.Second, "delivered", func() bool { return sub.taken.Load() == 1 })
	mustStop(t, stop) // waits for the delivery's task
	if handled.Load() != 0 || sub.acks.Load() != 0 {
		t.Fatalf("stale delivery handled %d times, acked %d times", handled.Load(), sub.acks.Load())
	}
}

func TestSetConcurrencyWhileRunning(t *testing.T) {
	// SetConcurrency is called from an admin endpoint while Run reads it
	// (L16); the race detector checks the access.
	b := setup(t, 1)
	b.publish(t, 200, 50, "order.event")
	h := reliable.HandlerFunc(func(_ context.Context, m *reliable.Message) error { b.ledger.apply(m); return nil })
	c, err := consumer.New(b.broker.Subscriber("kitchen", reliabletest.SubscriberOptions{}), h, zeroConfig())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = c.Run(ctx) }()
	go func() {
		defer wg.Done()
		for i := 1; i <= 50; i++ {
			c.SetConcurrency(i%8 + 1)
		}
	}()
	eventually(t, 5*time.Second, "all", func() bool { return b.ledger.count() == 200 })
	cancel()
	wg.Wait()
}

// staticSubscriber hands out the given messages once (a test double), and
// counts acks. Its deliveries are stale while stale is set.
type staticSubscriber struct {
	msgs  []*reliable.Message
	acks  atomic.Int64
	taken atomic.Int64
	stale atomic.Bool
}

func newStaticSubscriber(msgs ...*reliable.Message) *staticSubscriber {
	return &staticSubscriber{msgs: msgs}
}

func (s *staticSubscriber) Subscribe(ctx context.Context, _ string) (<-chan *reliable.Delivery, error) {
	out := make(chan *reliable.Delivery)
	go func() {
		defer close(out)
		for i, m := range s.msgs {
			m.Delivery = reliable.DeliveryInfo{Offset: int64(i), Attempt: 1}
			select {
			case out <- reliable.NewDelivery(m, s):
				s.taken.Add(1)
			case <-ctx.Done():
				return
			}
		}
		<-ctx.Done()
	}()
	return out, nil
}

func (s *staticSubscriber) Close() error { return nil }

func (s *staticSubscriber) Ack(context.Context, *reliable.Delivery) error {
	s.acks.Add(1)
	return nil
}

func (s *staticSubscriber) Nack(context.Context, *reliable.Delivery) error { return nil }

func (s *staticSubscriber) Stale(*reliable.Delivery) bool { return s.stale.Load() }

func TestWrongEnvironmentWithoutDeadLetterPathIsHeldNotAcked(t *testing.T) {
	// L07: a staging consumer pointed at production's group must not ack
	// production's messages (they would be lost for production); without a
	// dead-letter path it holds them, unhandled and visible.
	b := setup(t, 1)
	if err := b.pub.Publish(context.Background(), &reliable.Message{Topic: "orders", Key: "o1",
		Headers: map[string]string{reliable.HeaderEnvironment: "prod"}}); err != nil {
		t.Fatal(err)
	}
	var called atomic.Bool
	h := reliable.HandlerFunc(func(context.Context, *reliable.Message) error { called.Store(true); return nil })
	cfg := zeroConfig()
	cfg.Environment = "staging"
	c, stop := run(t, b.broker.Subscriber("kitchen", reliabletest.SubscriberOptions{}), h, cfg)
	eventually(t, 5*time.Second, "blocked", func() bool { return len(c.Blocked()) == 1 })
	mustStop(t, stop)
	if called.Load() {
		t.Fatal("the handler saw a message from another environment")
	}
	if got := b.broker.Committed("kitchen", "orders"); got[0] != 0 {
		t.Fatalf("committed %v: the refused message was acked", got)
	}
}

func TestReadyReportsWhyNot(t *testing.T) {
	sub := &readySubscriber{staticSubscriber: newStaticSubscriber()}
	c, err := consumer.New(sub, reliable.HandlerFunc(func(context.Context, *reliable.Message) error { return nil }), zeroConfig())
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Ready(context.Background()); err == nil || err.Error() != "consumer: not running" {
		t.Fatalf("before Run: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	eventually(t, 5*time.Second, "ready", func() bool { return c.Ready(ctx) == nil })
	down := errors.New("kafka: client has run out of available brokers to talk to")
	sub.err.Store(&down)
	if err := c.Ready(ctx); err == nil || !errors.Is(err, down) {
		t.Fatalf("broker down: %v", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := c.Ready(context.Background()); err == nil {
		t.Fatal("ready after Run returned")
	}
}

type readySubscriber struct {
	*staticSubscriber
	err atomic.Pointer[error]
}

func (s *readySubscriber) Ready(context.Context) error {
	if p := s.err.Load(); p != nil {
		return *p
	}
	return nil
}

func TestObserversAllSeeEveryEvent(t *testing.T) {
	b := setup(t, 1)
	b.publish(t, 10, 2, "order.event")
	var first, second atomic.Int64
	cfg := zeroConfig()
	cfg.Observe = consumer.Observers(func(consumer.Event) { first.Add(1) }, nil, func(consumer.Event) { second.Add(1) })
	h := reliable.HandlerFunc(func(_ context.Context, m *reliable.Message) error { b.ledger.apply(m); return nil })
	_, stop := run(t, b.broker.Subscriber("kitchen", reliabletest.SubscriberOptions{}), h, cfg)
	eventually(t, 5*time.Second, "observed", func() bool { return first.Load() == 10 && second.Load() == 10 })
	mustStop(t, stop)
}

func TestHandlerCannotOutliveItsClaim(t *testing.T) {
	// Issue 15: a handler that outlived its dedupe claim raced the
	// redelivery that took the expired claim over; both applied. The handler
	// timeout defaults below the claim, and a config that allows a handler to
	// outlive it is refused.
	store := idempotency.NewMemory()
	store.ClaimTTL = 300 * time.Millisecond
	cfg := zeroConfig()
	cfg.Dedupe = store
	cfg.HandlerTimeout = time.Second
	var ce *reliable.ConfigError
	if _, err := consumer.New(newStaticSubscriber(), reliable.HandlerFunc(func(context.Context, *reliable.Message) error { return nil }), cfg); !errors.As(err, &ce) {
		t.Fatalf("HandlerTimeout above the claim: got %v, want a ConfigError", err)
	}

	b := setup(t, 1)
	msgs := b.publish(t, 1, 1, "order.event")
	var calls atomic.Int64
	h := reliable.HandlerFunc(func(ctx context.Context, m *reliable.Message) error {
		if calls.Add(1) == 1 {
			<-ctx.Done() // a slow downstream call that honours its context
			return ctx.Err()
		}
		b.ledger.apply(m)
		return nil
	})
	cfg.HandlerTimeout = 0 // the default: 9/10 of the claim
	start := time.Now()
	_, stop := run(t, b.broker.Subscriber("kitchen", reliabletest.SubscriberOptions{}), h, cfg)
	eventually(t, 5*time.Second, "handled on the second try", func() bool { return b.ledger.count() == 1 })
	mustStop(t, stop)
	b.ledger.check(t, msgs)
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("took %s: the first call was not cut at 9/10 of the 300ms claim", d)
	}
}
