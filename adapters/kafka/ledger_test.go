package kafka

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"

	"github.com/reliable-go/reliable"
)

// ledger records what a fault test produced and what it found in the topic.
type ledger struct {
	mu       sync.Mutex
	produced map[string]entry // by message ID, confirmed by Publish
}

type entry struct {
	key string
	seq int
}

func newLedger() *ledger { return &ledger{produced: make(map[string]entry)} }

func (l *ledger) confirm(msgs []*reliable.Message) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, m := range msgs {
		seq, _ := strconv.Atoi(m.Headers["seq"])
		l.produced[m.ID] = entry{key: m.Key, seq: seq}
	}
}

// keyedMessages returns n messages for topic over keys, each with a
// per-key sequence number in the "seq" header.
func keyedMessages(topic string, n, keys, first int) []*reliable.Message {
	msgs := make([]*reliable.Message, n)
	for i := range msgs {
		k := (first + i) % keys
		seq := (first + i) / keys
		msgs[i] = &reliable.Message{
			Topic:   topic,
			Key:     "order-" + strconv.Itoa(k),
			Type:    "order.event",
			Headers: map[string]string{"seq": strconv.Itoa(seq)},
			Payload: []byte(fmt.Sprintf("order-%d:%d", k, seq)),
		}
	}
	return msgs
}

// readAll reads every record of topic's partitions, from the oldest to the
// high-water mark, straight from the log (no consumer group): what a new
// consumer would find.
func readAll(t testing.TB, brokers []string, topic string) []*sarama.ConsumerMessage {
	t.Helper()
	sc := sarama.NewConfig()
	sc.Version = DefaultVersion
	client, err := sarama.NewClient(brokers, sc)
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	defer client.Close()
	cons, err := sarama.NewConsumerFromClient(client)
	if err != nil {
		t.Fatalf("consumer: %v", err)
	}
	defer cons.Close()
	parts, err := client.Partitions(topic)
	if err != nil {
		t.Fatalf("partitions: %v", err)
	}
	var out []*sarama.ConsumerMessage
	for _, p := range parts {
		hwm, err := client.GetOffset(topic, p, sarama.OffsetNewest)
		if err != nil {
			t.Fatalf("offset: %v", err)
		}
		if hwm == 0 {
			continue
		}
		pc, err := cons.ConsumePartition(topic, p, sarama.OffsetOldest)
		if err != nil {
			t.Fatalf("consume partition %d: %v", p, err)
		}
		timeout := time.After(2 * time.Minute)
	read:
		for {
			select {
			case m := <-pc.Messages():
				out = append(out, m)
				if m.Offset >= hwm-1 {
					break read
				}
			case err := <-pc.Errors():
				t.Fatalf("partition %d: %v", p, err)
			case <-timeout:
				t.Fatalf("partition %d: read timed out before offset %d", p, hwm)
			}
		}
		pc.Close()
	}
	return out
}

// verifyLog checks the records of topic against the ledger: every confirmed
// message is there (zero lost) and each key's messages appear in sequence
// order (zero reordered). It returns the number of duplicates.
func (l *ledger) verifyLog(t testing.TB, recs []*sarama.ConsumerMessage, topic string) (dups int) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	seen := make(map[string]int, len(recs))
	lastSeq := map[string]int{}
	reordered := 0
	// Records of one key share a partition, so partition order is key order.
	sort.SliceStable(recs, func(i, j int) bool {
		if recs[i].Partition != recs[j].Partition {
			return recs[i].Partition < recs[j].Partition
		}
		return recs[i].Offset < recs[j].Offset
	})
	for _, r := range recs {
		m := fromRecord(r, topic)
		seen[m.ID]++
		if seen[m.ID] > 1 {
			dups++
			continue
		}
		seq, _ := strconv.Atoi(m.Headers["seq"])
		if prev, ok := lastSeq[m.Key]; ok && seq <= prev {
			reordered++
			if reordered <= 5 {
				t.Errorf("key %s: seq %d after %d (partition %d offset %d)", m.Key, seq, prev, r.Partition, r.Offset)
			}
		}
		lastSeq[m.Key] = seq
	}
	lost := 0
	for id, e := range l.produced {
		if seen[id] == 0 {
			lost++
			if lost <= 5 {
				t.Errorf("confirmed message %s (key %s seq %d) is not in the topic", id, e.key, e.seq)
			}
		}
	}
	if lost > 0 || reordered > 0 {
		t.Fatalf("%d confirmed messages: %d lost, %d reordered, %d duplicates", len(l.produced), lost, reordered, dups)
	}
	return dups
}

// publishStream publishes n keyed messages in batches with w concurrent
// workers, each owning its own keys so that per-key order is the order of
// each worker's Publish calls. progress is called after each confirmed
// batch with the total confirmed so far.
func publishStream(ctx context.Context, t testing.TB, pub reliable.Publisher, l *ledger, topic string, n, workers, batch int, progress func(int)) error {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		done  int
		first error
	)
	per := n / workers
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Worker w owns keys w, w+workers, ... (50 of them).
			stream := make([]*reliable.Message, per)
			for i := range stream {
				k, seq := w+workers*(i%50), i/50
				stream[i] = &reliable.Message{
					Topic:   topic,
					Key:     "order-" + strconv.Itoa(k),
					Type:    "order.event",
					Headers: map[string]string{"seq": strconv.Itoa(seq)},
					Payload: []byte(fmt.Sprintf("order-%d:%d", k, seq)),
				}
			}
			for i := 0; i < len(stream); i += batch {
				b := stream[i:min(i+batch, len(stream))]
				if err := pub.Publish(ctx, b...); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
					return
				}
				l.confirm(b)
				mu.Lock()
				done += len(b)
				d := done
				mu.Unlock()
				if progress != nil {
					progress(d)
				}
			}
		}()
	}
	wg.Wait()
	return first
}
