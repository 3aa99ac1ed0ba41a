package rabbitmq

import (
	"context"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// TestForeignMessageDecoded: a message another client publishes to the
// topic exchange (routing key order-1, no message-id, no ce_ headers)
// reaches the subscriber with Key order-1, taken from the routing key, and
// an empty ID. Before, its key was empty.
func TestForeignMessageDecoded(t *testing.T) {
	url := amqpURL(t)
	topic, group := uniqueName("foreign"), "g"
	declareTopic(t, Topology{}, topic, group)
	sub, err := NewSubscriber(url, group, WithLogger(discardLogger()))
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
	ch, err := rawConn(t).Channel()
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.PublishWithContext(ctx, topic, "order-1", true, false, amqp.Publishing{
		ContentType: "application/json", DeliveryMode: amqp.Persistent, Body: []byte(`{"n":1}`),
	}); err != nil {
		t.Fatal(err)
	}
	select {
	case d := <-deliveries:
		m := d.Message
		if m.Key != "order-1" || m.ID != "" || m.Topic != topic || string(m.Payload) != `{"n":1}` {
			t.Fatalf("got key %q id %q topic %q payload %q; want key order-1 and no ID", m.Key, m.ID, m.Topic, m.Payload)
		}
		_ = d.Ack(ctx)
	case <-ctx.Done():
		t.Fatal("no delivery")
	}
}
