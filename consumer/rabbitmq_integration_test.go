package consumer_test

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/adapters/rabbitmq"
	"github.com/reliable-go/reliable/consumer"
	"github.com/reliable-go/reliable/internal/testenv"
	"github.com/reliable-go/reliable/retry"
)

func TestRabbitMQTransientFailuresExactlyOnceInOrder(t *testing.T) {
	// L01, L09, L11, L12, L20 on real RabbitMQ and PostgreSQL: one queue,
	// key lanes, the retry table and PostgreSQL dedupe; 20% of messages fail
	// their first attempt. Every message applied once, in order per key.
	if testing.Short() {
		t.Skip("integration test")
	}
	url := testenv.AMQPURL(t)
	pool := pgPool(t)
	ctx := testenv.Context(t, 3*time.Minute)
	topic := testenv.UniqueName(t, "pipeline")
	group := shortName("kitchen_")
	if err := rabbitmq.Declare(ctx, url, topic, []string{group}); err != nil {
		t.Fatal(err)
	}
	table := retryTable(t, pool, group)
	store := dedupeStore(t, "postgres", pool, group, shortName("idem_"))

	const n, keys = 1000, 20
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
	var failed sync.Map
	h := reliable.HandlerFunc(func(_ context.Context, m *reliable.Message) error {
		if failsFirstTime(m, 20) {
			if _, again := failed.LoadOrStore(m.ID, true); !again {
				return errors.New("downstream timeout")
			}
		}
		led.apply(m)
		return nil
	})
	c, err := consumer.NewRabbitMQ(url, group, h, consumer.Config{
		Topic: topic, Dedupe: store, RetryTable: table, Concurrency: 16, Logger: quiet,
		Retrier: retry.RetrierConfig{PollInterval: 50 * time.Millisecond},
	}, rabbitmq.WithLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(runCtx) }()
	eventually(t, 2*time.Minute, "every message applied", func() bool { return led.count() == n })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	led.check(t, msgs)
}
