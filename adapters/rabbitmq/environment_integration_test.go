package rabbitmq

import (
	"context"
	"errors"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/reliable-go/reliable"
)

// L07: WithEnvironment means what kafka.Config.Environment means. Declare,
// the publisher and the subscriber name every object of a topic in the
// environment's namespace (EnvironmentName), the producer stamps the
// environment, the application sees its own topic name, and a dead letter
// lands in the environment's dead-letter queue. Another environment's
// subscriber on the same broker finds no such topic.
func TestEnvironmentPrefixesBrokerNames(t *testing.T) {
	url := amqpURL(t)
	env, topic, group := "h6env", uniqueName("envnames"), "kitchen"
	opts := []Option{WithLogger(discardLogger()), WithEnvironment(env)}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := Declare(ctx, url, topic, []string{group}, opts...); err != nil {
		t.Fatal(err)
	}
	ch, err := rawConn(t).Channel()
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	t.Cleanup(func() {
		c, err := rawConn(t).Channel()
		if err != nil {
			return
		}
		defer c.Close()
		name := EnvironmentName(env, topic)
		_, _ = c.QueueDelete(QueueName(name, group), false, false, false)
		_, _ = c.QueueDelete(DeadLetterQueueName(name, group), false, false, false)
		_ = c.ExchangeDelete(ExchangeName(name), false, false)
		_ = c.ExchangeDelete(deadLetterExchangeName(name), false, false)
	})
	if err := ch.ExchangeDeclarePassive(ExchangeName(EnvironmentName(env, topic)), amqp.ExchangeTopic, true, false, false, false, nil); err != nil {
		t.Fatalf("exchange %s: %v", EnvironmentName(env, topic), err)
	}
	if _, err := ch.QueueDeclarePassive(QueueName(EnvironmentName(env, topic), group), true, false, false, false, nil); err != nil {
		t.Fatalf("queue %s: %v", QueueName(EnvironmentName(env, topic), group), err)
	}

	pub, err := NewProducer(url, WithLogger(discardLogger()), WithEnvironment(env))
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	if err := pub.Publish(ctx, &reliable.Message{Topic: topic, Key: "k1", Payload: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	sub, err := NewSubscriber(url, group, WithLogger(discardLogger()), WithEnvironment(env))
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	deliveries, err := sub.Subscribe(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	var d *reliable.Delivery
	select {
	case d = <-deliveries:
	case <-ctx.Done():
		t.Fatal("no delivery")
	}
	if d.Message.Topic != topic || d.Message.Headers[reliable.HeaderEnvironment] != env {
		t.Fatalf("delivered topic %q environment %q, want %q and %q", d.Message.Topic, d.Message.Headers[reliable.HeaderEnvironment], topic, env)
	}
	if err := sub.DeadLetter(ctx, d.Message, reliable.Permanent(errors.New("poison"))); err != nil {
		t.Fatalf("DeadLetter: %v", err)
	}
	if err := d.Ack(ctx); err != nil {
		t.Fatal(err)
	}
	dlq := DeadLetterQueueName(EnvironmentName(env, topic), group)
	waitFor(t, "the dead letter in "+dlq, func() bool {
		_, ok, err := ch.Get(dlq, true)
		return err == nil && ok
	})

	other, err := NewSubscriber(url, group, WithLogger(discardLogger()), WithEnvironment("h6other"))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if _, err := other.Subscribe(ctx, topic); !errors.Is(err, reliable.ErrUnknownTopic) {
		t.Fatalf("another environment's Subscribe: err = %v, want ErrUnknownTopic", err)
	}
}
