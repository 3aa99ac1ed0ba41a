package reliabletest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/reliable-go/reliable"
)

// The cases of RunConformance. Each uses its own topic and groups. Where a
// case checks that something is NOT delivered again, it publishes one marker
// per key afterwards and waits for the markers: where order per key holds, a
// repeat would arrive before its key's marker, so no fixed sleep is needed
// (adapters without OrderPerKey also get a quiet period, see noMore).

func (c *suite) publishAndReceive(t *testing.T) {
	ctx := c.ctx(t)
	topic := uniqueName(t)
	group := topic + "-g"
	c.CreateTopic(t, topic, group)
	pub := c.newPublisher(t)
	sub := c.newSubscriber(t, group)
	ch := c.subscribe(t, ctx, sub, topic)
	msgs := makeMessages(topic, 50, 5)
	c.publish(t, ctx, pub, msgs...)
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
	c.CreateTopic(t, topic, topic+"-g")
	pub := c.newPublisher(t)
	msgs := makeMessages(topic, 3, 1)
	msgs[0].ID = "caller-chosen-id"
	c.publish(t, ctx, pub, msgs...)
	if msgs[0].ID != "caller-chosen-id" {
		t.Fatalf("publish replaced the caller's ID with %q", msgs[0].ID)
	}
	if msgs[1].ID == "" || msgs[1].ID == msgs[2].ID {
		t.Fatalf("publish did not assign unique IDs: %q, %q", msgs[1].ID, msgs[2].ID)
	}
}

