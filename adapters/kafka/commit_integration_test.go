package kafka

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/IBM/sarama"
)

// failingCommits is a group session whose commits are dropped while fail is
// set, as a failed commit leaves them: sarama's offset manager keeps a
// partition's offset dirty until a commit of it succeeds.
type failingCommits struct {
	sarama.ConsumerGroupSession
	fail    *atomic.Bool
	dropped *atomic.Int64
}

func (s failingCommits) Commit() {
	if s.fail.Load() {
		s.dropped.Add(1)
		return
	}
	s.ConsumerGroupSession.Commit()
}

// Issue 13: a commit that failed on a partition that then stays idle is
// retried. Five records are acked while every commit fails; then commits work
// again and no new record arrives: the committed offset must still reach 5
// within a few commit intervals (before the fix it stayed unset until the
// session ended, because the loop committed only when a mark advanced).
func TestFailedCommitRetriedOnIdlePartition(t *testing.T) {
	brokers := kafkaBrokers(t)
	topic, group := uniqueName("idlecommit"), uniqueName("idlecommit-g")
	createTopic(t, brokers, topic, 1, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pub, err := NewProducer(testConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	if err := pub.Publish(ctx, keyedMessages(topic, 5, 1, 0)...); err != nil {
		t.Fatal(err)
	}

	var fail atomic.Bool
	var dropped atomic.Int64
	fail.Store(true)
	cfg := testConfig(t)
	cfg.Consumer.Group = group
	sub, err := NewSubscriber(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	sub.wrapSession = func(s sarama.ConsumerGroupSession) sarama.ConsumerGroupSession {
		return failingCommits{ConsumerGroupSession: s, fail: &fail, dropped: &dropped}
	}
	ch, err := sub.Subscribe(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		_ = receive(t, ch).Ack(ctx)
	}
	// Let the commit loop try (and fail) after the last ack: two attempts,
	// or 2 s (ten commit intervals) when the loop does not try again.
	for start, until := dropped.Load(), time.Now().Add(2*time.Second); dropped.Load() < start+2 && time.Now().Before(until); {
		time.Sleep(20 * time.Millisecond)
	}
	if dropped.Load() == 0 {
		t.Fatal("no commit was attempted after the acks")
	}
	fail.Store(false)
	adm := adminClient(t, brokers)
	defer adm.Close()
	for deadline := time.Now().Add(5 * time.Second); ; {
		got := committedOffsets(t, adm, sub.group, topic, 1)
		if got[0] == 5 {
			t.Logf("committed 5 after %d failed commits", dropped.Load())
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("committed offsets %v 5s after commits work again, want 5 (idle partition, %d failed commits)", got, dropped.Load())
		}
		time.Sleep(50 * time.Millisecond)
	}
}
