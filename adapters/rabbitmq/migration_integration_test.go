package rabbitmq

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/reliable-go/reliable"
)

// declareOldGroupQueue declares topic's exchange and group's queue as
// versions before the single active consumer did: the same arguments
// without x-single-active-consumer.
func declareOldGroupQueue(t *testing.T, ch *amqp.Channel, topic, group string) {
	t.Helper()
	args := Topology{}.withDefaults().queueArgs(topic, QueueName(topic, group))
	delete(args, "x-single-active-consumer")
	if _, err := ch.QueueDeclare(QueueName(topic, group), true, false, false, false, args); err != nil {
		t.Fatalf("declare the old queue: %v", err)
	}
}

func checkQueueArgumentsError(t *testing.T, err error, queue string) {
	t.Helper()
	var qae *QueueArgumentsError
	if !errors.As(err, &qae) || qae.Queue != queue {
		t.Fatalf("err %v, want a *QueueArgumentsError for %s", err, queue)
	}
	if !errors.Is(err, reliable.ErrInvalidConfig) {
		t.Fatalf("err %v does not match reliable.ErrInvalidConfig", err)
	}
	for _, want := range []string{queue, "x-single-active-consumer", "delete_queue", "drain"} {
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("error %q does not name %q", err, want)
		}
	}
}

// TestOldGroupQueueIsRefused: L08, L12. A group queue declared by an older
// version, without a single active consumer, cannot change its arguments in
// place. Declare and Subscribe refuse it with a *QueueArgumentsError that
// names the queue and the fix, instead of consuming it as it is (before:
// both succeeded and two instances split each key's events). The broker's
// refusal is a channel error: the subscriber's connection stays up and
// serves its other subscriptions.
func TestOldGroupQueueIsRefused(t *testing.T) {
	url := amqpURL(t)
	topic, other, group := uniqueName("oldq"), uniqueName("newq"), "g"
	declareTopic(t, Topology{}, other, group)
	conn := rawConn(t)
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.ExchangeDeclare(topic, amqp.ExchangeTopic, true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	declareOldGroupQueue(t, ch, topic, group)
	t.Cleanup(func() { deleteTopic(t, Topology{}, topic, group) })
	queue := QueueName(topic, group)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = Declare(ctx, url, topic, []string{group})
	checkQueueArgumentsError(t, err, queue)
	t.Logf("Declare: %v", err)

	sub, err := NewSubscriber(url, group, WithLogger(discardLogger()))
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	_, gen, err := sub.cm.connection(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_, err = sub.Subscribe(ctx, topic)
	checkQueueArgumentsError(t, err, queue)

	// The same subscriber, same connection, still consumes another topic.
	deliveries, err := sub.Subscribe(ctx, other)
	if err != nil {
		t.Fatalf("subscribe to another topic after the refusal: %v", err)
	}
	pub, err := NewPublisher(url, WithLogger(discardLogger()))
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	m := &reliable.Message{Topic: other, Key: "k", Payload: []byte("x")}
	if err := pub.Publish(ctx, m); err != nil {
		t.Fatal(err)
	}
	select {
	case d := <-deliveries:
		if d == nil || d.Message.ID != m.ID {
			t.Fatalf("got %v, want %s", d, m.ID)
		}
		_ = d.Ack(ctx)
	case <-ctx.Done():
		t.Fatal("no delivery on the other topic")
	}
	if _, gen2, err := sub.cm.connection(ctx); err != nil || gen2 != gen {
		t.Fatalf("connection generation %d -> %d (%v): the refusal tore the connection down", gen, gen2, err)
	}
}

// TestOldGroupQueueRecreatedEndsSubscription: a running subscription whose
// queue is deleted and recreated by an older version (without a single
// active consumer) ends, logged, instead of consuming the unsafe queue.
// Before, it redeclared, succeeded and consumed it.
func TestOldGroupQueueRecreatedEndsSubscription(t *testing.T) {
	url := amqpURL(t)
	topic, group := uniqueName("oldq-re"), "g"
	declareTopic(t, Topology{}, topic, group)
	var logs logBuffer
	// A slow resume leaves time to recreate the queue before it.
	slow := reliable.Backoff{Initial: 2 * time.Second, Max: 2 * time.Second}
	sub, err := NewSubscriber(url, group, WithLogger(logs.logger()), WithReconnectBackoff(slow))
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
	// Consuming has started once a message came through.
	pub, err := NewPublisher(url, WithLogger(discardLogger()))
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	if err := pub.Publish(ctx, &reliable.Message{Topic: topic, Payload: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	select {
	case d := <-deliveries:
		_ = d.Ack(ctx)
	case <-ctx.Done():
		t.Fatal("no delivery")
	}
	ch, err := rawConn(t).Channel()
	if err != nil {
		t.Fatal(err)
	}
	// Delete, and recreate once the subscriber saw the consumer cancelled,
	// before its backoff ends.
	if _, err := ch.QueueDelete(QueueName(topic, group), false, false, false); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the consumer cancel", func() bool { return strings.Contains(logs.String(), "subscription interrupted") })
	declareOldGroupQueue(t, ch, topic, group)
	select {
	case d, ok := <-deliveries:
		if ok {
			t.Fatalf("got delivery %v, want the channel closed", d.Message)
		}
	case <-ctx.Done():
		t.Fatal("the subscription still runs on a queue without a single active consumer")
	}
	if !strings.Contains(logs.String(), "exists with other arguments") {
		t.Fatalf("the subscription ended without naming the queue's arguments; logs:\n%s", logs.String())
	}
}
