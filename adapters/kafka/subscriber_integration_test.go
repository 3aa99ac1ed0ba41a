package kafka

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"

	"github.com/reliable-go/reliable"
)

// L23: a partition holds at most MaxInFlightPerPartition uncommitted
// deliveries; the backlog waits in Kafka, and each ack lets one more in.
func TestBackpressurePerPartition(t *testing.T) {
	brokers := kafkaBrokers(t)
	topic := uniqueName("backpressure")
	createTopic(t, brokers, topic, 1, nil)
	p, err := NewProducer(testConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := p.Publish(ctx, keyedMessages(topic, 50, 5, 0)...); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t)
	cfg.Consumer.Group = uniqueName("backpressure-g")
	cfg.Consumer.MaxInFlightPerPartition = 5
	sub, err := NewSubscriber(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	ch, err := sub.Subscribe(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	var held []*reliable.Delivery
	for len(held) < 5 {
		held = append(held, <-ch)
	}
	select {
	case d := <-ch:
		t.Fatalf("a 6th delivery (offset %d) arrived with 5 unacked", d.Message.Delivery.Offset)
	case <-time.After(time.Second):
	}
	// Acking a later delivery does not free room: offset 0 still holds the
	// commit position.
	_ = held[4].Ack(ctx)
	select {
	case d := <-ch:
		t.Fatalf("delivery at offset %d arrived while the oldest is unacked", d.Message.Delivery.Offset)
	case <-time.After(500 * time.Millisecond):
	}
	_ = held[0].Ack(ctx)
	select {
	case d := <-ch:
		if d.Message.Delivery.Offset != 5 {
			t.Fatalf("next delivery at offset %d, want 5", d.Message.Delivery.Offset)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no delivery after the oldest was acked")
	}
}

// Commit and fetch errors reach Consumer.OnError instead of being swallowed:
// here the topic is deleted under a member that still acks deliveries.
func TestConsumerErrorsAreSurfaced(t *testing.T) {
	brokers := kafkaBrokers(t)
	topic := uniqueName("errors")
	createTopic(t, brokers, topic, 1, nil)
	p, err := NewProducer(testConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := p.Publish(ctx, keyedMessages(topic, 2, 1, 0)...); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var reported []error
	cfg := testConfig(t)
	cfg.Consumer.Group = uniqueName("errors-g")
	cfg.Consumer.OnError = func(err error) {
		mu.Lock()
		reported = append(reported, err)
		mu.Unlock()
	}
	sub, err := NewSubscriber(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	ch, err := sub.Subscribe(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	receive := func() *reliable.Delivery {
		select {
		case d := <-ch:
			return d
		case <-ctx.Done():
			t.Fatal("no delivery within a minute")
			return nil
		}
	}
	first, second := receive(), receive()
	if err := first.Ack(ctx); err != nil {
		t.Fatal(err)
	}
	adm := adminClient(t, brokers)
	defer adm.Close()
	if err := adm.DeleteTopic(topic); err != nil {
		t.Fatal(err)
	}
	_ = second.Ack(ctx)
	for deadline := time.Now().Add(30 * time.Second); ; {
		mu.Lock()
		n := len(reported)
		mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no consumer error reported after the topic was deleted")
		}
		time.Sleep(50 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	// The errors must say what went wrong: Kafka's error code for the
	// deleted topic, not just any error.
	found := false
	for _, err := range reported {
		t.Logf("reported: %v", err)
		var kerr sarama.KError
		if errors.As(err, &kerr) && (kerr == sarama.ErrUnknownTopicOrPartition) ||
			strings.Contains(err.Error(), "does not exist") || strings.Contains(err.Error(), "unknown topic") {
			found = true
		}
	}
	if !found {
		t.Fatalf("none of the %d reported errors names the deleted topic: %v", len(reported), reported)
	}
}
