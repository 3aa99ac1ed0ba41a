package consumer_test

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/adapters/rabbitmq"
	"github.com/reliable-go/reliable/consumer"
	"github.com/reliable-go/reliable/idempotency"
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
	msgs := publishRabbitOrders(t, ctx, url, topic, n, keys)

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
	c, err := rabbitmq.NewConsumer(url, group, h, consumer.Config{
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

func TestRabbitMQForeignMessageWithoutIDIsHandledOnce(t *testing.T) {
	// Another client publishes to the topic exchange with routing key
	// order-1 and no message-id or ce_ headers. With Redis dedupe its key
	// came out empty and "dedupe begin failed ... empty message ID" repeated
	// forever: never handled, never dead-lettered. It must be handled once,
	// under the routing key, and acked.
	if testing.Short() {
		t.Skip("integration test")
	}
	url := testenv.AMQPURL(t)
	ctx := testenv.Context(t, time.Minute)
	topic := testenv.UniqueName(t, "foreign")
	group := shortName("kitchen_")
	if err := rabbitmq.Declare(ctx, url, topic, []string{group}); err != nil {
		t.Fatal(err)
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
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, rabbitmq.ExchangeName(topic), "order-1", true, false,
		amqp.Publishing{DeliveryMode: amqp.Persistent, ContentType: "application/json", Body: []byte(`{"status":"paid"}`)})
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := dc.WaitContext(ctx); !ok || err != nil {
		t.Fatalf("confirm: %v %v", ok, err)
	}

	var mu sync.Mutex
	var seen []*reliable.Message
	h := reliable.HandlerFunc(func(_ context.Context, m *reliable.Message) error {
		mu.Lock()
		seen = append(seen, m)
		mu.Unlock()
		return nil
	})
	store, err := idempotency.NewRedis(redisClient(t), idempotency.RedisConfig{Namespace: shortName("kitchen_")})
	if err != nil {
		t.Fatal(err)
	}
	var notDeduplicated atomic.Int64
	c, err := rabbitmq.NewConsumer(url, group, h, consumer.Config{Topic: topic, Dedupe: store, Logger: quiet,
		Observe: func(e consumer.Event) {
			if e.NotDeduplicated && e.Outcome == consumer.OutcomeHandled {
				notDeduplicated.Add(1)
			}
		}}, rabbitmq.WithLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	runUntil(t, c, 30*time.Second, func() bool { return notDeduplicated.Load() == 1 })
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 1 || seen[0].Key != "order-1" || string(seen[0].Payload) != `{"status":"paid"}` {
		t.Fatalf("handled %d times; key %q", len(seen), seen[0].Key)
	}
	if n := queueDepth(t, ch, group, topic); n != 0 {
		t.Fatalf("%d messages left in the group queue, want 0 (acked)", n)
	}
}

// queueDepth returns the messages ready or unacked in the group's queue.
func queueDepth(t *testing.T, ch *amqp.Channel, group, topic string) int {
	t.Helper()
	q, err := ch.QueueDeclarePassive(rabbitmq.QueueName(topic, group), true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	return q.Messages
}

// publishRabbitOrders publishes n messages over keys with a per-key "seq"
// header, in order per key, through the durable RabbitMQ producer.
func publishRabbitOrders(t testing.TB, ctx context.Context, url, topic string, n, keys int) []*reliable.Message {
	t.Helper()
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
	return msgs
}
