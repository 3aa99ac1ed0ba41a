package reliabletest

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/reliable-go/reliable"
)

// Features says what a broker adapter guarantees; RunConformance tests each
// guarantee that is claimed, and the basics for every adapter.
type Features struct {
	// OrderPerKey: messages of one key are delivered in publish order.
	OrderPerKey bool
	// CompetingConsumers: two subscribers of one group share the work and
	// together receive every message.
	CompetingConsumers bool
	// NackRedelivers: a nacked delivery is delivered again without
	// restarting the subscriber.
	NackRedelivers bool
	// UnknownTopicFails: publishing to a topic that was never created fails
	// with reliable.ErrUnknownTopic (or reliable.ErrUnroutable) instead of
	// being confirmed.
	UnknownTopicFails bool
	// RestartBroker, when set, restarts the broker; the suite then checks
	// that confirmed messages survive the restart (L02).
	RestartBroker func(ctx context.Context) error
}

// Setup tells RunConformance how to build the adapter under test.
type Setup struct {
	Features
	// NewPublisher returns a publisher; the suite closes it.
	NewPublisher func(t *testing.T) reliable.Publisher
	// NewSubscriber returns a subscriber in the named consumer group (a Kafka
	// group ID, a RabbitMQ queue); the suite closes it.
	NewSubscriber func(t *testing.T, group string) reliable.Subscriber
	// CreateTopic makes topic exist so that publishing to it is confirmed and
	// each named group receives every message published from then on.
	CreateTopic func(t *testing.T, topic string, groups ...string)
	// Crash, when set, stops sub the way a killed process would: no commit,
	// no ack. Defaults to sub.Close().
	Crash func(sub reliable.Subscriber)
	// Timeout bounds each wait for messages. Defaults to 30s.
	Timeout time.Duration
}

// RunConformance runs the suite that every reliable.Publisher and
// reliable.Subscriber pair in the SDK passes.
func RunConformance(t *testing.T, s Setup) {
	t.Helper()
	if s.Timeout == 0 {
		s.Timeout = 30 * time.Second
	}
	if s.Crash == nil {
		s.Crash = func(sub reliable.Subscriber) { _ = sub.Close() }
	}
	c := &suite{Setup: s}
	t.Run("PublishAndReceive", c.publishAndReceive)
	t.Run("PublishAssignsIDs", c.publishAssignsIDs)
	t.Run("ConcurrentPublishers", c.concurrentPublishers)
	t.Run("UnsettledRedelivered", c.unsettledRedelivered)
	t.Run("PublishAfterClose", c.publishAfterClose)
	t.Run("PublishCanceledContext", c.publishCanceledContext)
	t.Run("SubscriptionEndsWithContext", c.subscriptionEndsWithContext)
	c.runIf(t, "OrderPerKey", s.OrderPerKey, c.orderPerKey)
	c.runIf(t, "CompetingConsumers", s.CompetingConsumers, c.competingConsumers)
	c.runIf(t, "NackRedelivers", s.NackRedelivers, c.nackRedelivers)
	c.runIf(t, "UnknownTopicFails", s.UnknownTopicFails, c.unknownTopicFails)
	c.runIf(t, "PersistentAcrossRestart", s.RestartBroker != nil, c.persistentAcrossRestart)
}

type suite struct {
	Setup
}

func (c *suite) runIf(t *testing.T, name string, claimed bool, f func(*testing.T)) {
	t.Run(name, func(t *testing.T) {
		if !claimed {
			t.Skipf("the adapter does not claim %s", name)
		}
		f(t)
	})
}

var nameSeq struct {
	sync.Mutex
	n int
}

func uniqueName(t *testing.T) string {
	nameSeq.Lock()
	defer nameSeq.Unlock()
	nameSeq.n++
	return fmt.Sprintf("conf-%d-%d", time.Now().UnixNano()%1e9, nameSeq.n)
}

func (c *suite) newPublisher(t *testing.T) reliable.Publisher {
	p := c.NewPublisher(t)
	t.Cleanup(func() { _ = p.Close() })
	return p
}

func (c *suite) newSubscriber(t *testing.T, group string) reliable.Subscriber {
	s := c.NewSubscriber(t, group)
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func (c *suite) ctx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 4*c.Timeout)
	t.Cleanup(cancel)
	return ctx
}