func (c *suite) concurrentPublishers(t *testing.T) {
	ctx := c.ctx(t)
	topic := uniqueName(t)
	group := topic + "-g"
	c.CreateTopic(t, topic, group)
	pub := c.newPublisher(t)
	var all []*reliable.Message
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for w := 0; w < 4; w++ {
		msgs := makeKeyed(topic, fmt.Sprintf("w%d", w), 50, 10, 0)
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
	ch := c.subscribe(t, ctx, sub, topic)
	c.receive(t, ch, true, haveAll(idsOf(all)))
}

// unsettledRedelivered: a consumer that stops before settling loses nothing
// (L01, L04, L05): the next subscriber of the group gets every unacked
// message, flagged Redelivered where the adapter promises it.
func (c *suite) unsettledRedelivered(t *testing.T) {
	ctx := c.ctx(t)
	topic := uniqueName(t)
	group := topic + "-g"
	c.CreateTopic(t, topic, group)
	pub := c.newPublisher(t)
	msgs := makeMessages(topic, 20, 1)
	c.publish(t, ctx, pub, msgs...)
	first := c.newSubscriber(t, group)
	subCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch := c.subscribe(t, subCtx, first, topic)
	got := c.receive(t, ch, false, haveN(20))
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
	ch2 := c.subscribe(t, ctx, second, topic)
	redelivered := c.receive(t, ch2, true, haveAll(unacked))
	c.checkRedelivered(t, redelivered, func(id string) bool { return !acked[id] }, "received but not acked by the first subscriber")
}

// checkRedelivered checks that the first delivery of each message for which
// want is true is flagged Redelivered, where the adapter promises it, and
// logs how many were not otherwise.
func (c *suite) checkRedelivered(t *testing.T, got []*reliable.Delivery, want func(id string) bool, what string) {
	t.Helper()
	seen := map[string]bool{}
	unflagged := 0
	for _, d := range got {
		id := d.Message.ID
		if seen[id] || !want(id) {
			continue
		}
		seen[id] = true
		if !d.Message.Delivery.Redelivered {
			unflagged++
			if c.RedeliveredAcrossSubscribers && unflagged <= 5 {
				t.Errorf("message %s, %s, came again without the Redelivered flag", id, what)
			}
		}
	}
	switch {
	case unflagged > 0 && c.RedeliveredAcrossSubscribers:
		t.Errorf("%d of %d messages %s came again without the Redelivered flag", unflagged, len(seen), what)
	case unflagged > 0:
		t.Logf("%d of %d messages %s came again without the Redelivered flag (not promised across subscribers)", unflagged, len(seen), what)
	}
}

// ackedNotRedeliveredAfterClose: an ack has an effect (L04): after a clean
// Close the next subscriber of the group does not get acked messages again.
func (c *suite) ackedNotRedeliveredAfterClose(t *testing.T) {
	ctx := c.ctx(t)
	topic := uniqueName(t)
	group := topic + "-g"
	const keys = 8
	c.CreateTopic(t, topic, group)
	pub := c.newPublisher(t)
	msgs := makeMessages(topic, 40, keys)
	c.publish(t, ctx, pub, msgs...)

	first := c.NewSubscriber(t, group)
	subCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch := c.subscribe(t, subCtx, first, topic)
	c.receive(t, ch, true, haveAll(idsOf(msgs)))
	if err := first.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	cancel()

	c.expectOnly(t, ctx, pub, topic, group, keys, nil, idSet(msgs), "acked, then the subscriber closed")
}

// expectOnly publishes one marker per key, subscribes a new member of group
// and reads until it has every message of want and every marker, failing
// the case for each delivery of a forbidden message. It returns the
// deliveries.
func (c *suite) expectOnly(t *testing.T, ctx context.Context, pub reliable.Publisher, topic, group string, keys int, want []string, forbidden map[string]bool, why string) []*reliable.Delivery {
	t.Helper()
	mk := markers(topic, "key", keys)
	c.publish(t, ctx, pub, mk...)
	sub := c.newSubscriber(t, group)
	subCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch := c.subscribe(t, subCtx, sub, topic)
	got := c.receive(t, ch, true, haveAll(append(append([]string(nil), want...), idsOf(mk)...)))
	got = append(got, c.noMore(t, ch)...)
	repeats := 0
	for _, d := range got {
		if forbidden[d.Message.ID] {
			repeats++
			if repeats <= 5 {
				t.Errorf("message %s (key %s, seq %s) delivered again: it was %s", d.Message.ID, d.Message.Key, d.Message.Headers["x-seq"], why)
			}
		}
	}
	if repeats > 0 {
		t.Errorf("%d deliveries of messages that were %s", repeats, why)
	}
	return got
}

// noMore, for adapters without OrderPerKey (where markers prove nothing),
// reads ch for a quiet period and returns what came; with OrderPerKey it
// returns nothing at once.
func (c *suite) noMore(t *testing.T, ch <-chan *reliable.Delivery) []*reliable.Delivery {
	if c.OrderPerKey {
		return nil
	}
	quiet := min(c.Timeout/10, 3*time.Second)
	timer := time.NewTimer(quiet)
	defer timer.Stop()
	var got []*reliable.Delivery
	for {
		select {
		case d, ok := <-ch:
			if !ok {
				return got
			}
			got = append(got, d)
			_ = d.Ack(context.Background())
		case <-timer.C:
			return got
		}
	}
}

func (c *suite) publishAfterClose(t *testing.T) {
	topic := uniqueName(t)
	c.CreateTopic(t, topic, topic+"-g")
	pub := c.NewPublisher(t)
	if err := pub.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	err := pub.Publish(c.ctx(t), makeMessages(topic, 1, 1)...)
	if !errors.Is(err, reliable.ErrClosed) {
		t.Fatalf("publish after close: %v, want ErrClosed", err)
	}
}

// publishCanceledContext: a publish whose context has ended returns at once
// with context.Canceled; it must not report success, nor block.
func (c *suite) publishCanceledContext(t *testing.T) {
	topic := uniqueName(t)
	c.CreateTopic(t, topic, topic+"-g")
	pub := c.newPublisher(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	start := time.Now()
	err := pub.Publish(ctx, makeMessages(topic, 1, 1)...)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("publish with a canceled context: %v, want context.Canceled", err)
	}
	if time.Since(start) > c.Timeout {
		t.Fatalf("publish with a canceled context took %s", time.Since(start))
	}
}

func (c *suite) subscriptionEndsWithContext(t *testing.T) {
	topic := uniqueName(t)
	group := topic + "-g"
	c.CreateTopic(t, topic, group)
	sub := c.newSubscriber(t, group)
	ctx, cancel := context.WithCancel(context.Background())
	ch := c.subscribe(t, ctx, sub, topic)
	cancel()
	c.waitClosed(t, ch, "the context ended")
}

// waitClosed reads ch until it closes, failing t after the timeout.
func (c *suite) waitClosed(t *testing.T, ch <-chan *reliable.Delivery, after string) {
	t.Helper()
	timer := time.NewTimer(c.Timeout)
	defer timer.Stop()
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-timer.C:
			t.Fatalf("delivery channel still open %s after %s", c.Timeout, after)
		}
	}
}

