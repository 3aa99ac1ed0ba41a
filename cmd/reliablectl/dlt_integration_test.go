package main

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/adapters/kafka"
	"github.com/reliable-go/reliable/consumer"
	"github.com/reliable-go/reliable/internal/testenv"
)

// Issue 13: dlt topics, list, show and replay on a dead-letter topic that
// the Kafka subscriber filled. Two poison messages of one key (a Java long,
// NUL bytes included) are dead-lettered; replay is a dry run by default; with
// --execute it republishes both to the original topic, in order, with the
// same key bytes (same partition), ID and payload and without the dlt_
// headers, and a consumer then handles them.
func TestDeadLetterCommands(t *testing.T) {
	brokers, env := kafkaEnv(t)
	topic := testenv.UniqueName(t, "orders")
	dlt := topic + ".dlt"
	testenv.CreateTopic(t, brokers, topic, 3)
	testenv.CreateTopic(t, brokers, dlt, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	cfg := kafka.Config{Brokers: brokers, Logger: quietLog}
	pub, err := kafka.NewProducer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	javaLong := string([]byte{0, 0, 0, 0, 0, 0, 0x30, 0x39}) // 12345L
	first := &reliable.Message{Topic: topic, Key: javaLong, Type: "order.paid", Payload: []byte("first")}
	second := &reliable.Message{Topic: topic, Key: javaLong, Type: "order.paid", Payload: []byte("second")}
	if err := pub.Publish(ctx, first, second); err != nil {
		t.Fatal(err)
	}

	// A consumer whose handler refuses everything until fixed.
	var (
		mu      sync.Mutex
		fixed   bool
		handled []string
		where   = map[string]reliable.DeliveryInfo{}
	)
	h := reliable.HandlerFunc(func(_ context.Context, m *reliable.Message) error {
		mu.Lock()
		defer mu.Unlock()
		if !fixed {
			where[m.ID] = m.Delivery
			return reliable.Permanent(errors.New("unknown product SKU-9"))
		}
		if m.Key != javaLong {
			return reliable.Permanent(errors.New("key changed"))
		}
		handled = append(handled, m.ID)
		return nil
	})
	scfg := cfg
	scfg.Consumer = kafka.ConsumerConfig{Group: testenv.UniqueName(t, "kitchen"), DeadLetterTopic: dlt, CommitInterval: 200 * time.Millisecond}
	run := func() (stop func()) {
		sub, err := kafka.NewSubscriber(scfg)
		if err != nil {
			t.Fatal(err)
		}
		c, err := consumer.New(sub, h, consumer.Config{Topic: topic, DeadLetter: sub, Logger: quietLog})
		if err != nil {
			t.Fatal(err)
		}
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); _ = c.Run(rctx) }()
		return func() { cancel(); <-done; _ = sub.Close() }
	}
	stop := run()
	waitRecords(t, brokers, dlt, 2)
	stop()

	// topics
	r := cli(t, env, "dlt", "topics", "--output", "json")
	r.expect(t, exitOK, "")
	var topics []dltTopicInfo
	r.decode(t, &topics)
	found := false
	for _, ti := range topics {
		if ti.Topic == dlt {
			found = ti.Records == 2 && ti.Partitions == 3
		}
		if ti.Topic == topic {
			t.Errorf("dlt topics lists %s, which is not a dead-letter topic", topic)
		}
	}
	if !found {
		t.Fatalf("dlt topics: %s with 2 records not listed: %+v", dlt, topics)
	}

	// list
	r = cli(t, env, "dlt", "list", "--topic", dlt, "--output", "json")
	r.expect(t, exitOK, "")
	var recs []dltRecord
	r.decode(t, &recs)
	if len(recs) != 2 || recs[0].ID != first.ID || recs[1].ID != second.ID {
		t.Fatalf("dlt list: %+v", recs)
	}
	for _, rec := range recs {
		w := where[rec.ID]
		if rec.OriginalTopic != topic || rec.OriginalPartition != itoa(int64(w.Partition)) || rec.OriginalOffset != itoa(w.Offset) ||
			rec.Attempts != "1" || !strings.Contains(rec.Cause, "SKU-9") || rec.KeyHex != "0000000000003039" {
			t.Errorf("dlt list record %+v, delivered at %+v", rec, w)
		}
	}
	cli(t, env, "dlt", "list", "--topic", dlt).expect(t, exitOK, "")

	// show
	r = cli(t, env, "dlt", "show", "--topic", dlt, "--partition", itoa(int64(recs[1].Partition)), "--offset", itoa(recs[1].Offset), "--output", "json")
	r.expect(t, exitOK, "")
	var shown dltRecord
	r.decode(t, &shown)
	if shown.Payload != "second" || shown.Headers[reliable.HeaderID] != second.ID || shown.Headers[kafka.HeaderDeadLetterCause] == "" {
		t.Fatalf("dlt show: %+v", shown)
	}
	cli(t, env, "dlt", "show", "--topic", dlt, "--partition", itoa(int64(recs[1].Partition)), "--offset", "99").expect(t, exitFailure, "has no offset 99")
	cli(t, env, "dlt", "list", "--topic", testenv.UniqueName(t, "nope")).expect(t, exitFailure, "does not exist")

	// replay: a dry run changes nothing.
	hwm := func() int64 {
		var sum int64
		for p := int32(0); p < 3; p++ {
			n, err := newestOffset(brokers, topic, p)
			if err != nil {
				t.Fatal(err)
			}
			sum += n
		}
		return sum
	}
	before := hwm()
	r = cli(t, env, "dlt", "replay", "--topic", dlt, "--all")
	r.expect(t, exitOK, "")
	if !strings.Contains(r.stdout, "dry run: nothing was changed") {
		t.Fatalf("replay without --execute does not say it is a dry run:\n%s", r.stdout)
	}
	if got := hwm(); got != before {
		t.Fatalf("the dry run wrote %d records to %s", got-before, topic)
	}

	// --execute republishes both, in order, to the key's partition.
	r = cli(t, env, "dlt", "replay", "--topic", dlt, "--all", "--execute", "--output", "json")
	r.expect(t, exitOK, "")
	var rep replayReport
	r.decode(t, &rep)
	if !rep.Executed || len(rep.Records) != 2 {
		t.Fatalf("replay report %+v", rep)
	}
	origPart := where[first.ID].Partition
	for i, m := range rep.Records {
		if m.To != topic || m.NewPartition == nil || *m.NewPartition != origPart {
			t.Fatalf("replayed record %d: %+v, want partition %d of %s", i, m, origPart, topic)
		}
	}
	if *rep.Records[1].NewOffset <= *rep.Records[0].NewOffset {
		t.Fatalf("replayed out of order: %+v", rep.Records)
	}
	if got := hwm(); got != before+2 {
		t.Fatalf("%s grew by %d records, want 2", topic, got-before)
	}

	// The fixed consumer handles the replayed records, in order, with the
	// same IDs and key bytes.
	mu.Lock()
	fixed = true
	mu.Unlock()
	stop = run()
	defer stop()
	for deadline := time.Now().Add(30 * time.Second); ; {
		mu.Lock()
		n := len(handled)
		mu.Unlock()
		if n >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("replayed records not handled after 30s: %v", handled)
		}
		time.Sleep(50 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(handled) != 2 || handled[0] != first.ID || handled[1] != second.ID {
		t.Fatalf("handled %v, want %s then %s", handled, first.ID, second.ID)
	}
}

// waitRecords waits until topic holds n records.
func waitRecords(t *testing.T, brokers []string, topic string, n int64) {
	t.Helper()
	for deadline := time.Now().Add(60 * time.Second); ; {
		var sum int64
		for p := int32(0); p < 3; p++ {
			o, err := newestOffset(brokers, topic, p)
			if err != nil {
				t.Fatal(err)
			}
			sum += o
		}
		if sum >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s holds %d records after 60s, want %d", topic, sum, n)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func newestOffset(brokers []string, topic string, p int32) (int64, error) {
	client, err := sarama.NewClient(brokers, testenv.SaramaConfig())
	if err != nil {
		return 0, err
	}
	defer client.Close()
	return client.GetOffset(topic, p, sarama.OffsetNewest)
}
