package kafka

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/IBM/sarama"

	"github.com/reliable-go/reliable"
)

// Issue 13: records from producers outside the SDK. A key written by Java's
// LongSerializer (8 bytes big-endian, NUL bytes included) and one that is not
// UTF-8 reach Message.Key byte for byte; a record without ce_id gets the ID
// "kafka:<topic>/<partition>/<offset>", the same on redelivery, so the
// dedupe store recognises it; a header with a nil value does not break the
// decoding.
func TestForeignRecords(t *testing.T) {
	brokers := kafkaBrokers(t)
	topic := uniqueName("foreign")
	createTopic(t, brokers, topic, 1, nil)
	sc := sarama.NewConfig()
	sc.Version = DefaultVersion
	sc.Producer.RequiredAcks = sarama.WaitForAll
	sc.Producer.Return.Successes = true
	prod, err := sarama.NewSyncProducer(brokers, sc)
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	long := []byte{0, 0, 0, 0, 0, 0, 0x30, 0x39} // 12345L
	bad := []byte{0xff, 0xfe, 'x', 0}
	for _, k := range [][]byte{long, bad} {
		_, _, err := prod.SendMessage(&sarama.ProducerMessage{Topic: topic, Key: sarama.ByteEncoder(k), Value: sarama.StringEncoder("v"),
			Headers: []sarama.RecordHeader{{Key: []byte("x-null"), Value: nil}, {Key: []byte("x-bin"), Value: []byte{0, 0xff}}}})
		if err != nil {
			t.Fatal(err)
		}
	}

	cfg := testConfig(t)
	cfg.Consumer.Group = uniqueName("foreign-g")
	cfg.Consumer.RedeliveryBackoff.Initial = 10 * time.Millisecond
	sub, err := NewSubscriber(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ch, err := sub.Subscribe(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		key []byte
		id  string
	}{{long, fmt.Sprintf("kafka:%s/0/0", topic)}, {bad, fmt.Sprintf("kafka:%s/0/1", topic)}}
	ids := map[string]int{}
	for i := 0; i < 3; i++ {
		var d = receive(t, ch)
		m := d.Message
		w := want[m.Delivery.Offset]
		if m.Key != string(w.key) || m.ID != w.id {
			t.Fatalf("offset %d: key %x id %q, want %x %q", m.Delivery.Offset, m.Key, m.ID, w.key, w.id)
		}
		if m.Headers["x-bin"] != "\x00\xff" || m.Headers["x-null"] != "" {
			t.Fatalf("headers %q", m.Headers)
		}
		ids[m.ID]++
		if m.Delivery.Offset == 0 && m.Delivery.Attempt == 1 {
			_ = d.Nack(ctx) // comes back with the same ID
			continue
		}
		_ = d.Ack(ctx)
	}
	if ids[want[0].id] != 2 || ids[want[1].id] != 1 {
		t.Fatalf("IDs seen %v: the redelivery must carry the same derived ID", ids)
	}
}

func receive(t *testing.T, ch <-chan *reliable.Delivery) *reliable.Delivery {
	t.Helper()
	select {
	case d := <-ch:
		return d
	case <-time.After(30 * time.Second):
		t.Fatal("no delivery within 30s")
		return nil
	}
}