// within runs f and fails t unless it returns within the timeout.
func (c *suite) within(t *testing.T, what string, f func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		return err
	case <-time.After(c.Timeout):
		t.Fatalf("%s did not return within %s", what, c.Timeout)
		return nil
	}
}

// channelClosesOnClose: Close ends a live subscription: its channel closes
// although the Subscribe context is still alive.
func (c *suite) channelClosesOnClose(t *testing.T) {
	ctx := c.ctx(t)
	topic := uniqueName(t)
	group := topic + "-g"
	c.CreateTopic(t, topic, group)
	pub := c.newPublisher(t)
	sub := c.newSubscriber(t, group)
	ch := c.subscribe(t, ctx, sub, topic)
	c.publish(t, ctx, pub, makeMessages(topic, 5, 1)...)
	c.receive(t, ch, true, haveN(1)) // the subscription is live
	closed := make(chan error, 1)
	go func() { closed <- sub.Close() }()
	c.waitClosed(t, ch, "Close")
	if err := c.within(t, "Close", func() error { return <-closed }); err != nil {
		t.Fatalf("close: %v", err)
	}
}

// concurrentClose: Close of a subscriber and of a publisher, called from
// several goroutines at once while messages flow, returns (no deadlock, no
// panic) without error; afterwards both refuse work with ErrClosed.
func (c *suite) concurrentClose(t *testing.T) {
	ctx := c.ctx(t)
	topic := uniqueName(t)
	group := topic + "-g"
	c.CreateTopic(t, topic, group)
	pub := c.NewPublisher(t)
	sub := c.NewSubscriber(t, group)
	ch := c.subscribe(t, ctx, sub, topic)
	c.publish(t, ctx, pub, makeMessages(topic, 20, 4)...)
	var closing atomic.Bool
	ev := newEvents()
	cs := consume(ev, "subscriber", ch, func(d *reliable.Delivery) error {
		if err := d.Ack(ctx); err != nil && !closing.Load() {
			return fmt.Errorf("ack before Close: %w", err)
		}
		return nil
	})
	c.waitAll(t, ev, "a first delivery", haveN(1), cs)

	start := make(chan struct{})
	errs := make(chan error, 10)
	var wg sync.WaitGroup
	for i := 0; i < 5; i++ {
		wg.Add(2)
		go func() { defer wg.Done(); <-start; errs <- sub.Close() }()
		go func() { defer wg.Done(); <-start; errs <- pub.Close() }()
	}
	closing.Store(true)
	close(start)
	c.within(t, "5 concurrent Close calls of a subscriber and of a publisher", func() error { wg.Wait(); return nil })
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("concurrent close: %v", err)
		}
	}
	select {
	case <-cs.done:
	case <-time.After(c.Timeout):
		t.Fatalf("delivery channel still open %s after Close", c.Timeout)
	}
	if _, err := sub.Subscribe(ctx, topic); !errors.Is(err, reliable.ErrClosed) {
		t.Errorf("subscribe after close: %v, want ErrClosed", err)
	}
	if err := pub.Publish(ctx, makeMessages(topic, 1, 1)...); !errors.Is(err, reliable.ErrClosed) {
		t.Errorf("publish after close: %v, want ErrClosed", err)
	}
}

