package rabbitmq

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/reliable-go/reliable"
)

// TestBlockedConnectionPublishReturns: on a memory or disk alarm RabbitMQ
// sends connection.blocked and stops reading from publishing connections; a
// plain amqp091-go publish then hangs in the socket write (#111, PITFALLS
// B1, C7). The alarm is simulated by a proxy in front of the broker (a real
// alarm would block every engineer's tests on the shared broker): Publish
// must return the context's error, naming the alarm, and Close must not
// hang. After connection.unblocked, publishing works again.
func TestBlockedConnectionPublishReturns(t *testing.T) {
	_, target := proxiedURL(t, "amqp", "127.0.0.1", 0)
	proxy := newProxy(t, target)
	url, _ := proxiedURL(t, "amqp", "127.0.0.1", proxy.port())
	topic := uniqueName("blocked")
	declareTopic(t, Topology{}, topic, "g")
	pub, err := NewPublisher(url, WithLogger(discardLogger()))
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := pub.Publish(ctx, &reliable.Message{Topic: topic, Payload: []byte("before")}); err != nil {
		t.Fatal(err)
	}

	proxy.block(true, "low on memory (simulated)")
	waitFor(t, "the blocked notification", func() bool {
		pub.cm.mu.Lock()
		defer pub.cm.mu.Unlock()
		return pub.cm.blocked != nil
	})
	short, cancelShort := context.WithTimeout(ctx, time.Second)
	start := time.Now()
	err = pub.Publish(short, keyedMessages(topic, 100, 1)...)
	cancelShort()
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "low on memory") {
		t.Fatalf("publish while blocked: %v, want the deadline error naming the alarm", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("publish while blocked returned after %s", d)
	}
	t.Logf("publish while blocked: %v", err)

	proxy.unblock()
	start = time.Now()
	if err := pub.Publish(ctx, &reliable.Message{Topic: topic, Payload: []byte("after")}); err != nil {
		t.Fatalf("publish after unblock: %v", err)
	}
	t.Logf("publish after unblock took %s", time.Since(start).Round(time.Millisecond))
	start = time.Now()
	_ = pub.Close()
	t.Logf("close took %s", time.Since(start).Round(time.Millisecond))
}

// TestStalledConnectionPublishAndCloseReturn: a broker that stops reading
// without a word (a network blackhole, or an alarm whose notification has
// not arrived yet) makes socket writes block once the buffers fill (PITFALLS
// C6). Publish of a large batch must still return when its context ends, and
// Close must return within its deadline instead of hanging (#122).
func TestStalledConnectionPublishAndCloseReturn(t *testing.T) {
	_, target := proxiedURL(t, "amqp", "127.0.0.1", 0)
	proxy := newProxy(t, target)
	url, _ := proxiedURL(t, "amqp", "127.0.0.1", proxy.port())
	topic := uniqueName("stalled")
	declareTopic(t, Topology{}, topic, "g")
	pub, err := NewPublisher(url, WithLogger(discardLogger()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := pub.Publish(ctx, &reliable.Message{Topic: topic, Payload: []byte("before")}); err != nil {
		t.Fatal(err)
	}
	proxy.block(false, "")
	// 64 MiB: far more than the socket buffers hold.
	big := make([]*reliable.Message, 256)
	for i := range big {
		big[i] = &reliable.Message{Topic: topic, Payload: make([]byte, 256<<10)}
	}
	short, cancelShort := context.WithTimeout(ctx, 2*time.Second)
	start := time.Now()
	err = pub.Publish(short, big...)
	cancelShort()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("publish on a stalled connection: %v, want the deadline error", err)
	}
	if d := time.Since(start); d > 4*time.Second {
		t.Fatalf("publish on a stalled connection returned after %s", d)
	}
	start = time.Now()
	done := make(chan struct{})
	go func() { _ = pub.Close(); close(done) }()
	select {
	case <-done:
		t.Logf("close on a stalled connection took %s", time.Since(start).Round(time.Millisecond))
	case <-time.After(15 * time.Second):
		t.Fatal("Close hangs on a stalled connection")
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