// makeMessages returns n messages spread over keys, each payload "key:seq".
func makeMessages(topic string, n, keys int) []*reliable.Message {
	msgs := make([]*reliable.Message, n)
	seq := make([]int, keys)
	for i := range msgs {
		k := i % keys
		msgs[i] = &reliable.Message{
			Topic:   topic,
			Key:     "key-" + strconv.Itoa(k),
			Type:    "test.event",
			Headers: map[string]string{"x-seq": strconv.Itoa(seq[k])},
			Payload: []byte("key-" + strconv.Itoa(k) + ":" + strconv.Itoa(seq[k])),
		}
		seq[k]++
	}
	return msgs
}

// receive reads deliveries until want returns true or the timeout passes,
// acking each delivery when ack is true.
func (c *suite) receive(t *testing.T, ch <-chan *reliable.Delivery, ack bool, done func(got []*reliable.Delivery) bool) []*reliable.Delivery {
	t.Helper()
	var got []*reliable.Delivery
	timer := time.NewTimer(c.Timeout)
	defer timer.Stop()
	for !done(got) {
		select {
		case d, ok := <-ch:
			if !ok {
				t.Fatalf("delivery channel closed after %d deliveries", len(got))
			}
			got = append(got, d)
			if ack {
				if err := d.Ack(context.Background()); err != nil {
					t.Fatalf("ack: %v", err)
				}
			}
		case <-timer.C:
			t.Fatalf("timed out after %s with %d deliveries", c.Timeout, len(got))
		}
	}
	return got
}

func distinctIDs(ds []*reliable.Delivery) map[string]*reliable.Message {
	ids := make(map[string]*reliable.Message, len(ds))
	for _, d := range ds {
		ids[d.Message.ID] = d.Message
	}
	return ids
}

func haveAll(ids []string) func([]*reliable.Delivery) bool {
	return func(got []*reliable.Delivery) bool {
		seen := distinctIDs(got)
		for _, id := range ids {
			if _, ok := seen[id]; !ok {
				return false
			}
		}
		return true
	}
}

func idsOf(msgs []*reliable.Message) []string {
	ids := make([]string, len(msgs))
	for i, m := range msgs {
		ids[i] = m.ID
	}
	return ids
}

func (c *suite) publishAndReceive(t *testing.T) {
	ctx := c.ctx(t)
	topic, group := uniqueName(t), "g"
	c.CreateTopic(t, topic, group)
	pub := c.newPublisher(t)
	sub := c.newSubscriber(t, group)
	ch, err := sub.Subscribe(ctx, topic)
	if err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	msgs := makeMessages(topic, 50, 5)
	if err := pub.Publish(ctx, msgs...); err != nil {
		t.Fatalf("publish: %v", err)
	}
	got := distinctIDs(c.receive(t, ch, true, haveAll(idsOf(msgs))))
	for _, want := range msgs {
		g := got[want.ID]
		if g.Topic != topic || g.Key != want.Key || g.Type != want.Type || string(g.Payload) != string(want.Payload) {
			t.Fatalf("received %v (payload %q), want %v (payload %q)", g, g.Payload, want, want.Payload)
		}
		if g.Headers["x-seq"] != want.Headers["x-seq"] {
			t.Fatalf("header x-seq = %q, want %q", g.Headers["x-seq"], want.Headers["x-seq"])
		}
		if g.Time.IsZero() {
			t.Fatalf("message %s has no time", g.ID)
		}
	}
}

func (c *suite) publishAssignsIDs(t *testing.T) {
	ctx := c.ctx(t)
	topic := uniqueName(t)
	c.CreateTopic(t, topic, "g")
	pub := c.newPublisher(t)
	msgs := makeMessages(topic, 3, 1)
	msgs[0].ID = "caller-chosen-id"
	if err := pub.Publish(ctx, msgs...); err != nil {
		t.Fatalf("publish: %v", err)
	}
	if msgs[0].ID != "caller-chosen-id" {
		t.Fatalf("publish replaced the caller's ID with %q", msgs[0].ID)
	}
	if msgs[1].ID == "" || msgs[1].ID == msgs[2].ID {
		t.Fatalf("publish did not assign unique IDs: %q, %q", msgs[1].ID, msgs[2].ID)
	}
}