// twoTopicsOneSubscriber: one subscriber consumes two topics at once; each
// channel gets every message of its topic and none of the other.
func (c *suite) twoTopicsOneSubscriber(t *testing.T) {
	ctx := c.ctx(t)
	t1, t2 := uniqueName(t), uniqueName(t)
	group := t1 + "-g"
	c.CreateTopic(t, t1, group)
	c.CreateTopic(t, t2, group)
	pub := c.newPublisher(t)
	sub := c.newSubscriber(t, group)
	ev := newEvents()
	var cs []*consumer
	var want [][]*reliable.Message
	for _, topic := range []string{t1, t2} {
		ch := c.subscribe(t, ctx, sub, topic)
		cs = append(cs, consume(ev, topic, ch, func(d *reliable.Delivery) error {
			if d.Message.Topic != topic {
				return fmt.Errorf("message %s of topic %q delivered on the subscription of %q", d.Message.ID, d.Message.Topic, topic)
			}
			return ackAll(d)
		}))
		msgs := makeMessages(topic, 20, 4)
		c.publish(t, ctx, pub, msgs...)
		want = append(want, msgs)
	}
	for i := range cs {
		c.waitAll(t, ev, "every message of "+want[i][0].Topic, haveAll(idsOf(want[i])), cs[i])
	}
}

// twoGroupsEachGetAll: two consumer groups of one topic each get every
// message; one group's acks do not settle the other's.
func (c *suite) twoGroupsEachGetAll(t *testing.T) {
	ctx := c.ctx(t)
	topic := uniqueName(t)
	g1, g2 := topic+"-g1", topic+"-g2"
	c.CreateTopic(t, topic, g1, g2)
	pub := c.newPublisher(t)
	msgs := makeMessages(topic, 50, 5)
	c.publish(t, ctx, pub, msgs...)
	ev := newEvents()
	var cs []*consumer
	for _, g := range []string{g1, g2} {
		sub := c.newSubscriber(t, g)
		cs = append(cs, consume(ev, g, c.subscribe(t, ctx, sub, topic), ackAll))
	}
	for i, g := range []string{g1, g2} {
		c.waitAll(t, ev, "every message in group "+g, haveAll(idsOf(msgs)), cs[i])
	}
}

// shutdownWithWorkInFlight: Close while handlers still settle deliveries
// (L05): Close returns, messages acked before Close are not delivered again,
// and every message not acked reaches the next subscriber: nothing is lost.
func (c *suite) shutdownWithWorkInFlight(t *testing.T) {
	ctx := c.ctx(t)
	topic := uniqueName(t)
	group := topic + "-g"
	const keys = 6
	c.CreateTopic(t, topic, group)
	pub := c.newPublisher(t)
	msgs := makeMessages(topic, 60, keys)
	c.publish(t, ctx, pub, msgs...)

	first := c.NewSubscriber(t, group)
	subCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch := c.subscribe(t, subCtx, first, topic)
	got := c.receive(t, ch, false, haveN(30))
	ackedBefore := map[string]bool{}
	for _, d := range got[:10] {
		if err := d.Ack(ctx); err != nil {
			t.Fatalf("ack: %v", err)
		}
		ackedBefore[d.Message.ID] = true
	}
	// The other 20 are in flight: their handlers finish while Close runs.
	var mu sync.Mutex
	ackedDuring := map[string]bool{}
	settled := make(chan struct{})
	go func() {
		defer close(settled)
		for _, d := range got[10:] {
			if err := d.Ack(ctx); err == nil {
				mu.Lock()
				ackedDuring[d.Message.ID] = true
				mu.Unlock()
			}
			time.Sleep(time.Millisecond) // a handler's work; spreads the acks over Close
		}
	}()
	if err := c.within(t, "Close with deliveries in flight", first.Close); err != nil {
		t.Fatalf("close with deliveries in flight: %v", err)
	}
	<-settled
	cancel()

	var want []string
	for _, m := range msgs {
		if !ackedBefore[m.ID] && !ackedDuring[m.ID] {
			want = append(want, m.ID)
		}
	}
	// Acks that returned nil during Close may or may not have taken effect;
	// their messages may come again. Those acked before Close may not.
	c.expectOnly(t, ctx, pub, topic, group, keys, want, ackedBefore, "acked before Close")
}

