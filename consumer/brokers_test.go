package consumer_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/consumer"
)

// stubSub is a subscriber without messages that counts Close calls.
type stubSub struct{ closed atomic.Int32 }

func (s *stubSub) Subscribe(ctx context.Context, topic string) (<-chan *reliable.Delivery, error) {
	return make(chan *reliable.Delivery), nil
}

func (s *stubSub) Close() error { s.closed.Add(1); return nil }

func nopHandler() reliable.Handler {
	return reliable.HandlerFunc(func(context.Context, *reliable.Message) error { return nil })
}

// Open is what kafka.NewConsumer and rabbitmq.NewConsumer are built on: a bad
// config must be refused before open connects to a broker.
func TestOpenRefusesBadConfigBeforeConnecting(t *testing.T) {
	var opened atomic.Bool
	open := func(*consumer.Config) (reliable.Subscriber, error) {
		opened.Store(true)
		return &stubSub{}, nil
	}
	if _, err := consumer.Open(nil, consumer.Config{Topic: "orders"}, open); err == nil {
		t.Fatal("Open with a nil handler: no error")
	}
	if _, err := consumer.Open(nopHandler(), consumer.Config{}, open); err == nil {
		t.Fatal("Open without a topic: no error")
	}
	if opened.Load() {
		t.Fatal("open was called for a config that was refused")
	}
}

func TestOpenReturnsTheOpenError(t *testing.T) {
	boom := errors.New("broker unreachable")
	_, err := consumer.Open(nopHandler(), consumer.Config{Topic: "orders"},
		func(*consumer.Config) (reliable.Subscriber, error) { return nil, boom })
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v, want %v", err, boom)
	}
	_, err = consumer.Open(nopHandler(), consumer.Config{Topic: "orders"},
		func(*consumer.Config) (reliable.Subscriber, error) { return nil, nil })
	if err == nil {
		t.Fatal("open returned no subscriber and no error: Open returned no error")
	}
}

// The consumer owns the subscriber open returned: Run closes it on the way out.
func TestOpenConsumerOwnsTheSubscriber(t *testing.T) {
	sub := &stubSub{}
	c, err := consumer.Open(nopHandler(), consumer.Config{Topic: "orders"},
		func(cfg *consumer.Config) (reliable.Subscriber, error) { return sub, nil })
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := c.Run(ctx); err != nil {
		t.Fatalf("Run after cancel: %v", err)
	}
	if n := sub.closed.Load(); n != 1 {
		t.Fatalf("subscriber closed %d times, want 1", n)
	}
}
