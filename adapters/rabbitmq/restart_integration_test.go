package rabbitmq

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/reliable-go/reliable/producer"
)

// TestBrokerRestartMidStream: L02, L03. The RabbitMQ server is stopped and
// started (the whole Erlang VM) in the middle of a stream: a publisher and a
// consumer run throughout and resume on their own; every confirmed message
// is delivered (quorum queue, persistent messages), and messages whose
// confirm was lost are republished by the producer.
//
// RELIABLE_RABBITMQ_RESTART_MESSAGES sets the stream length (default 20000).
func TestBrokerRestartMidStream(t *testing.T) {
	restart := restartBroker(t)
	url := amqpURL(t)
	n := envInt("RELIABLE_RABBITMQ_RESTART_MESSAGES", 20000)
	topic, group := uniqueName("restart"), "g"
	declareTopic(t, Topology{}, topic, group)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var logs logBuffer

	raw, err := NewPublisher(url, WithLogger(logs.logger()), WithReconnectBackoff(fastRetry))
	if err != nil {
		t.Fatal(err)
	}
	pub, err := producer.New(raw, producer.Config{Backoff: fastRetry, Logger: logs.logger()})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	sub, err := NewSubscriber(url, group, WithLogger(logs.logger()), WithReconnectBackoff(fastRetry), WithPrefetch(200))
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	deliveries, err := sub.Subscribe(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	l := newLedger()
	var consumer sync.WaitGroup
	consumer.Add(1)
	go func() { defer consumer.Done(); consumeAll(ctx, t, deliveries, l, false, 0) }()

	start := time.Now()
	msgs := keyedMessages(topic, n, 100)
	pubDone := make(chan error, 1)
	go func() { pubDone <- publishAll(ctx, pub, msgs, 100, 4, 5*time.Millisecond, nil, l) }()

	// Restart once a quarter of the stream is confirmed.
	for {
		if p, _, _ := l.counts(); p >= n/4 {
			break
		}
		select {
		case err := <-pubDone:
			t.Fatalf("publishing ended before the restart: %v", err)
		case <-time.After(10 * time.Millisecond):
		}
	}
	confirmedBefore, receivedBefore, _ := l.counts()
	restartStart := time.Now()
	if err := restart(ctx); err != nil {
		t.Fatalf("restart: %v", err)
	}
	restartTook := time.Since(restartStart)
	if err := <-pubDone; err != nil {
		t.Fatalf("publish: %v", err)
	}
	l.waitAll(t, n, 90*time.Second)
	elapsed := time.Since(start)
	cancel()
	consumer.Wait()
	p, r, dups := l.counts()
	t.Logf("%d messages: restart after %d confirmed / %d received took %s; all %d confirmed, %d received (%d duplicates) in %s; zero lost",
		n, confirmedBefore, receivedBefore, restartTook.Round(time.Millisecond), p, r, dups, elapsed.Round(time.Millisecond))
	assertNoStaleTagErrors(t, logs.String())
}
