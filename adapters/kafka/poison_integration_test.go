package kafka_test

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/adapters/kafka"
	"github.com/reliable-go/reliable/consumer"
)

// Issue 13, the measured case: the consumer pipeline with its config at the
// zero value (no retry table, no dead-letter path), one poison message (the
// handler returns reliable.Permanent) among 60 good ones on 3 partitions.
// Before, every nack ended the group session: in 20 s the poison message was
// handled 18 times and the 60 good ones 135 times. Now the good ones are
// handled exactly once while the poison message keeps failing, and the
// poison partition's commit stops at it (nothing is skipped).
func TestPoisonWithoutDeadLetterPath(t *testing.T) {
	brokers := kafka.KafkaBrokers(t)
	const partitions, good = 3, 60
	topic, group := kafka.UniqueName("poison"), kafka.UniqueName("poison-g")
	kafka.CreateTopic(t, brokers, topic, partitions, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pub, err := kafka.NewProducer(kafka.TestConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	poison := &reliable.Message{Topic: topic, Key: "poison", Payload: []byte("bad")}
	if err := pub.Publish(ctx, poison); err != nil {
		t.Fatal(err)
	}
	var msgs []*reliable.Message
	for i := 0; i < good; i++ {
		msgs = append(msgs, &reliable.Message{Topic: topic, Key: "order-" + strconv.Itoa(i%20), Payload: []byte("ok")})
	}
	if err := pub.Publish(ctx, msgs...); err != nil {
		t.Fatal(err)
	}

	cfg := kafka.TestConfig(t)
	cfg.Consumer.Group = group
	sub, err := kafka.NewSubscriber(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	var (
		mu      sync.Mutex
		handled = map[string]int{}
		tries   int
		where   reliable.DeliveryInfo
	)
	h := reliable.HandlerFunc(func(_ context.Context, m *reliable.Message) error {
		mu.Lock()
		defer mu.Unlock()
		if m.ID == poison.ID {
			tries++
			where = m.Delivery
			return reliable.Permanent(errors.New("cannot parse"))
		}
		handled[m.ID]++
		return nil
	})
	c, err := consumer.New(sub, h, consumer.Config{Topic: topic, Logger: kafka.TestLogger()})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = c.Run(runCtx) }()
	defer func() { stop(); <-done }()

	// Every good message, and the poison message tried at least three times
	// (or 20 s, as in the measurement).
	start := time.Now()
	for {
		mu.Lock()
		n, p := len(handled), tries
		mu.Unlock()
		if n == good && (p >= 3 || time.Since(start) > 20*time.Second) {
			break
		}
		if time.Since(start) > 60*time.Second {
			t.Fatalf("after 60s: %d of %d good messages handled, poison tried %d times", n, good, p)
		}
		time.Sleep(50 * time.Millisecond)
	}
	mu.Lock()
	total := 0
	for _, n := range handled {
		total += n
	}
	p, w := tries, where
	mu.Unlock()
	t.Logf("after %s: good messages %d distinct, %d handles; poison tried %d times", time.Since(start).Round(time.Millisecond), len(handled), total, p)
	if total != good {
		t.Fatalf("%d handles of %d good messages: good messages were replayed", total, good)
	}
	if p < 1 {
		t.Fatal("the poison message was never handled")
	}
	adm := kafka.AdminClient(t, brokers)
	defer adm.Close()
	got := kafka.Committed(t, adm, group, topic, partitions)
	if off, ok := got[w.Partition]; ok && off > w.Offset {
		t.Fatalf("partition %d committed %d, past the unsettled poison message at %d", w.Partition, off, w.Offset)
	}
}
