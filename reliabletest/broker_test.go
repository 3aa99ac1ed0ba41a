package reliabletest_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/reliabletest"
)

func TestBrokerConformance(t *testing.T) {
	b := reliabletest.NewBroker(reliabletest.BrokerOptions{})
	reliabletest.RunConformance(t, reliabletest.Setup{
		Features: reliabletest.Features{
			OrderPerKey:                  true,
			CompetingConsumers:           true,
			NackRedelivers:               true,
			OrderAfterNack:               true,
			RedeliveredAcrossSubscribers: true,
			UnknownTopicFails:            true,
			RestartBroker:                b.Restart,
			Reconnect: func(context.Context) error {
				b.DropConnections()
				return nil
			},
			Reasons: map[string]string{},
		},
		NewPublisher: func(*testing.T) reliable.Publisher { return b.Publisher() },
		NewSubscriber: func(_ *testing.T, group string) reliable.Subscriber {
			return b.Subscriber(group, reliabletest.SubscriberOptions{})
		},
		CreateTopic: func(_ *testing.T, topic string, _ ...string) { b.CreateTopic(topic) },
		Crash:       func(s reliable.Subscriber) { s.(*reliabletest.Subscriber).Crash() },
		Timeout:     5 * time.Second,
	})
}

func TestCrashBeforeCommitRedelivers(t *testing.T) {
	// L04, L05: acks that were not committed when the consumer died do not
	// count; their messages come again.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b := reliabletest.NewBroker(reliabletest.BrokerOptions{Partitions: 1})
	b.CreateTopic("orders")
	msgs := []*reliable.Message{{Topic: "orders", Key: "o1"}, {Topic: "orders", Key: "o1"}}
	if err := b.Publisher().Publish(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
	sub := b.Subscriber("kitchen", reliabletest.SubscriberOptions{CommitInterval: time.Hour})
	ch, err := sub.Subscribe(ctx, "orders")
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		d := <-ch
		if err := d.Ack(ctx); err != nil {
			t.Fatal(err)
		}
	}
	sub.Crash()
	if got := b.Committed("kitchen", "orders"); got[0] != 0 {
		t.Fatalf("committed %d after a crash before the commit, want 0", got[0])
	}
	again := b.Subscriber("kitchen", reliabletest.SubscriberOptions{})
	ch2, err := again.Subscribe(ctx, "orders")
	if err != nil {
		t.Fatal(err)
	}
	d := <-ch2
	if d.Message.ID != msgs[0].ID || !d.Message.Delivery.Redelivered {
		t.Fatalf("got %v redelivered=%v, want %s redelivered", d.Message, d.Message.Delivery.Redelivered, msgs[0].ID)
	}
	_ = again.Close()
}

func TestStaleAckAfterDropIsIgnored(t *testing.T) {
	// An ack of a delivery from before a reconnect must not settle anything:
	// the message is delivered again (the stale-tag hazard of PITFALLS B3).
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b := reliabletest.NewBroker(reliabletest.BrokerOptions{Partitions: 1})
	b.CreateTopic("orders")
	if err := b.Publisher().Publish(ctx, &reliable.Message{Topic: "orders"}, &reliable.Message{Topic: "orders"}); err != nil {
		t.Fatal(err)
	}
	sub := b.Subscriber("kitchen", reliabletest.SubscriberOptions{})
	defer sub.Close()
	ch, _ := sub.Subscribe(ctx, "orders")
	first := <-ch
	b.DropConnections()
	_ = first.Ack(ctx) // stale
	if got := b.Committed("kitchen", "orders")[0]; got != 0 {
		t.Fatalf("stale ack committed offset %d", got)
	}
	for d := range ch {
		if d.Message.ID == first.Message.ID {
			_ = d.Ack(ctx)
			break
		}
	}
	if got := b.Committed("kitchen", "orders")[0]; got != 1 {
		t.Fatalf("committed %d, want 1", got)
	}
}

func TestPublishFaults(t *testing.T) {
	ctx := context.Background()
	b := reliabletest.NewBroker(reliabletest.BrokerOptions{MaxMessageBytes: 100})
	b.CreateTopic("orders")
	pub := b.Publisher()

	boom := errors.New("network blip")
	b.FailPublishes(boom)
	if err := pub.Publish(ctx, &reliable.Message{Topic: "orders"}); !errors.Is(err, boom) {
		t.Fatalf("got %v, want the injected error", err)
	}
	if n := len(b.Messages("orders")); n != 0 {
		t.Fatalf("a failed publish wrote %d messages", n)
	}

	b.LoseConfirms(1)
	if err := pub.Publish(ctx, &reliable.Message{Topic: "orders"}); !errors.Is(err, reliable.ErrNotConfirmed) {
		t.Fatalf("got %v, want ErrNotConfirmed", err)
	}
	if n := len(b.Messages("orders")); n != 1 {
		t.Fatalf("a lost confirm must still write the message, have %d", n)
	}

	err := pub.Publish(ctx, &reliable.Message{Topic: "orders", Payload: make([]byte, 200)})
	var tooLarge *reliable.MessageTooLargeError
	if !errors.As(err, &tooLarge) || tooLarge.Max != 100 {
		t.Fatalf("got %v, want a MessageTooLargeError", err)
	}
}

func TestAsyncPublisherKeepsCallOrderAndReportsToDone(t *testing.T) {
	b := reliabletest.NewBroker(reliabletest.BrokerOptions{Partitions: 1})
	b.CreateTopic("orders")
	pub := b.AsyncPublisher()
	ctx := context.Background()
	results := make(chan error, 20)
	var ids []string
	for range 10 {
		m := &reliable.Message{Topic: "orders", Key: "k"}
		if err := pub.PublishAsync(ctx, m, func(_ *reliable.Message, err error) { results <- err }); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, m.ID)
	}
	if err := pub.PublishAsync(ctx, &reliable.Message{Topic: "nope"}, func(_ *reliable.Message, err error) { results <- err }); err != nil {
		t.Fatal(err)
	}
	var failed []error
	for range 11 {
		if err := <-results; err != nil {
			failed = append(failed, err)
		}
	}
	if len(failed) != 1 || !errors.Is(failed[0], reliable.ErrUnknownTopic) {
		t.Fatalf("failures %v, want one ErrUnknownTopic", failed)
	}
	for i, m := range b.Messages("orders") {
		if m.ID != ids[i] {
			t.Fatalf("message %d is %s, want %s: call order not kept", i, m.ID, ids[i])
		}
	}
	err := pub.PublishAsync(ctx, &reliable.Message{}, func(*reliable.Message, error) { t.Error("done called for an invalid message") })
	if !errors.Is(err, reliable.ErrInvalidMessage) {
		t.Fatalf("invalid message: got %v", err)
	}
}