// orderPerKey: L08, one key's messages arrive in publish order.
func (c *suite) orderPerKey(t *testing.T) {
	ctx := c.ctx(t)
	topic := uniqueName(t)
	group := topic + "-g"
	c.CreateTopic(t, topic, group)
	pub := c.newPublisher(t)
	msgs := makeMessages(topic, 1000, 20)
	for i := 0; i < len(msgs); i += 100 {
		c.publish(t, ctx, pub, msgs[i:i+100]...)
	}
	sub := c.newSubscriber(t, group)
	ch := c.subscribe(t, ctx, sub, topic)
	got := c.receive(t, ch, true, haveAll(idsOf(msgs)))
	last := make(map[string]int)
	for _, d := range got {
		seq := seqOf(t, d.Message)
		if prev, ok := last[d.Message.Key]; ok && seq <= prev {
			t.Fatalf("key %s: seq %d delivered after %d", d.Message.Key, seq, prev)
		}
		last[d.Message.Key] = seq
	}
}

// applyAndAck is a consumer policy: a stale delivery (another member owns
// it now) is left alone, any other is applied to the ledger and acked.
func applyAndAck(led *ledger) func(*reliable.Delivery) error {
	return func(d *reliable.Delivery) error {
		if d.Stale() {
			return nil
		}
		if err := led.apply(d.Message); err != nil {
			return err
		}
		return ackAll(d)
	}
}

// orderPerKeyManySubscribers: L08 with ten subscribers of one group on the
// broker's default topology: applied in publish order per key, every
// message applied.
func (c *suite) orderPerKeyManySubscribers(t *testing.T) {
	ctx := c.ctx(t)
	topic := uniqueName(t)
	group := topic + "-g"
	c.CreateTopic(t, topic, group)
	pub := c.newPublisher(t)
	led := newLedger()
	ev := newEvents()
	var cs []*consumer
	for i := 0; i < 10; i++ {
		sub := c.newSubscriber(t, group)
		cs = append(cs, consume(ev, fmt.Sprintf("subscriber %d", i), c.subscribe(t, ctx, sub, topic), applyAndAck(led)))
	}
	msgs := makeMessages(topic, 1000, 20)
	for i := 0; i < len(msgs); i += 100 {
		c.publish(t, ctx, pub, msgs[i:i+100]...)
	}
	ids := idsOf(msgs)
	c.waitAll(t, ev, "every message applied", func([]*reliable.Delivery) bool { return led.has(ids) }, cs...)
	applied, repeats, ooo := led.verdict()
	per := make([]int, len(cs))
	for i, x := range cs {
		got, _ := x.snapshot()
		per[i] = len(got)
	}
	t.Logf("10 subscribers: %d applied, %d repeats, %d out of order; deliveries per subscriber %v", applied, repeats, len(ooo), per)
	if len(ooo) > 0 {
		t.Fatalf("%d messages applied out of order with 10 subscribers, first: %v", len(ooo), ooo[0])
	}
}

// competingConsumers: two subscribers of one group share the work: each
// receives a part, together they receive everything, every ack succeeds.
func (c *suite) competingConsumers(t *testing.T) {
	ctx := c.ctx(t)
	topic := uniqueName(t)
	group := topic + "-g"
	c.CreateTopic(t, topic, group)
	pub := c.newPublisher(t)
	led := newLedger()
	ev := newEvents()
	var cs []*consumer
	for i := 0; i < 2; i++ {
		sub := c.newSubscriber(t, group)
		cs = append(cs, consume(ev, fmt.Sprintf("subscriber %d", i), c.subscribe(t, ctx, sub, topic), applyAndAck(led)))
	}
	// Publish rounds over 20 keys until both have received a share (a group
	// may still be forming when the first round arrives).
	var all []*reliable.Message
	deadline := time.Now().Add(c.Timeout)
	for round := 0; ; round++ {
		msgs := makeKeyed(topic, fmt.Sprintf("r%d", round), 20, 20, 0)
		c.publish(t, ctx, pub, msgs...)
		all = append(all, msgs...)
		ids := idsOf(all)
		c.waitAll(t, ev, "every message of the rounds so far", func([]*reliable.Delivery) bool { return led.has(ids) }, cs...)
		shared := true
		for _, x := range cs {
			if got, _ := x.snapshot(); len(got) == 0 {
				shared = false
			}
		}
		if shared {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %d rounds (%d messages) one subscriber of the group received nothing: the group does not share", round+1, len(all))
		}
	}
	per := make([]int, len(cs))
	for i, x := range cs {
		got, _ := x.snapshot()
		per[i] = len(got)
	}
	t.Logf("deliveries per subscriber: %v", per)
}