func (c *suite) concurrentPublishers(t *testing.T) {
	ctx := c.ctx(t)
	topic, group := uniqueName(t), "g"
	c.CreateTopic(t, topic, group)
	pub := c.newPublisher(t)
	var all []*reliable.Message
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for w := 0; w < 4; w++ {
		msgs := makeMessages(topic, 50, 10)
		all = append(all, msgs...)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, m := range msgs {
				if err := pub.Publish(ctx, m); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("publish: %v", err)
	}
	sub := c.newSubscriber(t, group)
	ch, err := sub.Subscribe(ctx, topic)
	if err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	c.receive(t, ch, true, haveAll(idsOf(all)))
}

// unsettledRedelivered: a consumer that stops before settling loses nothing
// (L01, L04, L05): the next subscriber of the group gets every unacked
// message.
func (c *suite) unsettledRedelivered(t *testing.T) {
	ctx := c.ctx(t)
	topic, group := uniqueName(t), "g"
	c.CreateTopic(t, topic, group)
	pub := c.newPublisher(t)
	msgs := makeMessages(topic, 20, 1)
	if err := pub.Publish(ctx, msgs...); err != nil {
		t.Fatalf("publish: %v", err)
	}
	first := c.NewSubscriber(t, group)
	subCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch, err := first.Subscribe(subCtx, topic)
	if err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	got := c.receive(t, ch, false, func(got []*reliable.Delivery) bool { return len(got) == 20 })
	acked := make(map[string]bool)
	for _, d := range got[:10] {
		if err := d.Ack(ctx); err != nil {
			t.Fatalf("ack: %v", err)
		}
		acked[d.Message.ID] = true
	}
	c.Crash(first)
	cancel()

	var unacked []string
	for _, m := range msgs {
		if !acked[m.ID] {
			unacked = append(unacked, m.ID)
		}
	}
	second := c.newSubscriber(t, group)
	ch2, err := second.Subscribe(ctx, topic)
	if err != nil {
		t.Fatalf("subscribe again: %v", err)
	}
	redelivered := c.receive(t, ch2, true, haveAll(unacked))
	for _, d := range redelivered {
		if !acked[d.Message.ID] && !d.Message.Delivery.Redelivered {
			t.Logf("note: redelivered message %s is not flagged Redelivered", d.Message.ID)
		}
	}
}

func (c *suite) publishAfterClose(t *testing.T) {
	topic := uniqueName(t)
	c.CreateTopic(t, topic, "g")
	pub := c.NewPublisher(t)
	if err := pub.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	err := pub.Publish(c.ctx(t), makeMessages(topic, 1, 1)...)
	if !errors.Is(err, reliable.ErrClosed) {
		t.Fatalf("publish after close: %v, want ErrClosed", err)
	}
}

func (c *suite) publishCanceledContext(t *testing.T) {
	topic := uniqueName(t)
	c.CreateTopic(t, topic, "g")
	pub := c.newPublisher(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	start := time.Now()
	err := pub.Publish(ctx, makeMessages(topic, 1, 1)...)
	if err == nil {
		t.Fatal("publish with a canceled context returned nil")
	}
	if time.Since(start) > c.Timeout {
		t.Fatalf("publish with a canceled context took %s", time.Since(start))
	}
}

func (c *suite) subscriptionEndsWithContext(t *testing.T) {
	topic, group := uniqueName(t), "g"
	c.CreateTopic(t, topic, group)
	sub := c.newSubscriber(t, group)
	ctx, cancel := context.WithCancel(context.Background())
	ch, err := sub.Subscribe(ctx, topic)
	if err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	cancel()
	timer := time.NewTimer(c.Timeout)
	defer timer.Stop()
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-timer.C:
			t.Fatal("delivery channel still open after the context ended")
		}
	}
}

// orderPerKey: L08, one key's messages arrive in publish order.
func (c *suite) orderPerKey(t *testing.T) {
	ctx := c.ctx(t)
	topic, group := uniqueName(t), "g"
	c.CreateTopic(t, topic, group)
	pub := c.newPublisher(t)
	msgs := makeMessages(topic, 1000, 20)
	for i := 0; i < len(msgs); i += 100 {
		if err := pub.Publish(ctx, msgs[i:i+100]...); err != nil {
			t.Fatalf("publish: %v", err)
		}
	}
	sub := c.newSubscriber(t, group)
	ch, err := sub.Subscribe(ctx, topic)
	if err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	got := c.receive(t, ch, true, haveAll(idsOf(msgs)))
	last := make(map[string]int)
	for _, d := range got {
		seq, _ := strconv.Atoi(d.Message.Headers["x-seq"])
		if prev, ok := last[d.Message.Key]; ok && seq <= prev {
			t.Fatalf("key %s: seq %d delivered after %d", d.Message.Key, seq, prev)
		}
		last[d.Message.Key] = seq
	}
}

