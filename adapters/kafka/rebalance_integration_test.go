package kafka

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/reliable-go/reliable"
)

// A member joins and another leaves while slow handlers run (PITFALLS C2).
// A revoked partition waits for its in-flight deliveries and commits before
// the rebalance proceeds, so: no message is skipped, duplicates stay within
// what was in flight, commits are not lost (the group ends committed at the
// end of every partition), and no commit error is reported.
func TestRebalanceWithSlowHandlers(t *testing.T) {
	brokers := kafkaBrokers(t)
	const n, partitions, maxInFlight = 1200, 6, 16
	topic, group := uniqueName("rebalance"), uniqueName("rebalance-g")
	createTopic(t, brokers, topic, partitions, nil)
	pub, err := NewProducer(testConfig(t))
	if err != nil {
		t.Fatalf("NewProducer: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	msgs := keyedMessages(topic, n, 100, 0)
	if err := pub.Publish(ctx, msgs...); err != nil {
		t.Fatalf("publish: %v", err)
	}
	_ = pub.Close()

	var (
		mu        sync.Mutex
		processed = map[string]int{}
		errs      []error
	)
	newMember := func(name string) (*Subscriber, <-chan *reliable.Delivery, context.CancelFunc, *sync.WaitGroup, *atomic.Int64) {
		cfg := testConfig(t)
		cfg.Consumer.Group = group
		cfg.Consumer.MaxInFlightPerPartition = maxInFlight
		cfg.Consumer.OnError = func(err error) {
			mu.Lock()
			errs = append(errs, err)
			mu.Unlock()
		}
		sub, err := NewSubscriber(cfg)
		if err != nil {
			t.Fatalf("NewSubscriber %s: %v", name, err)
		}
		subCtx, stop := context.WithCancel(ctx)
		ch, err := sub.Subscribe(subCtx, topic)
		if err != nil {
			t.Fatalf("subscribe %s: %v", name, err)
		}
		var wg sync.WaitGroup
		var count atomic.Int64
		for w := 0; w < 4; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for d := range ch {
					time.Sleep(25 * time.Millisecond) // a slow handler
					mu.Lock()
					processed[d.Message.ID]++
					mu.Unlock()
					count.Add(1)
					_ = d.Ack(ctx)
				}
			}()
		}
		return sub, ch, stop, &wg, &count
	}
	done := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(processed)
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(2 * time.Minute); !cond(); {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s (%d of %d processed)", what, done(), n)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	subA, _, stopA, wgA, countA := newMember("A")
	defer subA.Close()
	waitFor("A to process 200", func() bool { return done() >= 200 })

	joined := time.Now()
	subB, _, stopB, wgB, countB := newMember("B")
	defer subB.Close()
	waitFor("B's first delivery", func() bool { return countB.Load() > 0 })
	t.Logf("B joined: first delivery %s after Subscribe (Rebalance.Timeout %s)", time.Since(joined).Round(time.Millisecond), DefaultRebalanceTimeout)
	waitFor("600 processed", func() bool { return done() >= 600 })

	left := time.Now()
	stopA() // A leaves gracefully: drains its in-flight deliveries, commits
	wgA.Wait()
	t.Logf("A left in %s after processing %d deliveries", time.Since(left).Round(time.Millisecond), countA.Load())
	waitFor("every message", func() bool { return done() == n })

	// Commits not lost: B commits every partition to its end.
	adm := adminClient(t, brokers)
	defer adm.Close()
	hwm := highWaterMarks(t, brokers, topic)
	waitFor("the group to commit every partition to its end", func() bool {
		c := committedOffsets(t, adm, group, topic, partitions)
		for p, h := range hwm {
			if c[p] != h {
				return false
			}
		}
		return true
	})
	stopB()
	wgB.Wait()

	mu.Lock()
	defer mu.Unlock()
	dups := 0
	for _, c := range processed {
		dups += c - 1
	}
	t.Logf("%d messages, %d deliveries to A, %d to B, %d duplicates", n, countA.Load(), countB.Load(), dups)
	if bound := partitions * maxInFlight; dups > bound {
		t.Fatalf("%d duplicates, more than the %d deliveries that can be in flight", dups, bound)
	}
	for _, err := range errs {
		t.Errorf("consumer error reported: %v", err)
	}
}

func highWaterMarks(t testing.TB, brokers []string, topic string) map[int32]int64 {
	t.Helper()
	out := map[int32]int64{}
	for _, r := range readAll(t, brokers, topic) {
		if r.Offset+1 > out[r.Partition] {
			out[r.Partition] = r.Offset + 1
		}
	}
	return out
}