func (c *suite) nackRedelivers(t *testing.T) {
	ctx := c.ctx(t)
	topic := uniqueName(t)
	group := topic + "-g"
	c.CreateTopic(t, topic, group)
	pub := c.newPublisher(t)
	msgs := makeMessages(topic, 1, 1)
	c.publish(t, ctx, pub, msgs...)
	sub := c.newSubscriber(t, group)
	ch := c.subscribe(t, ctx, sub, topic)
	first := c.receive(t, ch, false, haveN(1))
	if err := first[0].Nack(ctx); err != nil {
		t.Fatalf("nack: %v", err)
	}
	again := c.receive(t, ch, true, haveN(1))
	if again[0].Message.ID != msgs[0].ID {
		t.Fatalf("after nack got %s, want %s", again[0].Message.ID, msgs[0].ID)
	}
	if !again[0].Message.Delivery.Redelivered {
		t.Fatalf("nacked message redelivered without the Redelivered flag")
	}
}

// nackMidStream: a subscriber nacks some messages in the middle of a
// stream; each comes again flagged Redelivered, every message is applied,
// and where the adapter promises OrderAfterNack the key's order holds
// across the redelivery.
func (c *suite) nackMidStream(t *testing.T) {
	ctx := c.ctx(t)
	topic := uniqueName(t)
	group := topic + "-g"
	c.CreateTopic(t, topic, group)
	pub := c.newPublisher(t)
	msgs := makeMessages(topic, 60, 3) // seq 0..19 per key
	c.publish(t, ctx, pub, msgs...)
	nackOnce := map[string]bool{}
	for _, m := range msgs {
		if s := seqOf(t, m); s%7 == 3 {
			nackOnce[m.ID] = true
		}
	}
	sub := c.newSubscriber(t, group)
	led := newLedger()
	var mu sync.Mutex
	nacked := map[string]bool{}
	redeliveredOK := map[string]bool{}
	ev := newEvents()
	cs := consume(ev, "subscriber", c.subscribe(t, ctx, sub, topic), func(d *reliable.Delivery) error {
		if d.Stale() {
			return nil
		}
		id := d.Message.ID
		mu.Lock()
		wasNacked := nacked[id]
		first := nackOnce[id] && !wasNacked
		if first {
			nacked[id] = true
		}
		if wasNacked && d.Message.Delivery.Redelivered {
			redeliveredOK[id] = true
		}
		mu.Unlock()
		if first {
			if err := d.Nack(ctx); err != nil {
				return fmt.Errorf("nack of %s: %w", id, err)
			}
			return nil
		}
		if err := led.apply(d.Message); err != nil {
			return err
		}
		return ackAll(d)
	})
	ids := idsOf(msgs)
	c.waitAll(t, ev, "every message applied", func([]*reliable.Delivery) bool { return led.has(ids) }, cs)
	mu.Lock()
	defer mu.Unlock()
	for id := range nackOnce {
		if !redeliveredOK[id] {
			t.Errorf("nacked message %s came again without the Redelivered flag", id)
		}
	}
	applied, repeats, ooo := led.verdict()
	t.Logf("%d nacked mid-stream; %d applied, %d repeats, %d out of order", len(nackOnce), applied, repeats, len(ooo))
	if len(ooo) > 0 {
		if c.OrderAfterNack {
			t.Errorf("%d messages applied out of order across a nack, first: %s", len(ooo), ooo[0])
		} else {
			t.Logf("out of order across a nack (OrderAfterNack is not claimed; the consumer package holds the key): %v", ooo[0])
		}
	}
}

