package kafka

import (
	"context"
	"testing"
	"time"

	"github.com/reliable-go/reliable"
)

// Issue 13: a nack redelivers the message inside its claim instead of ending
// the group session. One poison message (first on its partition) among 60
// good ones on 3 partitions, the consumer config at its zero value apart from
// the test timings: the poison message is nacked again and again, with
// Attempt counting up, while every good message, including those after the
// poison message on its own partition, is handled exactly once (before the
// fix each nack restarted every partition and replayed the uncommitted ones).
// The committed offset of the poison partition stops at the poison message;
// the other partitions commit to their end.
func TestNackRedeliversWithoutSessionRestart(t *testing.T) {
	brokers := kafkaBrokers(t)
	const partitions, good, wantAttempts = 3, 60, 6
	topic, group := uniqueName("nack"), uniqueName("nack-g")
	createTopic(t, brokers, topic, partitions, nil)
	pub, err := NewProducer(testConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	poison := &reliable.Message{Topic: topic, Key: "poison", Type: "order.event", Payload: []byte("poison")}
	if err := pub.Publish(ctx, poison); err != nil {
		t.Fatal(err)
	}
	msgs := keyedMessages(topic, good, 20, 0)
	if err := pub.Publish(ctx, msgs...); err != nil {
		t.Fatal(err)
	}

	cfg := testConfig(t)
	cfg.Consumer.Group = group
	sub, err := NewSubscriber(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	ch, err := sub.Subscribe(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}

	handled := map[string]int{}
	var poisonAttempts []int
	var poisonPart int32
	var poisonOffset int64
	deadline := time.After(90 * time.Second)
	for len(handled) < good || len(poisonAttempts) < wantAttempts {
		select {
		case d, ok := <-ch:
			if !ok {
				t.Fatal("deliveries closed")
			}
			m := d.Message
			if m.ID == poison.ID {
				poisonAttempts = append(poisonAttempts, m.Delivery.Attempt)
				if len(poisonAttempts) > 1 && !m.Delivery.Redelivered {
					t.Errorf("poison attempt %d not flagged Redelivered", m.Delivery.Attempt)
				}
				poisonPart, poisonOffset = m.Delivery.Partition, m.Delivery.Offset
				if err := d.Nack(ctx); err != nil {
					t.Fatalf("nack: %v", err)
				}
				continue
			}
			handled[m.ID]++
			if err := d.Ack(ctx); err != nil {
				t.Fatalf("ack: %v", err)
			}
		case <-deadline:
			total := 0
			for _, n := range handled {
				total += n
			}
			t.Fatalf("after 90s: %d of %d good messages handled (%d handles), poison handled %d times", len(handled), good, total, len(poisonAttempts))
		}
	}
	total := 0
	for _, n := range handled {
		total += n
	}
	t.Logf("good messages: %d distinct, %d handles; poison attempts %v", len(handled), total, poisonAttempts)
	if total != good {
		for id, n := range handled {
			if n > 1 {
				t.Errorf("message %s handled %d times", id, n)
			}
		}
		t.Fatalf("%d handles of %d good messages: the nack restarted the session", total, good)
	}
	for i, a := range poisonAttempts {
		if a != i+1 {
			t.Fatalf("poison attempts %v, want 1, 2, 3, ...", poisonAttempts)
		}
	}

	// Commits: the poison partition stays at the poison offset, the others
	// reach their end.
	adm := adminClient(t, brokers)
	defer adm.Close()
	client := newTestClient(t, brokers)
	want := map[int32]int64{}
	for p := int32(0); p < partitions; p++ {
		hwm, err := client.GetOffset(topic, p, -1)
		if err != nil {
			t.Fatal(err)
		}
		want[p] = hwm
		if hwm == 0 {
			delete(want, p) // nothing to commit
		}
	}
	want[poisonPart] = poisonOffset
	var got map[int32]int64
	for end := time.Now().Add(20 * time.Second); ; {
		got = committedOffsets(t, adm, group, topic, partitions)
		if equalOffsets(got, want) {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("committed %v, want %v (poison at partition %d offset %d)", got, want, poisonPart, poisonOffset)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("committed %v, poison at %d/%d", got, poisonPart, poisonOffset)
}

func equalOffsets(a, b map[int32]int64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}
