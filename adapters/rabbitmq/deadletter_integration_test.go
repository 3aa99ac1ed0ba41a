package rabbitmq

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/reliable-go/reliable"
)

// TestSubscriberDeadLetter: Subscriber.DeadLetter, the consumer's default
// dead-letter path on RabbitMQ, puts a poison message into the group's
// dead-letter queue, persistent and confirmed, keeping its ID, key, type,
// payload and headers and adding headers naming the cause, the original
// topic and queue, the group and the attempts. On a sharded topology every
// shard's messages go to the group's one dead-letter queue.
func TestSubscriberDeadLetter(t *testing.T) {
	for _, topo := range []Topology{{}, {Shards: 2}} {
		t.Run("shards="+strconv.Itoa(topo.Shards), func(t *testing.T) {
			url := amqpURL(t)
			topic, group := uniqueName("dlq"), "kitchen"
			declareTopic(t, topo, topic, group)
			pub, err := NewPublisher(url, WithLogger(discardLogger()), WithTopology(topo))
			if err != nil {
				t.Fatal(err)
			}
			defer pub.Close()
			sub, err := NewSubscriber(url, group, WithLogger(discardLogger()), WithTopology(topo))
			if err != nil {
				t.Fatal(err)
			}
			defer sub.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			deliveries, err := sub.Subscribe(ctx, topic)
			if err != nil {
				t.Fatal(err)
			}
			m := &reliable.Message{Topic: topic, Key: "order-7", Type: "order.paid",
				Headers: map[string]string{"x-seq": "3", reliable.HeaderEnvironment: "prod"}, Payload: []byte(`{"bad":`)}
			if err := pub.Publish(ctx, m); err != nil {
				t.Fatal(err)
			}
			var d *reliable.Delivery
			select {
			case d = <-deliveries:
			case <-ctx.Done():
				t.Fatal("no delivery")
			}
			cause := reliable.Permanent(errors.New("payload does not parse"))
			if err := sub.DeadLetter(ctx, d.Message, cause); err != nil {
				t.Fatalf("DeadLetter: %v", err)
			}
			if err := d.Ack(ctx); err != nil {
				t.Fatal(err)
			}

			ch, err := rawConn(t).Channel()
			if err != nil {
				t.Fatal(err)
			}
			dlq := DeadLetterQueueName(topic, group)
			var got amqp.Delivery
			waitFor(t, "the dead letter in "+dlq, func() bool {
				var ok bool
				got, ok, err = ch.Get(dlq, false)
				if err != nil {
					t.Fatal(err)
				}
				return ok
			})
			_ = got.Ack(false)
			if got.DeliveryMode != amqp.Persistent {
				t.Errorf("delivery mode %d, want persistent", got.DeliveryMode)
			}
			dm := fromDelivery(&got, topic, dlq)
			if dm.ID != m.ID || dm.Key != m.Key || dm.Type != m.Type || string(dm.Payload) != string(m.Payload) ||
				!dm.Time.Equal(m.Time) {
				t.Errorf("dead letter %v %q, want %v %q", dm, dm.Payload, m, m.Payload)
			}
			want := map[string]string{
				"x-seq": "3", reliable.HeaderEnvironment: "prod",
				HeaderDeadLetterCause:    "payload does not parse",
				HeaderDeadLetterTopic:    topic,
				HeaderDeadLetterQueue:    d.Message.Delivery.Queue,
				HeaderDeadLetterGroup:    group,
				HeaderDeadLetterAttempts: "1",
			}
			for k, v := range want {
				if dm.Headers[k] != v {
					t.Errorf("header %s = %q, want %q", k, dm.Headers[k], v)
				}
			}
			if _, err := time.Parse(time.RFC3339, dm.Headers[HeaderDeadLetterTime]); err != nil {
				t.Errorf("header %s: %v", HeaderDeadLetterTime, err)
			}
			if topo.Shards > 1 && d.Message.Delivery.Queue == QueueName(topic, group) {
				t.Errorf("sharded delivery from queue %s, want a shard queue", d.Message.Delivery.Queue)
			}
			t.Logf("dead letter from %s in %s with headers %v", d.Message.Delivery.Queue, dlq, dm.Headers)
		})
	}
}

// TestSubscriberDeadLetterUnroutable: without a dead-letter queue bound
// (deleted by an operator), DeadLetter fails with reliable.ErrUnroutable
// instead of reporting a message as dead-lettered that no queue took; and
// without the dead-letter exchange with reliable.ErrUnknownTopic.
func TestSubscriberDeadLetterUnroutable(t *testing.T) {
	url := amqpURL(t)
	topic, group := uniqueName("dlq-gone"), "kitchen"
	declareTopic(t, Topology{}, topic, group)
	sub, err := NewSubscriber(url, group, WithLogger(discardLogger()))
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	ch, err := rawConn(t).Channel()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDelete(DeadLetterQueueName(topic, group), false, false, false); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = sub.DeadLetter(ctx, &reliable.Message{ID: "m1", Topic: topic, Key: "k", Payload: []byte("x")}, errors.New("poison"))
	if !errors.Is(err, reliable.ErrUnroutable) {
		t.Fatalf("err %v, want ErrUnroutable", err)
	}
	// Without the dead-letter exchange: reliable.ErrUnknownTopic, a
	// permanent error, rather than an unconfirmed publish retried forever.
	if err := ch.ExchangeDelete(deadLetterExchangeName(topic), false, false); err != nil {
		t.Fatal(err)
	}
	err = sub.DeadLetter(ctx, &reliable.Message{ID: "m2", Topic: topic, Key: "k", Payload: []byte("x")}, errors.New("poison"))
	if !errors.Is(err, reliable.ErrUnknownTopic) || !reliable.IsPermanent(err) {
		t.Fatalf("err %v, want ErrUnknownTopic", err)
	}
	t.Logf("without the exchange: %v", err)
}
