package consumer_test

import (
	"context"
	"errors"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

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
		c, err := consumer.NewKafka(kafka.Config{Brokers: brokers, Logger: quiet,
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
		pub, err := rabbitmq.NewProducer(url)
		if err != nil {
			t.Fatal(err)
		}
		defer pub.Close()
		msgs := make([]*reliable.Message, n)
		for i := range msgs {
			msgs[i] = &reliable.Message{Topic: topic, Key: "order-" + strconv.Itoa(i%keys),
				Headers: map[string]string{"seq": strconv.Itoa(i / keys)}}
		}
		if err := pub.Publish(ctx, msgs...); err != nil {
			t.Fatal(err)
		}
		led := newLedger()
		var failures atomic.Int64
		c, err := consumer.NewRabbitMQ(url, group, outageHandler(led, outage, &failures),
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