func (c *suite) competingConsumers(t *testing.T) {
	ctx := c.ctx(t)
	topic, group := uniqueName(t), "g"
	c.CreateTopic(t, topic, group)
	pub := c.newPublisher(t)
	msgs := makeMessages(topic, 200, 20)
	if err := pub.Publish(ctx, msgs...); err != nil {
		t.Fatalf("publish: %v", err)
	}
	var mu sync.Mutex
	seen := make(map[string]int) // id -> subscriber index
	per := make([]int, 2)
	var wg sync.WaitGroup
	subCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	for i := 0; i < 2; i++ {
		sub := c.newSubscriber(t, group)
		ch, err := sub.Subscribe(subCtx, topic)
		if err != nil {
			t.Fatalf("subscribe: %v", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for d := range ch {
				time.Sleep(time.Millisecond) // let the other member take a share
				mu.Lock()
				seen[d.Message.ID] = i
				per[i]++
				mu.Unlock()
				_ = d.Ack(ctx)
			}
		}()
	}
	deadline := time.Now().Add(c.Timeout)
	for {
		mu.Lock()
		n := len(seen)
		mu.Unlock()
		if n == len(msgs) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("two subscribers received %d of %d messages", n, len(msgs))
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	wg.Wait()
	t.Logf("deliveries per subscriber: %v", per)
}

func (c *suite) nackRedelivers(t *testing.T) {
	ctx := c.ctx(t)
	topic, group := uniqueName(t), "g"
	c.CreateTopic(t, topic, group)
	pub := c.newPublisher(t)
	msgs := makeMessages(topic, 1, 1)
	if err := pub.Publish(ctx, msgs...); err != nil {
		t.Fatalf("publish: %v", err)
	}
	sub := c.newSubscriber(t, group)
	ch, err := sub.Subscribe(ctx, topic)
	if err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	first := c.receive(t, ch, false, func(got []*reliable.Delivery) bool { return len(got) == 1 })
	if err := first[0].Nack(ctx); err != nil {
		t.Fatalf("nack: %v", err)
	}
	again := c.receive(t, ch, true, func(got []*reliable.Delivery) bool { return len(got) == 1 })
	if again[0].Message.ID != msgs[0].ID {
		t.Fatalf("after nack got %s, want %s", again[0].Message.ID, msgs[0].ID)
	}
	if !again[0].Message.Delivery.Redelivered {
		t.Fatalf("nacked message redelivered without the Redelivered flag")
	}
}

func (c *suite) unknownTopicFails(t *testing.T) {
	pub := c.newPublisher(t)
	ctx, cancel := context.WithTimeout(context.Background(), c.Timeout)
	defer cancel()
	err := pub.Publish(ctx, &reliable.Message{Topic: uniqueName(t) + "-never-created", Payload: []byte("x")})
	if !errors.Is(err, reliable.ErrUnknownTopic) && !errors.Is(err, reliable.ErrUnroutable) {
		t.Fatalf("publish to an unknown topic: %v, want ErrUnknownTopic or ErrUnroutable", err)
	}
}

// persistentAcrossRestart: L02, confirmed messages survive a broker restart.
func (c *suite) persistentAcrossRestart(t *testing.T) {
	ctx := c.ctx(t)
	topic, group := uniqueName(t), "g"
	c.CreateTopic(t, topic, group)
	pub := c.newPublisher(t)
	msgs := makeMessages(topic, 50, 5)
	if err := pub.Publish(ctx, msgs...); err != nil {
		t.Fatalf("publish: %v", err)
	}
	if err := c.RestartBroker(ctx); err != nil {
		t.Fatalf("restart broker: %v", err)
	}
	sub := c.newSubscriber(t, group)
	ch, err := sub.Subscribe(ctx, topic)
	if err != nil {
		t.Fatalf("subscribe after restart: %v", err)
	}
	c.receive(t, ch, true, haveAll(idsOf(msgs)))
}
