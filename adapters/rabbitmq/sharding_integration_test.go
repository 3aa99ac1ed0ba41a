package rabbitmq

import (
	"context"
	"sync"
	"testing"
	"time"
)

// TestShardingKeepsOrderPerKey: L08, L12. With Shards = 3, each key hashes
// to one single-active-consumer queue; three subscriber instances, each
// with its own primary shard and the others as standby, consume in parallel
// and every key's messages arrive in publish order. Halfway, one instance
// stops: a standby takes its shard over, and the order still holds (judged
// on first deliveries; the stopped instance's unacked ones come again).
func TestShardingKeepsOrderPerKey(t *testing.T) {
	url := amqpURL(t)
	n := envInt("RELIABLE_RABBITMQ_SHARD_MESSAGES", 10000)
	const keys, shards, consumers = 100, 3, 3
	topo := Topology{Shards: shards}
	topic, group := uniqueName("shard"), "g"
	declareTopic(t, topo, topic, group)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	l := newLedger()
	var mu sync.Mutex
	keyOwner := map[string]int{}
	perConsumer := make([]int, consumers)
	var wg sync.WaitGroup
	subs := make([]*Subscriber, consumers)
	for c := 0; c < consumers; c++ {
		sub, err := NewSubscriber(url, group, WithTopology(topo), WithShardIndexes(c),
			WithShardStandby(500*time.Millisecond), WithPrefetch(100))
		if err != nil {
			t.Fatal(err)
		}
		subs[c] = sub
		defer sub.Close()
		deliveries, err := sub.Subscribe(ctx, topic)
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for d := range deliveries {
				l.receive(d.Message, true)
				mu.Lock()
				perConsumer[c]++
				if owner, ok := keyOwner[d.Message.Key]; ok && owner != c && owner != 0 {
					t.Errorf("key %s delivered to consumers %d and %d", d.Message.Key, owner, c)
				}
				keyOwner[d.Message.Key] = c
				mu.Unlock()
				if err := d.Ack(ctx); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	time.Sleep(time.Second) // the standby registrations are in

	// Halfway through, stop instance 0.
	go func() {
		for ctx.Err() == nil {
			if _, r, _ := l.counts(); r >= n/2 {
				_ = subs[0].Close()
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()

	pub, err := NewProducer(url, WithTopology(topo))
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	start := time.Now()
	msgs := keyedMessages(topic, n, keys)
	// One key's messages must be published in order: each call keeps its
	// order, and a call starts after the previous one was confirmed.
	for i := 0; i < n; i += 500 {
		batch := msgs[i:min(i+500, n)]
		if err := pub.Publish(ctx, batch...); err != nil {
			t.Fatal(err)
		}
		l.confirm(batch)
	}
	l.waitAll(t, n, 90*time.Second)
	elapsed := time.Since(start)
	cancel()
	wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.disorder) > 0 {
		t.Fatalf("%d order violations, first: %v", len(l.disorder), first(l.disorder, 5))
	}
	t.Logf("%d messages over %d keys in %s; deliveries per consumer %v; %d duplicates; order per key held",
		n, keys, elapsed.Round(time.Millisecond), perConsumer, l.dups)
}
