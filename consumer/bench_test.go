package consumer_test

import (
	"context"
	"os"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/consumer"
	"github.com/reliable-go/reliable/reliabletest"
)

// benchMessages is the message count of BenchmarkKeyLanesVsSerial; the issue's
// figure is 10000 (RELIABLE_BENCH_MESSAGES overrides it, e.g. for a CI smoke
// run).
func benchMessages() int {
	if n, err := strconv.Atoi(os.Getenv("RELIABLE_BENCH_MESSAGES")); err == nil && n > 0 {
		return n
	}
	return 10000
}

// BenchmarkKeyLanesVsSerial: one partition, 100 keys, a 5 ms handler. Key
// lanes at concurrency 64 against partition-serial consumption (concurrency
// 1, what a plain consumer loop does). Order per key is checked in both.
//
//	go test -run '^$' -bench KeyLanesVsSerial -benchtime 1x ./consumer/
func BenchmarkKeyLanesVsSerial(b *testing.B) {
	for _, conc := range []int{64, 1} {
		name := "lanes-64"
		if conc == 1 {
			name = "serial"
		}
		b.Run(name, func(b *testing.B) {
			n := benchMessages()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				broker := reliabletest.NewBroker(reliabletest.BrokerOptions{Partitions: 1})
				broker.CreateTopic("orders")
				msgs := make([]*reliable.Message, n)
				for j := range msgs {
					msgs[j] = &reliable.Message{Topic: "orders", Key: "order-" + strconv.Itoa(j%100),
						Headers: map[string]string{"seq": strconv.Itoa(j / 100)}}
				}
				if err := broker.Publisher().Publish(context.Background(), msgs...); err != nil {
					b.Fatal(err)
				}
				led := newLedger()
				var handled atomic.Int64
				h := reliable.HandlerFunc(func(_ context.Context, m *reliable.Message) error {
					time.Sleep(5 * time.Millisecond)
					led.apply(m)
					handled.Add(1)
					return nil
				})
				c, err := consumer.New(broker.Subscriber("bench", reliabletest.SubscriberOptions{}), h,
					consumer.Config{Topic: "orders", Concurrency: conc, Logger: quiet})
				if err != nil {
					b.Fatal(err)
				}
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan error, 1)
				b.StartTimer()
				start := time.Now()
				go func() { done <- c.Run(ctx) }()
				for handled.Load() < int64(n) {
					time.Sleep(time.Millisecond)
				}
				elapsed := time.Since(start)
				b.StopTimer()
				cancel()
				if err := <-done; err != nil {
					b.Fatal(err)
				}
				led.check(b, msgs)
				b.ReportMetric(float64(n)/elapsed.Seconds(), "msgs/s")
				b.ReportMetric(elapsed.Seconds(), "s/run")
			}
		})
	}
}

// BenchmarkPipelineOverhead measures what dedupe and the retry-table check
// add per message: 5000 messages over 100 keys, a 5 ms handler, 64 lanes,
// the in-memory broker, and the real Redis and PostgreSQL.
//
//	make services && go test -run '^$' -bench PipelineOverhead -benchtime 1x ./consumer/
func BenchmarkPipelineOverhead(b *testing.B) {
	variants := []struct {
		name  string
		setup func(b *testing.B, cfg *consumer.Config)
	}{
		{"bare", func(*testing.B, *consumer.Config) {}},
		{"dedupe-redis", func(b *testing.B, cfg *consumer.Config) {
			cfg.Dedupe = dedupeStore(b, "redis", nil, shortName("bench_"), "")
		}},
		{"dedupe-postgres", func(b *testing.B, cfg *consumer.Config) {
			cfg.Dedupe = dedupeStore(b, "postgres", pgPool(b), shortName("bench_"), shortName("idem_"))
		}},
		{"retry-table-check", func(b *testing.B, cfg *consumer.Config) {
			cfg.RetryTable = retryTable(b, pgPool(b), shortName("bench_"))
		}},
		{"redis-dedupe+retry-table", func(b *testing.B, cfg *consumer.Config) {
			cfg.Dedupe = dedupeStore(b, "redis", nil, shortName("bench_"), "")
			cfg.RetryTable = retryTable(b, pgPool(b), shortName("bench_"))
		}},
	}
	n := min(benchMessages(), 5000)
	for _, v := range variants {
		b.Run(v.name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				broker := reliabletest.NewBroker(reliabletest.BrokerOptions{Partitions: 1})
				broker.CreateTopic("orders")
				msgs := make([]*reliable.Message, n)
				for j := range msgs {
					msgs[j] = &reliable.Message{Topic: "orders", Key: "order-" + strconv.Itoa(j%100)}
				}
				if err := broker.Publisher().Publish(context.Background(), msgs...); err != nil {
					b.Fatal(err)
				}
				var handled atomic.Int64
				h := reliable.HandlerFunc(func(context.Context, *reliable.Message) error {
					time.Sleep(5 * time.Millisecond)
					handled.Add(1)
					return nil
				})
				cfg := consumer.Config{Topic: "orders", Concurrency: 64, Logger: quiet, DisableRetrier: true}
				v.setup(b, &cfg)
				c, err := consumer.New(broker.Subscriber("bench", reliabletest.SubscriberOptions{}), h, cfg)
				if err != nil {
					b.Fatal(err)
				}
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan error, 1)
				b.StartTimer()
				start := time.Now()
				go func() { done <- c.Run(ctx) }()
				for handled.Load() < int64(n) {
					time.Sleep(time.Millisecond)
				}
				elapsed := time.Since(start)
				b.StopTimer()
				cancel()
				if err := <-done; err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(float64(n)/elapsed.Seconds(), "msgs/s")
			}
		})
	}
}
