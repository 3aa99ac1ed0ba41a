package consumer_test

import (
	"context"
	"errors"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/IBM/sarama"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/adapters/kafka"
	"github.com/reliable-go/reliable/adapters/rabbitmq"
	"github.com/reliable-go/reliable/consumer"
	"github.com/reliable-go/reliable/internal/testenv"
)

// Integration tests of the consumer as a new user configures it: every
// optional field at its zero value (no retry table, no dedupe store, no
// dead-letter path), on the real brokers.

// outOfOrder counts applications that came before an earlier event of
// their key, and the messages of want never applied.
func (l *ledger) outOfOrder(want []*reliable.Message) (reordered, lost, twice int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.seq {
		high := -1
		for _, n := range s {
			if n < high {
				reordered++
			}
			high = max(high, n)
		}
	}
	for _, m := range want {
		switch n := l.applied[m.ID]; {
		case n == 0:
			lost++
		case n > 1:
			twice++
		}
	}
	return reordered, lost, twice
}

// outageHandler fails every call for the given time from the first call
// on (a downstream outage), then applies to led.
func outageHandler(led *ledger, outage time.Duration, failures *atomic.Int64) reliable.Handler {
	var start atomic.Int64
	return reliable.HandlerFunc(func(_ context.Context, m *reliable.Message) error {
		start.CompareAndSwap(0, time.Now().UnixNano())
		if time.Since(time.Unix(0, start.Load())) < outage {
			failures.Add(1)
			return errors.New("kitchen database unavailable")
		}
		led.apply(m)
		return nil
	})
}