// repeatedNacksAcrossSubscribers: one message nacked by three subscribers in
// turn (each then closes) keeps coming back, flagged Redelivered where
// promised, first of its key where OrderAfterNack is promised; once acked
// it is not delivered again.
func (c *suite) repeatedNacksAcrossSubscribers(t *testing.T) {
	ctx := c.ctx(t)
	topic := uniqueName(t)
	group := topic + "-g"
	c.CreateTopic(t, topic, group)
	pub := c.newPublisher(t)
	msgs := makeMessages(topic, 10, 1)
	c.publish(t, ctx, pub, msgs...)
	target := msgs[0].ID
	hasTarget := func(got []*reliable.Delivery) bool {
		for _, d := range got {
			if d.Message.ID == target {
				return true
			}
		}
		return false
	}
	for round := 0; round < 3; round++ {
		sub := c.NewSubscriber(t, group)
		subCtx, cancel := context.WithCancel(ctx)
		ch := c.subscribe(t, subCtx, sub, topic)
		got := c.receive(t, ch, false, hasTarget)
		d := got[len(got)-1]
		if c.OrderAfterNack && len(got) != 1 {
			t.Errorf("round %d: %d later messages of the key delivered before the nacked one came again", round, len(got)-1)
		}
		if round > 0 && !d.Message.Delivery.Redelivered {
			if c.RedeliveredAcrossSubscribers {
				t.Errorf("round %d: the message nacked by the previous subscriber came without the Redelivered flag", round)
			} else {
				t.Logf("round %d: no Redelivered flag across subscribers (not promised)", round)
			}
		}
		if err := d.Nack(ctx); err != nil {
			t.Fatalf("round %d: nack: %v", round, err)
		}
		if err := c.within(t, "Close", sub.Close); err != nil {
			t.Fatalf("round %d: close: %v", round, err)
		}
		cancel()
	}
	last := c.NewSubscriber(t, group)
	subCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch := c.subscribe(t, subCtx, last, topic)
	got := c.receive(t, ch, true, haveAll(idsOf(msgs)))
	for _, d := range got {
		if d.Message.ID == target && !d.Message.Delivery.Redelivered && c.RedeliveredAcrossSubscribers {
			t.Errorf("after three nacks the message came without the Redelivered flag")
		}
	}
	if err := last.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	cancel()
	c.expectOnly(t, ctx, pub, topic, group, 1, nil, idSet(msgs), "acked after the nacks")
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

// persistentAcrossRestart: L02, messages confirmed before the broker
// crashed (RestartBroker kills it) are all delivered after it is back.
func (c *suite) persistentAcrossRestart(t *testing.T) {
	ctx := c.ctx(t)
	topic := uniqueName(t)
	group := topic + "-g"
	c.CreateTopic(t, topic, group)
	pub := c.newPublisher(t)
	msgs := makeMessages(topic, 200, 10)
	for i := 0; i < len(msgs); i += 20 {
		c.publish(t, ctx, pub, msgs[i:i+20]...)
	}
	if err := c.RestartBroker(ctx); err != nil {
		t.Fatalf("restart broker: %v", err)
	}
	sub := c.newSubscriber(t, group)
	ch := c.subscribe(t, ctx, sub, topic)
	got := c.receive(t, ch, true, haveAll(idsOf(msgs)))
	t.Logf("all %d confirmed messages delivered after the crash (%d deliveries)", len(msgs), len(got))
}

// liveAcrossReconnect: a subscription and a publisher carry on across a
// broken connection (Reconnect, or a broker crash): the delivery channel
// stays open, messages published after it arrive on it, nothing is lost,
// and order per key holds where claimed.
func (c *suite) liveAcrossReconnect(t *testing.T) {
	reconnect := c.Reconnect
	if reconnect == nil {
		reconnect = c.RestartBroker
	}
	ctx := c.ctx(t)
	topic := uniqueName(t)
	group := topic + "-g"
	c.CreateTopic(t, topic, group)
	pub := c.newPublisher(t)
	sub := c.newSubscriber(t, group)
	led := newLedger()
	var ackErrs atomic.Int64
	ev := newEvents()
	cs := consume(ev, "subscriber", c.subscribe(t, ctx, sub, topic), func(d *reliable.Delivery) error {
		if d.Stale() {
			return nil
		}
		if err := led.apply(d.Message); err != nil {
			return err
		}
		// An ack lost with the connection is allowed: the message comes
		// again (a repeat), which the ledger absorbs.
		if err := d.Ack(ctx); err != nil {
			ackErrs.Add(1)
		}
		return nil
	})
	before := makeKeyed(topic, "key", 40, 4, 0)
	c.publish(t, ctx, pub, before...)
	ids := idsOf(before)
	c.waitAll(t, ev, "the messages published before the reconnect", func([]*reliable.Delivery) bool { return led.has(ids) }, cs)
	if err := reconnect(ctx); err != nil {
		t.Fatalf("reconnect: %v", err)
	}
	after := makeKeyed(topic, "key", 40, 4, 10)
	c.publish(t, ctx, pub, after...)
	ids = idsOf(after)
	c.waitAll(t, ev, "the messages published after the reconnect, on the same channel", func([]*reliable.Delivery) bool {
		cs.mu.Lock()
		closed := cs.closed
		cs.mu.Unlock()
		if closed {
			t.Fatalf("the delivery channel closed across the reconnect")
		}
		return led.has(ids)
	}, cs)
	applied, repeats, ooo := led.verdict()
	t.Logf("across the reconnect: %d applied, %d repeats, %d failed acks, %d out of order", applied, repeats, ackErrs.Load(), len(ooo))
	if c.OrderPerKey && len(ooo) > 0 {
		t.Fatalf("%d messages applied out of order across the reconnect, first: %s", len(ooo), ooo[0])
	}
}

// scale: 20 publishers x 10,000 messages through two subscribers of one
// group: nothing lost, order per key where claimed. Long suite only
// (EnvLong).
func (c *suite) scale(t *testing.T) {
	const publishers, perPublisher, batch = 20, 10_000, 100
	ctx, cancel := context.WithTimeout(context.Background(), 10*c.Timeout+10*time.Minute)
	defer cancel()
	topic := uniqueName(t)
	group := topic + "-g"
	c.CreateTopic(t, topic, group)
	led := newLedger()
	ev := newEvents()
	var cs []*consumer
	for i := 0; i < 2; i++ {
		sub := c.newSubscriber(t, group)
		cs = append(cs, consume(ev, fmt.Sprintf("subscriber %d", i), c.subscribe(t, ctx, sub, topic), applyAndAck(led)))
	}
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, publishers)
	for p := 0; p < publishers; p++ {
		pub := c.newPublisher(t)
		msgs := makeKeyed(topic, fmt.Sprintf("p%d", p), perPublisher, 10, 0)
		wg.Add(1)
		go func(msgs []*reliable.Message) {
			defer wg.Done()
			for i := 0; i < len(msgs); i += batch {
				if err := pub.Publish(ctx, msgs[i:i+batch]...); err != nil {
					errs <- err
					return
				}
			}
		}(msgs)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("publish: %v", err)
	}
	published := time.Since(start)
	want := publishers * perPublisher
	deadline, _ := ctx.Deadline()
	for {
		applied, _, _ := led.verdict()
		if applied >= want {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %d of %d messages applied", time.Since(start), applied, want)
		}
		select {
		case <-ev.wait():
		case <-time.After(time.Second):
		}
		for _, x := range cs {
			if _, err := x.snapshot(); err != nil {
				t.Fatal(err)
			}
		}
	}
	applied, repeats, ooo := led.verdict()
	t.Logf("%d messages: published in %s, all applied after %s; %d repeats, %d out of order",
		want, published.Round(time.Millisecond), time.Since(start).Round(time.Millisecond), repeats, len(ooo))
	if applied != want {
		t.Fatalf("%d distinct messages applied, want %d", applied, want)
	}
	if c.OrderPerKey && len(ooo) > 0 {
		t.Fatalf("%d messages applied out of order, first: %s", len(ooo), ooo[0])
	}
}
