package rabbitmq

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/producer"
)

// closeBound is how long Close may take with a Publish stuck in it: the
// close timeout for in-flight calls plus the connection's close deadline,
// and some slack for a loaded machine.
const closeBound = DefaultCloseTimeout + closeDeadline + 2*time.Second

// publishing reports whether a Publish call of p is in flight.
func publishing(p *Publisher) bool {
	if p.closeMu.TryLock() {
		p.closeMu.Unlock()
		return false
	}
	return true
}

// closeWithin closes c in the background and fails when it takes longer
// than bound.
func closeWithin(t *testing.T, what string, c func() error, bound time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	done := make(chan struct{})
	go func() { _ = c(); close(done) }()
	select {
	case <-done:
		return time.Since(start)
	case <-time.After(bound):
		t.Fatalf("%s: Close hangs (more than %s)", what, bound)
		return 0
	}
}

// TestCloseDuringStuckPublish: Close returns within a bound while a Publish
// with a context that never ends waits for a reconnect (the broker is
// unreachable) or for a blocked connection (a resource alarm), directly or
// under the retrying producer; the stuck Publish returns an error matching
// reliable.ErrClosed. Before, Close waited for the Publish, which waited
// forever.
func TestCloseDuringStuckPublish(t *testing.T) {
	for _, tc := range []struct {
		name     string
		alarm    bool
		producer bool
	}{
		{name: "reconnect"},
		{name: "alarm", alarm: true},
		{name: "producer-reconnect", producer: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, target := proxiedURL(t, "amqp", "127.0.0.1", 0)
			proxy := newProxy(t, target)
			url, _ := proxiedURL(t, "amqp", "127.0.0.1", proxy.port())
			topic := uniqueName("close")
			declareTopic(t, Topology{}, topic, "g")
			pub, err := NewPublisher(url, WithLogger(discardLogger()), WithReconnectBackoff(fastRetry))
			if err != nil {
				t.Fatal(err)
			}
			var pubr reliable.Publisher = pub
			if tc.producer {
				pubr, err = producer.New(pub, producer.Config{Backoff: fastRetry, Logger: discardLogger()})
				if err != nil {
					t.Fatal(err)
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := pubr.Publish(ctx, &reliable.Message{Topic: topic, Payload: []byte("before")}); err != nil {
				t.Fatal(err)
			}
			if tc.alarm {
				proxy.block(true, "low on memory (simulated)")
				waitFor(t, "the blocked notification", func() bool { return pub.cm.isBlocked.Load() })
			} else {
				proxy.close() // connections cut, new ones refused
				waitFor(t, "the lost connection", func() bool { return pub.cm.frameMax() == 0 })
			}
			stuck := make(chan error, 1)
			go func() {
				stuck <- pubr.Publish(context.Background(), &reliable.Message{Topic: topic, Payload: []byte("stuck")})
			}()
			waitFor(t, "the Publish in flight", func() bool { return publishing(pub) })
			took := closeWithin(t, tc.name, pubr.Close, closeBound)
			select {
			case err := <-stuck:
				if !errors.Is(err, reliable.ErrClosed) {
					t.Fatalf("stuck Publish: %v, want ErrClosed", err)
				}
				t.Logf("Close took %s; the stuck Publish returned %v", took.Round(time.Millisecond), err)
			case <-time.After(5 * time.Second):
				t.Fatal("the stuck Publish did not return after Close")
			}
		})
	}
}

// TestSubscriberCloseDuringStuckSubscribe: Close returns within a bound
// while Subscribe waits to declare its queues on an unreachable broker, and
// the Subscribe fails with reliable.ErrClosed. Before, Close waited for
// Subscribe's own 30 s declare timeout.
func TestSubscriberCloseDuringStuckSubscribe(t *testing.T) {
	_, target := proxiedURL(t, "amqp", "127.0.0.1", 0)
	proxy := newProxy(t, target)
	url, _ := proxiedURL(t, "amqp", "127.0.0.1", proxy.port())
	topic := uniqueName("close-sub")
	declareTopic(t, Topology{}, topic, "g")
	sub, err := NewSubscriber(url, "g", WithLogger(discardLogger()), WithReconnectBackoff(fastRetry))
	if err != nil {
		t.Fatal(err)
	}
	proxy.close()
	waitFor(t, "the lost connection", func() bool { return sub.cm.frameMax() == 0 })
	stuck := make(chan error, 1)
	go func() {
		_, err := sub.Subscribe(context.Background(), topic)
		stuck <- err
	}()
	waitFor(t, "the Subscribe in flight", func() bool { return sub.subscribing.Load() > 0 })
	took := closeWithin(t, "subscriber", sub.Close, 10*time.Second)
	select {
	case err := <-stuck:
		if !errors.Is(err, reliable.ErrClosed) {
			t.Fatalf("stuck Subscribe: %v, want ErrClosed", err)
		}
		t.Logf("Close took %s; the stuck Subscribe returned %v", took.Round(time.Millisecond), err)
	case <-time.After(5 * time.Second):
		t.Fatal("the stuck Subscribe did not return after Close")
	}
}
