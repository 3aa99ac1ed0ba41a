package consumer_test

import (
	"context"
	"encoding/binary"
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
	"github.com/reliable-go/reliable/internal/testenv"
	"github.com/reliable-go/reliable/retry"
)

func TestKafkaForeignBinaryKeysThroughRetryTableAndDedupe(t *testing.T) {
	// Records from a non-SDK producer: an 8-byte big-endian long key (Java's
	// LongSerializer: NUL bytes), a key with invalid UTF-8, a 3 KB key, a
	// header value with a NUL byte, no ce_ headers at all. The retry table's
	// Blocked and Park failed on such keys (SQLSTATE 22021, 54000, 22P05) and
	// the consumer retried forever: 50 of 51 messages handled, committed
	// offset 0. Each key's first event fails once, so every key goes through
	// Park, Blocked and the retrier's replay; every event must be applied
	// once, in order, with the key byte-exact, with either dedupe store.
	if testing.Short() {
		t.Skip("integration test")
	}
	long := make([]byte, 8)
	binary.BigEndian.PutUint64(long, 42)
	keys := []string{string(long), "\xff\xfeorder-\xc3\x28", strings.Repeat("k", 3000), "order-plain"}
	const perKey = 5
	for _, kind := range []string{"redis", "postgres"} {
		t.Run(kind, func(t *testing.T) {
			brokers := testenv.Kafka(t)
			pool := pgPool(t)
			topic := testenv.UniqueName(t, "foreign")
			testenv.CreateTopic(t, brokers, topic, 2)
			group := shortName("kitchen_")
			table := retryTable(t, pool, group)
			store := dedupeStore(t, kind, pool, group, shortName("idem_"))

			// A plain sarama producer, as another team's service would use.
			sc := testenv.SaramaConfig()
			sc.Producer.Return.Successes = true
			sc.Producer.RequiredAcks = sarama.WaitForAll
			sc.Producer.Partitioner = sarama.NewHashPartitioner
			prod, err := sarama.NewSyncProducer(brokers, sc)
			if err != nil {
				t.Fatal(err)
			}
			for seq := 0; seq < perKey; seq++ {
				for _, k := range keys {
					rec := &sarama.ProducerMessage{Topic: topic, Key: sarama.ByteEncoder(k),
						Value: sarama.StringEncoder(`{"seq":` + strconv.Itoa(seq) + `}`),
						Headers: []sarama.RecordHeader{{Key: []byte("seq"), Value: []byte(strconv.Itoa(seq))},
							{Key: []byte("trace"), Value: []byte("a\x00b")}}}
					if _, _, err := prod.SendMessage(rec); err != nil {
						t.Fatal(err)
					}
				}
			}
			_ = prod.Close()

			led := newLedger()
			var mu sync.Mutex
			failed := make(map[string]bool)
			var badKey, badHeader string
			h := reliable.HandlerFunc(func(_ context.Context, m *reliable.Message) error {
				mu.Lock()
				if m.Headers["trace"] != "a\x00b" {
					badHeader = strconv.Quote(m.Headers["trace"])
				}
				known := false
				for _, k := range keys {
					known = known || m.Key == k
				}
				if !known {
					badKey = strconv.Quote(m.Key)
				}
				first := m.Headers["seq"] == "0" && !failed[m.Key]
				failed[m.Key] = failed[m.Key] || first
				mu.Unlock()
				if first {
					return errors.New("downstream timeout")
				}
				led.apply(m)
				return nil
			})
			c, err := kafka.NewConsumer(kafkaConfig(brokers, group), h, consumer.Config{
				Topic: topic, Dedupe: store, RetryTable: table, Logger: quiet,
				Retrier: retry.RetrierConfig{PollInterval: 50 * time.Millisecond},
			})
			if err != nil {
				t.Fatal(err)
			}
			n := len(keys) * perKey
			runUntil(t, c, 2*time.Minute, func() bool { return led.count() == n })
			mu.Lock()
			defer mu.Unlock()
			if badKey != "" || badHeader != "" {
				t.Fatalf("handler got key %s, header %s: not byte-exact", badKey, badHeader)
			}
			led.mu.Lock()
			defer led.mu.Unlock()
			for _, k := range keys {
				s := led.seq[k]
				if len(s) != perKey {
					t.Fatalf("key %.20q applied %v, want %d events", k, s, perKey)
				}
				for i := range s {
					if s[i] != i {
						t.Fatalf("key %.20q applied out of order: %v", k, s)
					}
				}
			}
			for id, times := range led.applied {
				if times != 1 {
					t.Fatalf("message %s applied %d times", id, times)
				}
			}
		})
	}
}
