package kafka_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/adapters/kafka"
	"github.com/reliable-go/reliable/consumer"
)

// Issue 13: a Kafka dead-letter topic that needs no PostgreSQL. A poison
// message (the handler returns reliable.Permanent) among 60 good ones lands in
// the dead-letter topic with its ID, key, type, payload and headers and the
// dlt_ headers naming cause, original topic, partition, offset and attempts,
// in the partition its key maps to; the poison partition's offset is
// committed past it once the dead-letter record is confirmed; every good
// message is handled exactly once.
func TestDeadLetterTopic(t *testing.T) {
	brokers := kafka.KafkaBrokers(t)
	const partitions, good = 3, 60
	topic, dlt, group := kafka.UniqueName("dl"), kafka.UniqueName("dl-dlt"), kafka.UniqueName("dl-g")
	kafka.CreateTopic(t, brokers, "test."+topic, partitions, nil)
	kafka.CreateTopic(t, brokers, "test."+dlt, partitions, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	pcfg := kafka.TestConfig(t)
	pcfg.Environment = "test"
	pub, err := kafka.NewProducer(pcfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	poison := &reliable.Message{Topic: topic, Key: "poison-7", Type: "order.paid",
		Headers: map[string]string{"x-trace": "abc"}, Payload: []byte(`{"bad":true}`)}
	if err := pub.Publish(ctx, poison); err != nil {
		t.Fatal(err)
	}
	var goodMsgs []*reliable.Message
	for i := 0; i < good; i++ {
		goodMsgs = append(goodMsgs, &reliable.Message{Topic: topic, Key: "order-" + strconv.Itoa(i%20), Payload: []byte("ok")})
	}
	if err := pub.Publish(ctx, goodMsgs...); err != nil {
		t.Fatal(err)
	}

	cfg := kafka.TestConfig(t)
	cfg.Environment = "test"
	cfg.Consumer.Group = group
	cfg.Consumer.DeadLetterTopic = dlt
	sub, err := kafka.NewSubscriber(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if !sub.DeadLetterEnabled() {
		t.Fatal("DeadLetterEnabled is false with a DeadLetterTopic")
	}
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
			return reliable.Permanent(errors.New("schema v9 unknown"))
		}
		handled[m.ID]++
		return nil
	})
	c, err := consumer.New(sub, h, consumer.Config{Topic: topic, Environment: "test", DeadLetter: sub, Logger: kafka.TestLogger()})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	go func() { _ = c.Run(runCtx) }()

	// Wait for the dead-letter record and every good message.
	var recs []*sarama.ConsumerMessage
	client := kafka.TestClient(t, brokers)
	for deadline := time.Now().Add(60 * time.Second); ; {
		mu.Lock()
		n := len(handled)
		mu.Unlock()
		if n == good && hwmSum(t, client, "test."+dlt, partitions) >= 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 60s: %d of %d good handled, dead-letter topic holds %d", n, good, hwmSum(t, client, "test."+dlt, partitions))
		}
		time.Sleep(50 * time.Millisecond)
	}
	recs = kafka.ReadAll(t, brokers, "test."+dlt)
	if len(recs) != 1 {
		t.Fatalf("dead-letter topic holds %d records, want 1", len(recs))
	}
	r := recs[0]
	hs := map[string]string{}
	for _, h := range r.Headers {
		hs[string(h.Key)] = string(h.Value)
	}
	t.Logf("dead-letter record at %d/%d: key %q headers %v", r.Partition, r.Offset, r.Key, hs)
	mu.Lock()
	if tries != 1 {
		t.Errorf("poison handled %d times, want 1 (dead-lettered at once)", tries)
	}
	want := map[string]string{
		reliable.HeaderID: poison.ID, reliable.HeaderType: "order.paid", reliable.HeaderKey: "poison-7",
		reliable.HeaderEnvironment: "test", "x-trace": "abc",
		kafka.HeaderDeadLetterTopic:     "test." + topic,
		kafka.HeaderDeadLetterPartition: strconv.Itoa(int(where.Partition)),
		kafka.HeaderDeadLetterOffset:    strconv.FormatInt(where.Offset, 10),
		kafka.HeaderDeadLetterAttempts:  "1",
		kafka.HeaderDeadLetterGroup:     "test." + group,
	}
	mu.Unlock()
	for k, v := range want {
		if hs[k] != v {
			t.Errorf("header %s = %q, want %q", k, hs[k], v)
		}
	}
	if !strings.Contains(hs[kafka.HeaderDeadLetterCause], "schema v9 unknown") {
		t.Errorf("cause header %q", hs[kafka.HeaderDeadLetterCause])
	}
	if at, err := time.Parse(time.RFC3339Nano, hs[kafka.HeaderDeadLetterTime]); err != nil || time.Since(at) > time.Minute {
		t.Errorf("time header %q: %v", hs[kafka.HeaderDeadLetterTime], err)
	}
	if string(r.Key) != "poison-7" || string(r.Value) != `{"bad":true}` {
		t.Errorf("key %q value %q", r.Key, r.Value)
	}
	// Same key, same partition count: the murmur2 partitioner picks the same
	// partition as for the original record.
	if r.Partition != where.Partition {
		t.Errorf("dead-letter record in partition %d, original in %d", r.Partition, where.Partition)
	}

	// The poison partition commits past the poison message.
	adm := kafka.AdminClient(t, brokers)
	defer adm.Close()
	hwm, err := client.GetOffset("test."+topic, where.Partition, sarama.OffsetNewest)
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(20 * time.Second); ; {
		got := kafka.Committed(t, adm, "test."+group, "test."+topic, partitions)
		if got[where.Partition] == hwm {
			t.Logf("committed %v (poison at %d/%d)", got, where.Partition, where.Offset)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("partition %d committed %d, want %d (poison at offset %d)", where.Partition, got[where.Partition], hwm, where.Offset)
		}
		time.Sleep(100 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	for id, n := range handled {
		if n != 1 {
			t.Errorf("good message %s handled %d times", id, n)
		}
	}
}

// A DeadLetterTopic that does not exist fails NewSubscriber.
func TestDeadLetterTopicMustExist(t *testing.T) {
	cfg := kafka.TestConfig(t)
	cfg.Consumer.Group = kafka.UniqueName("dl-g")
	cfg.Consumer.DeadLetterTopic = kafka.UniqueName("no-such-dlt")
	sub, err := kafka.NewSubscriber(cfg)
	if err == nil {
		sub.Close()
		t.Fatal("NewSubscriber accepted a missing dead-letter topic")
	}
	if !errors.Is(err, reliable.ErrUnknownTopic) {
		t.Fatalf("error %v, want ErrUnknownTopic", err)
	}
}

// Without a DeadLetterTopic, DeadLetter refuses with ErrNoDeadLetterTopic.
func TestDeadLetterDisabled(t *testing.T) {
	cfg := kafka.TestConfig(t)
	cfg.Consumer.Group = kafka.UniqueName("dl-g")
	sub, err := kafka.NewSubscriber(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if sub.DeadLetterEnabled() {
		t.Fatal("DeadLetterEnabled without a topic")
	}
	err = sub.DeadLetter(context.Background(), &reliable.Message{ID: "x", Topic: "t"}, errors.New("bad"))
	if !errors.Is(err, kafka.ErrNoDeadLetterTopic) || !errors.Is(err, reliable.ErrInvalidConfig) {
		t.Fatalf("DeadLetter without a topic: %v", err)
	}
}

func hwmSum(t *testing.T, client sarama.Client, topic string, partitions int32) int64 {
	t.Helper()
	var sum int64
	for p := int32(0); p < partitions; p++ {
		hwm, err := client.GetOffset(topic, p, sarama.OffsetNewest)
		if err != nil {
			t.Fatal(err)
		}
		sum += hwm
	}
	return sum
}

// The dead-letter topic is written to, so it is audited with the producer's
// strict policy: a topic with one replica fails NewSubscriber (L06).
func TestDeadLetterTopicAudited(t *testing.T) {
	brokers := kafka.KafkaBrokers(t)
	dlt := kafka.UniqueName("dl-rf1")
	kafka.CreateTopic(t, brokers, dlt, 1, map[string]string{"_rf": "1"})
	cfg := kafka.TestConfig(t)
	cfg.Consumer.Group = kafka.UniqueName("dl-g")
	cfg.Consumer.DeadLetterTopic = dlt
	sub, err := kafka.NewSubscriber(cfg)
	if err == nil {
		sub.Close()
		t.Fatal("NewSubscriber accepted a dead-letter topic with one replica")
	}
	if !errors.Is(err, kafka.ErrNotDurable) {
		t.Fatalf("error %v, want ErrNotDurable", err)
	}
}
