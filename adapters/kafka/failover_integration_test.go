package kafka

import (
	"context"
	"os"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

func envInt(key string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(key)); err == nil && v > 0 {
		return v
	}
	return def
}

// L06: the leader of a partition is killed (kill -9) while keyed messages are
// produced with acks=all. Every message Publish confirmed must be in the
// topic, and each key's messages in the order they were published (L08).
//
// RELIABLE_KAFKA_FAILOVER_MESSAGES sets the count (default 50000, about 25s
// under -race on the test machine).
func TestLeaderKillWhileProducing(t *testing.T) {
	c := cluster(t)
	brokers := c.Brokers()
	n := envInt("RELIABLE_KAFKA_FAILOVER_MESSAGES", 50000)
	topic := uniqueName("failover")
	createTopic(t, brokers, topic, 3, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	victim, err := c.Leader(ctx, topic, 0)
	if err != nil {
		t.Fatal(err)
	}

	pub, err := NewProducer(testConfig(t))
	if err != nil {
		t.Fatalf("NewProducer: %v", err)
	}
	defer pub.Close()

	l := newLedger()
	var (
		killStarted atomic.Bool
		confirmed   atomic.Int64
		atKill      atomic.Int64 // confirmed when the broker was dead
	)
	killDone := make(chan error, 1)
	start := time.Now()
	err = publishStream(ctx, t, pub, l, topic, n, 8, 250, func(done int) {
		confirmed.Store(int64(done))
		if done >= n/4 && killStarted.CompareAndSwap(false, true) {
			go func() {
				err := c.KillBroker(ctx, victim)
				atKill.Store(confirmed.Load())
				killDone <- err
			}()
		}
	})
	elapsed := time.Since(start)
	if err != nil {
		t.Fatalf("publish: %v", err)
	}
	if !killStarted.Load() {
		t.Fatal("the broker was never killed")
	}
	if err := <-killDone; err != nil {
		t.Fatalf("kill broker %d: %v", victim, err)
	}
	if k := atKill.Load(); k >= int64(n) {
		t.Fatalf("all %d messages were confirmed before broker %d died: the failover was not exercised", n, victim)
	}
	t.Logf("published %d keyed messages in %s (%.0f msg/s); broker %d (leader of partition 0) killed after %d",
		n, elapsed.Round(time.Millisecond), float64(n)/elapsed.Seconds(), victim, atKill.Load())
	if got, err := c.Leader(ctx, topic, 0); err != nil || got == victim {
		t.Fatalf("partition 0 is led by %d (%v), the dead broker is %d", got, err, victim)
	}

	dups := l.verifyLog(t, readAll(t, brokers, topic), topic)
	t.Logf("ledger: %d confirmed, 0 lost, 0 reordered, %d duplicates", len(l.produced), dups)
}

// L06: with two of three brokers down, fewer replicas are in sync than
// min.insync.replicas allows (and the controller quorum is lost): acks=all
// cannot be satisfied. The producer must keep waiting and retrying
// (NotEnoughReplicas, timeouts, leader not available), not fail or drop;
// after the brokers return, everything arrives.
func TestTwoBrokersDown(t *testing.T) {
	c := cluster(t)
	brokers := c.Brokers()
	topic := uniqueName("twodown")
	createTopic(t, brokers, topic, 3, nil)
	pub, err := NewProducer(testConfig(t))
	if err != nil {
		t.Fatalf("NewProducer: %v", err)
	}
	defer pub.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	l := newLedger()
	before := keyedMessages(topic, 200, 20, 0)
	if err := pub.Publish(ctx, before...); err != nil {
		t.Fatalf("publish before the outage: %v", err)
	}
	l.confirm(before)

	// Brokers 2 and 3 go down (testenv starts them again whatever happens);
	// broker 1 survives.
	for _, id := range []int32{2, 3} {
		if err := c.KillBroker(ctx, id); err != nil {
			t.Fatal(err)
		}
	}

	during := keyedMessages(topic, 300, 20, 200)
	result := make(chan error, 1)
	go func() { result <- pub.Publish(ctx, during...) }()
	select {
	case err := <-result:
		t.Fatalf("Publish returned %v with two of three brokers down: acks=all cannot have been met", err)
	case <-time.After(15 * time.Second):
		t.Log("Publish is still waiting after 15s with two brokers down, as it should")
	}

	restart := time.Now()
	for _, id := range []int32{2, 3} {
		if err := c.StartBroker(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case err := <-result:
		if err != nil {
			t.Fatalf("Publish after the brokers returned: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("Publish did not complete within 5 minutes of the outage")
	}
	t.Logf("Publish completed %s after the brokers were restarted", time.Since(restart).Round(time.Millisecond))
	l.confirm(during)
	after := keyedMessages(topic, 200, 20, 500)
	if err := pub.Publish(ctx, after...); err != nil {
		t.Fatalf("publish after the outage: %v", err)
	}
	l.confirm(after)
	if err := c.WaitHealthy(ctx, topic); err != nil {
		t.Fatal(err)
	}
	dups := l.verifyLog(t, readAll(t, brokers, topic), topic)
	t.Logf("ledger: %d confirmed, 0 lost, 0 reordered, %d duplicates", len(l.produced), dups)
}