func TestDownstreamOutageWithoutRetryTable(t *testing.T) {
	// L09: with the consumer config at its zero value (no retry table), a
	// 4-second downstream outage made the consumer nack messages whose inline
	// attempts had failed while their keys' later messages were applied:
	// 64-179 of 2,000 events out of order on Kafka, 2-5 on RabbitMQ. Each
	// failing message must now hold its key until it succeeds.
	if testing.Short() {
		t.Skip("integration test")
	}
	const n, keys = 2000, 20
	const outage = 4 * time.Second
	check := func(t *testing.T, led *ledger, msgs []*reliable.Message, failures int64) {
		reordered, lost, twice := led.outOfOrder(msgs)
		t.Logf("%d events, %d failed calls during the outage: %d out of order, %d lost, %d applied twice", n, failures, reordered, lost, twice)
		if failures == 0 || reordered != 0 || lost != 0 || twice != 0 {
			t.Fatalf("want failures during the outage and 0 out of order, 0 lost, 0 twice")
		}
	}

	t.Run("kafka", func(t *testing.T) {
		brokers := testenv.Kafka(t)
		topic := testenv.UniqueName(t, "outage")
		testenv.CreateTopic(t, brokers, topic, 3)
		msgs := publishOrders(t, brokers, topic, n, keys)
		led := newLedger()
		var failures atomic.Int64
		c, err := kafka.NewConsumer(kafka.Config{Brokers: brokers, Logger: quiet,
			Consumer: kafka.ConsumerConfig{Group: shortName("kitchen_")}},
			outageHandler(led, outage, &failures), consumer.Config{Topic: topic, Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		runUntil(t, c, 2*time.Minute, func() bool { return led.count() == n })
		check(t, led, msgs, failures.Load())
	})

	t.Run("rabbitmq", func(t *testing.T) {
		url := testenv.AMQPURL(t)
		ctx := testenv.Context(t, 3*time.Minute)
		topic := testenv.UniqueName(t, "outage")
		group := shortName("kitchen_")
		if err := rabbitmq.Declare(ctx, url, topic, []string{group}); err != nil {
			t.Fatal(err)
		}
		msgs := publishRabbitOrders(t, ctx, url, topic, n, keys)
		led := newLedger()
		var failures atomic.Int64
		c, err := rabbitmq.NewConsumer(url, group, outageHandler(led, outage, &failures),
			consumer.Config{Topic: topic, Logger: quiet}, rabbitmq.WithLogger(quiet))
		if err != nil {
			t.Fatal(err)
		}
		runUntil(t, c, 2*time.Minute, func() bool { return led.count() == n })
		check(t, led, msgs, failures.Load())
	})
}

// runUntil runs c until done reports true (or fails t after timeout), then
// stops it and checks Run's error.
func runUntil(t *testing.T, c *consumer.Consumer, timeout time.Duration, done func() bool) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- c.Run(ctx) }()
	deadline := time.Now().Add(timeout)
	for !done() && time.Now().Before(deadline) {
		select {
		case err := <-errc:
			cancel()
			t.Fatalf("Run ended early: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	cancel()
	if err := <-errc; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if !done() {
		t.Fatalf("not done after %s", timeout)
	}
}

func TestKafkaPoisonWithoutDeadLetterPath(t *testing.T) {
	// The zero-value config on Kafka, one poison message (the handler returns
	// reliable.Permanent) among 60 good ones on 3 partitions. Before, each
	// nack ended the whole group session: in 20 s the poison message was
	// handled 18 times and the 60 good ones 135 times. Now nothing is
	// skipped and nothing else repeats: the poison message holds only its
	// key (reported by Blocked), every other message is handled once, and
	// the committed offset of its partition stays before it.
	if testing.Short() {
		t.Skip("integration test")
	}
	brokers := testenv.Kafka(t)
	topic := testenv.UniqueName(t, "poison")
	testenv.CreateTopic(t, brokers, topic, 3)
	msgs := publishOrders(t, brokers, topic, 61, 20) // keys order-0..19, seq 0..3
	poison := msgs[20]                               // order-0, seq 1
	group := shortName("kitchen_")

	var poisonCalls, goodCalls atomic.Int64
	led := newLedger()
	var poisonAt atomic.Pointer[reliable.DeliveryInfo]
	h := reliable.HandlerFunc(func(_ context.Context, m *reliable.Message) error {
		if m.ID == poison.ID {
			info := m.Delivery
			poisonAt.Store(&info)
			poisonCalls.Add(1)
			return reliable.Permanent(errors.New("payload does not parse"))
		}
		goodCalls.Add(1)
		led.apply(m)
		return nil
	})
	c, err := kafka.NewConsumer(kafka.Config{Brokers: brokers, Logger: quiet,
		Consumer: kafka.ConsumerConfig{Group: group}}, h, consumer.Config{Topic: topic, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	// Every good message but order-0's two after the poison one.
	const wantGood = 61 - 1 - 2
	var blocked []consumer.BlockedKey
	runUntil(t, c, time.Minute, func() bool {
		if led.count() < wantGood || poisonCalls.Load() < 3 {
			return false
		}
		if blocked == nil { // runUntil asks again after Run returned
			blocked = c.Blocked()
		}
		return true
	})
	t.Logf("poison handled %d times, good messages %d times (%d distinct)", poisonCalls.Load(), goodCalls.Load(), led.count())
	if goodCalls.Load() != wantGood || led.count() != wantGood {
		t.Fatalf("good messages handled %d times (%d distinct), want each of %d once", goodCalls.Load(), led.count(), wantGood)
	}
	led.mu.Lock()
	got := led.seq["order-0"]
	led.mu.Unlock()
	if len(got) != 1 || got[0] != 0 {
		t.Fatalf("order-0 applied %v, want only seq 0: its later events wait behind the poison one", got)
	}
	if len(blocked) != 1 || blocked[0].Key != "order-0" || blocked[0].MessageID != poison.ID {
		t.Fatalf("Blocked() = %+v, want order-0 waiting for the poison message", blocked)
	}
	at := poisonAt.Load()
	adm := testenv.ClusterAdmin(t, brokers)
	resp, err := adm.ListConsumerGroupOffsets(group, map[string][]int32{topic: {at.Partition}})
	if err != nil {
		t.Fatal(err)
	}
	if b := resp.GetBlock(topic, at.Partition); b == nil || b.Offset > at.Offset {
		t.Fatalf("committed %+v on partition %d, past the poison message at offset %d", b, at.Partition, at.Offset)
	}
}

func TestKafkaPoisonToDeadLetterTopic(t *testing.T) {
	// With kafka.ConsumerConfig.DeadLetterTopic set (and no retry table), a
	// poison message is published durably to the dead-letter topic with the
	// cause and its origin, its key's later events go on, and the offsets
	// are committed past it: nothing needs PostgreSQL.
	if testing.Short() {
		t.Skip("integration test")
	}
	brokers := testenv.Kafka(t)
	topic := testenv.UniqueName(t, "poison")
	dlt := topic + ".dlt"
	testenv.CreateTopic(t, brokers, topic, 3)
	testenv.CreateTopic(t, brokers, dlt, 1)
	msgs := publishOrders(t, brokers, topic, 61, 20)
	poison := msgs[20] // order-0, seq 1
	group := shortName("kitchen_")
	led := newLedger()
	var poisonCalls atomic.Int64
	var poisonAt atomic.Pointer[reliable.DeliveryInfo]
	h := reliable.HandlerFunc(func(_ context.Context, m *reliable.Message) error {
		if m.ID == poison.ID {
			info := m.Delivery
			poisonAt.Store(&info)
			poisonCalls.Add(1)
			return reliable.Permanent(errors.New("payload does not parse"))
		}
		led.apply(m)
		return nil
	})
	c, err := kafka.NewConsumer(kafka.Config{Brokers: brokers, Logger: quiet,
		Consumer: kafka.ConsumerConfig{Group: group, DeadLetterTopic: dlt}}, h, consumer.Config{Topic: topic, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	runUntil(t, c, time.Minute, func() bool { return led.count() == 60 && poisonCalls.Load() == 1 })
	if poisonCalls.Load() != 1 {
		t.Fatalf("poison handled %d times, want once", poisonCalls.Load())
	}
	if reordered, lost, twice := led.outOfOrder(without(msgs, poison.ID)); reordered+lost+twice != 0 {
		t.Fatalf("%d out of order, %d lost, %d twice", reordered, lost, twice)
	}

	// The dead-letter record: same ID and key, the cause and origin headers.
	r := readFirst(t, brokers, dlt)
	hs := make(map[string]string)
	for _, h := range r.Headers {
		hs[string(h.Key)] = string(h.Value)
	}
	at := poisonAt.Load()
	if string(r.Key) != poison.Key || hs[reliable.HeaderID] != poison.ID ||
		hs[kafka.HeaderDeadLetterCause] != "payload does not parse" || hs[kafka.HeaderDeadLetterTopic] != topic ||
		hs[kafka.HeaderDeadLetterPartition] != strconv.Itoa(int(at.Partition)) || hs[kafka.HeaderDeadLetterOffset] != strconv.FormatInt(at.Offset, 10) {
		t.Fatalf("dead-letter record key %q headers %v; poison %s at %d/%d", r.Key, hs, poison.ID, at.Partition, at.Offset)
	}
	adm := testenv.ClusterAdmin(t, brokers)
	resp, err := adm.ListConsumerGroupOffsets(group, map[string][]int32{topic: {at.Partition}})
	if err != nil {
		t.Fatal(err)
	}
	if b := resp.GetBlock(topic, at.Partition); b == nil || b.Offset <= at.Offset {
		t.Fatalf("committed %+v on partition %d, want past the dead-lettered offset %d", b, at.Partition, at.Offset)
	}
}

// without returns msgs less the one with the given ID.
func without(msgs []*reliable.Message, id string) []*reliable.Message {
	out := make([]*reliable.Message, 0, len(msgs))
	for _, m := range msgs {
		if m.ID != id {
			out = append(out, m)
		}
	}
	return out
}

// readFirst returns the first record of partition 0 of topic.
func readFirst(t *testing.T, brokers []string, topic string) *sarama.ConsumerMessage {
	t.Helper()
	c, err := sarama.NewConsumer(brokers, testenv.SaramaConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	pc, err := c.ConsumePartition(topic, 0, sarama.OffsetOldest)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	select {
	case r := <-pc.Messages():
		return r
	case <-time.After(30 * time.Second):
		t.Fatalf("no record in %s after 30s", topic)
		return nil
	}
}

func TestRabbitMQPoisonToDeadLetterQueueOnTheDefaults(t *testing.T) {
	// rabbitmq.NewConsumer with the zero-value config: a poison message goes
	// to the group's dead-letter queue (confirmed, with its cause) instead of
	// being nacked, and its key's later events are applied once each, in order.
	if testing.Short() {
		t.Skip("integration test")
	}
	url := testenv.AMQPURL(t)
	ctx := testenv.Context(t, 2*time.Minute)
	topic := testenv.UniqueName(t, "poison")
	group := shortName("kitchen_")
	if err := rabbitmq.Declare(ctx, url, topic, []string{group}); err != nil {
		t.Fatal(err)
	}
	msgs := publishRabbitOrders(t, ctx, url, topic, 60, 20)
	poison := msgs[20] // order-0, seq 1
	led := newLedger()
	var poisonCalls atomic.Int64
	h := reliable.HandlerFunc(func(_ context.Context, m *reliable.Message) error {
		if m.ID == poison.ID {
			poisonCalls.Add(1)
			return reliable.Permanent(errors.New("payload does not parse"))
		}
		led.apply(m)
		return nil
	})
	var deadLettered atomic.Int64
	c, err := rabbitmq.NewConsumer(url, group, h, consumer.Config{Topic: topic, Logger: quiet,
		Observe: func(e consumer.Event) {
			if e.Outcome == consumer.OutcomeDeadLettered {
				deadLettered.Add(1)
			}
		}}, rabbitmq.WithLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	runUntil(t, c, time.Minute, func() bool { return led.count() == 59 && deadLettered.Load() == 1 })
	if poisonCalls.Load() != 1 {
		t.Fatalf("poison handled %d times, want once", poisonCalls.Load())
	}
	if reordered, lost, twice := led.outOfOrder(without(msgs, poison.ID)); reordered+lost+twice != 0 {
		t.Fatalf("%d out of order, %d lost, %d twice", reordered, lost, twice)
	}
	conn, err := amqp.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	d, ok, err := ch.Get(rabbitmq.DeadLetterQueueName(topic, group), true)
	if err != nil || !ok {
		t.Fatalf("dead-letter queue: ok %v, err %v", ok, err)
	}
	if d.MessageId != poison.ID || d.Headers[rabbitmq.HeaderDeadLetterCause] != "payload does not parse" {
		t.Fatalf("dead letter id %q headers %v", d.MessageId, d.Headers)
	}
}

func TestKafkaRebalanceDoesNotWaitForAHeldKey(t *testing.T) {
	// A key held by a failing message (no retry table) never settles, so a
	// revoked partition's drain waited Consumer.DrainTimeout (30 s) for it,
	// and the whole group's rebalance with it. The held delivery now sees it
	// went stale and is released within a second; the new member gets work
	// at once, and the key's events are applied in order once the handler
	// succeeds again.
	if testing.Short() {
		t.Skip("integration test")
	}
	brokers := testenv.Kafka(t)
	topic := testenv.UniqueName(t, "heldrebalance")
	testenv.CreateTopic(t, brokers, topic, 4)
	group := shortName("kitchen_")
	msgs := publishOrders(t, brokers, topic, 20, 10) // order-0..9, seq 0..1
	led := newLedger()
	var failing atomic.Bool
	failing.Store(true)
	var handledByB atomic.Int64
	handler := func(isB bool) reliable.Handler {
		return reliable.HandlerFunc(func(_ context.Context, m *reliable.Message) error {
			if m.Key == "order-0" && failing.Load() {
				return errors.New("kitchen printer offline")
			}
			if isB {
				handledByB.Add(1)
			}
			led.apply(m)
			return nil
		})
	}
	start := func(isB bool) (*consumer.Consumer, func()) {
		c, err := kafka.NewConsumer(kafka.Config{Brokers: brokers, Logger: quiet,
			Consumer: kafka.ConsumerConfig{Group: group}}, handler(isB), consumer.Config{Topic: topic, Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- c.Run(ctx) }()
		return c, func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		}
	}
	a, stopA := start(false)
	defer stopA()
	eventually(t, time.Minute, "the other keys applied, order-0 held", func() bool {
		return led.count() == 18 && len(a.Blocked()) == 1
	})

	pub, err := kafka.NewProducer(kafka.Config{Brokers: brokers, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	joined := time.Now()
	_, stopB := start(true)
	defer stopB()
	// Keep the other keys busy until the new member handles one of them.
	all := append([]*reliable.Message(nil), msgs...)
	for seq := 2; handledByB.Load() == 0; seq++ {
		if time.Since(joined) > time.Minute {
			t.Fatal("the new member got no work in a minute")
		}
		round := make([]*reliable.Message, 0, 9)
		for k := 1; k < 10; k++ {
			round = append(round, &reliable.Message{Topic: topic, Key: "order-" + strconv.Itoa(k),
				Headers: map[string]string{"seq": strconv.Itoa(seq)}})
		}
		if err := pub.Publish(context.Background(), round...); err != nil {
			t.Fatal(err)
		}
		all = append(all, round...)
		time.Sleep(200 * time.Millisecond)
	}
	took := time.Since(joined)
	t.Logf("the new member handled its first event %s after joining", took.Round(time.Millisecond))
	if took > 15*time.Second {
		t.Fatalf("the rebalance took %s: it waited for the held key", took)
	}
	failing.Store(false)
	eventually(t, time.Minute, "everything applied", func() bool { return led.count() == len(all) })
	if reordered, lost, twice := led.outOfOrder(all); reordered+lost+twice != 0 {
		t.Fatalf("%d out of order, %d lost, %d twice", reordered, lost, twice)
	}
}
