package consumer_test

import (
	"context"
	"errors"
	"hash/fnv"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/consumer"
	"github.com/reliable-go/reliable/reliabletest"
	"github.com/reliable-go/reliable/retry"
)

// Tests of the consumer's knowledge of blocked keys (retry.KeyCache): a key
// parked by another instance, or released by an operator, is seen without
// a restart. They use the in-memory broker and the real PostgreSQL.

// signalSubscriber tells when Subscribe has joined the group.
type signalSubscriber struct {
	*reliabletest.Subscriber
	joined chan struct{}
}

func (s *signalSubscriber) Subscribe(ctx context.Context, topic string) (<-chan *reliable.Delivery, error) {
	ch, err := s.Subscriber.Subscribe(ctx, topic)
	close(s.joined)
	return ch, err
}

// events collects a consumer's outcomes by message ID.
type events struct {
	mu  sync.Mutex
	got map[string][]consumer.Outcome
	ch  chan struct{}
}

func newEvents() *events {
	return &events{got: map[string][]consumer.Outcome{}, ch: make(chan struct{}, 1)}
}

func (e *events) observe(ev consumer.Event) {
	e.mu.Lock()
	e.got[ev.Message.ID] = append(e.got[ev.Message.ID], ev.Outcome)
	e.mu.Unlock()
	select {
	case e.ch <- struct{}{}:
	default:
	}
}

func (e *events) outcomes(id string) []consumer.Outcome {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]consumer.Outcome(nil), e.got[id]...)
}

// await waits up to 10 s for id's outcome o.
func (e *events) await(t *testing.T, id string, o consumer.Outcome) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		for _, got := range e.outcomes(id) {
			if got == o {
				return
			}
		}
		select {
		case <-e.ch:
		case <-deadline:
			t.Fatalf("message %s: outcome %v not seen in 10s (got %v)", id, o, e.outcomes(id))
		}
	}
}

// handledLog records the IDs a handler applied.
type handledLog struct {
	mu  sync.Mutex
	ids []string
}

func (h *handledLog) add(id string) {
	h.mu.Lock()
	h.ids = append(h.ids, id)
	h.mu.Unlock()
}

func (h *handledLog) has(id string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, x := range h.ids {
		if x == id {
			return true
		}
	}
	return false
}

// keyInPartition returns a key the in-memory broker puts in partition p of n.
func keyInPartition(p, n int) string {
	for i := 0; ; i++ {
		k := "order-" + strconv.Itoa(i)
		h := fnv.New32a()
		_, _ = h.Write([]byte(k))
		if int(h.Sum32()%uint32(n)) == p {
			return k
		}
	}
}

func runConsumer(t *testing.T, sub reliable.Subscriber, h reliable.Handler, cfg consumer.Config) (stop func()) {
	t.Helper()
	c, err := consumer.New(sub, h, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("consumer run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func publish(t *testing.T, b *reliabletest.Broker, msgs ...*reliable.Message) {
	t.Helper()
	if err := b.Publisher().Publish(context.Background(), msgs...); err != nil {
		t.Fatal(err)
	}
}

// entriesOf returns the IDs of key's blocking entries, in order.
func entriesOf(t *testing.T, table *retry.Table, key string) []string {
	t.Helper()
	es, err := table.List(context.Background(), retry.ListFilter{Key: key, States: []retry.State{retry.StatePending, retry.StateDead}})
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]string, len(es))
	for i, e := range es {
		ids[i] = e.Message.ID
	}
	return ids
}

// TestBlockedKeyKnownAcrossRebalance: instance B handles a key's first
// message, the key's partition moves to instance A, which parks the key's
// second message, and the partition comes back to B: B parks the key's
// third message behind the second instead of handling it (L09, L11), though
// its cache of blocked keys was loaded before A parked anything.
func TestBlockedKeyKnownAcrossRebalance(t *testing.T) {
	pool := pgPool(t)
	group := shortName("g_")
	table := retryTable(t, pool, group)
	broker := reliabletest.NewBroker(reliabletest.BrokerOptions{Partitions: 2})
	broker.CreateTopic("orders")
	key := keyInPartition(1, 2) // B owns partition 0 throughout; 1 moves
	cfg := func(e *events) consumer.Config {
		return consumer.Config{Topic: "orders", RetryTable: table, DisableRetrier: true, Logger: quiet, Observe: e.observe}
	}

	var handledB handledLog
	evB := newEvents()
	runConsumer(t, broker.Subscriber(group, reliabletest.SubscriberOptions{}), reliable.HandlerFunc(func(_ context.Context, m *reliable.Message) error {
		handledB.add(m.ID)
		return nil
	}), cfg(evB))
	m0 := &reliable.Message{ID: "m0", Topic: "orders", Key: key}
	publish(t, broker, m0)
	evB.await(t, m0.ID, consumer.OutcomeHandled)

	evA := newEvents()
	subA := &signalSubscriber{Subscriber: broker.Subscriber(group, reliabletest.SubscriberOptions{}), joined: make(chan struct{})}
	stopA := runConsumer(t, subA, reliable.HandlerFunc(func(context.Context, *reliable.Message) error {
		return errors.New("downstream unavailable")
	}), cfg(evA))
	select {
	case <-subA.joined:
	case <-time.After(10 * time.Second):
		t.Fatal("instance A did not join in 10s")
	}
	m1 := &reliable.Message{ID: "m1", Topic: "orders", Key: key}
	publish(t, broker, m1)
	evA.await(t, m1.ID, consumer.OutcomeParked)
	stopA() // the partition goes back to B

	m2 := &reliable.Message{ID: "m2", Topic: "orders", Key: key}
	publish(t, broker, m2)
	evB.await(t, m2.ID, consumer.OutcomeParked)
	if handledB.has(m1.ID) || handledB.has(m2.ID) {
		t.Fatalf("B handled the key's later messages ahead of the parked one: %v", handledB.ids)
	}
	if got := entriesOf(t, table, key); len(got) != 2 || got[0] != m1.ID || got[1] != m2.ID {
		t.Fatalf("key's entries = %v, want [m1 m2]", got)
	}
}

// TestOperatorReleaseUnblocksKeyWithoutRestart: a poison message dead in
// the retry table blocks its key, and the key's next message is parked
// behind it; once an operator releases the key and discards the parked
// message (the retry package calls reliablectl makes), the running consumer
// handles the key's next message.
func TestOperatorReleaseUnblocksKeyWithoutRestart(t *testing.T) {
	pool := pgPool(t)
	group := shortName("g_")
	table := retryTable(t, pool, group)
	broker := reliabletest.NewBroker(reliabletest.BrokerOptions{Partitions: 1})
	broker.CreateTopic("orders")
	var handled handledLog
	ev := newEvents()
	runConsumer(t, broker.Subscriber(group, reliabletest.SubscriberOptions{}), reliable.HandlerFunc(func(_ context.Context, m *reliable.Message) error {
		if m.ID == "poison" {
			return reliable.Permanent(errors.New("cannot parse"))
		}
		handled.add(m.ID)
		return nil
	}), consumer.Config{Topic: "orders", RetryTable: table, DisableRetrier: true, Logger: quiet, Observe: ev.observe})

	poison := &reliable.Message{ID: "poison", Topic: "orders", Key: "order-1"}
	next := &reliable.Message{ID: "next", Topic: "orders", Key: "order-1"}
	publish(t, broker, poison, next)
	ev.await(t, poison.ID, consumer.OutcomeDeadLettered)
	ev.await(t, next.ID, consumer.OutcomeParked)

	ctx := context.Background()
	if n, err := table.Release(ctx, "order-1"); err != nil || n != 1 {
		t.Fatalf("release = %d, %v; want 1 entry", n, err)
	}
	es, err := table.List(ctx, retry.ListFilter{Key: "order-1", States: []retry.State{retry.StatePending}})
	if err != nil || len(es) != 1 {
		t.Fatalf("pending entries = %v, %v; want the parked one", es, err)
	}
	if err := table.Discard(ctx, es[0].ID); err != nil {
		t.Fatal(err)
	}
	later := &reliable.Message{ID: "later", Topic: "orders", Key: "order-1"}
	publish(t, broker, later)
	ev.await(t, later.ID, consumer.OutcomeHandled)
	if !handled.has(later.ID) || handled.has(next.ID) {
		t.Fatalf("handled = %v, want later and not the discarded one", handled.ids)
	}
}
