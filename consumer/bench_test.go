package consumer_test

import (
	"context"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/consumer"
	"github.com/reliable-go/reliable/idempotency"
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
// add per message: 5000 messages (20000 with the 1 ms handler) over 100 keys
// on one partition, Concurrency 64,
// the in-memory broker, and the real Redis and PostgreSQL. The top-level
// variants use a 5 ms handler; the "handler-1ms/" ones the same setups with
// a 1 ms handler. Besides msgs/s each variant reports the p99 of every store
// step it ran, per message: dedupe Begin ("begin-p99-ms"), the retry-table
// check ("check-p99-ms") and dedupe Done ("done-p99-ms"); dedupe-postgres-tx
// runs the handler inside idempotency.PostgresStore.ProcessTx, one
// transaction per message; dedupe-redis-unbatched sends each Begin and Done
// alone (RedisConfig.MaxBatch 1), as the store did before it batched.
//
//	make services && go test -run '^$' -bench PipelineOverhead -benchtime 1x ./consumer/
func BenchmarkPipelineOverhead(b *testing.B) {
	type setup func(b *testing.B, cfg *consumer.Config, h *reliable.Handler)
	variants := []struct {
		name  string
		setup setup
	}{
		{"bare", func(*testing.B, *consumer.Config, *reliable.Handler) {}},
		{"dedupe-redis", func(b *testing.B, cfg *consumer.Config, _ *reliable.Handler) {
			cfg.Dedupe = dedupeStore(b, "redis", nil, shortName("bench_"), "")
		}},
		{"dedupe-redis-unbatched", func(b *testing.B, cfg *consumer.Config, _ *reliable.Handler) {
			s, err := idempotency.NewRedis(redisClient(b), idempotency.RedisConfig{Namespace: shortName("bench_"), MaxBatch: 1})
			if err != nil {
				b.Fatal(err)
			}
			cfg.Dedupe = s
		}},
		{"dedupe-postgres", func(b *testing.B, cfg *consumer.Config, _ *reliable.Handler) {
			cfg.Dedupe = dedupeStore(b, "postgres", pgPool(b), shortName("bench_"), shortName("idem_"))
		}},
		{"dedupe-postgres-tx", func(b *testing.B, _ *consumer.Config, h *reliable.Handler) {
			store := dedupeStore(b, "postgres", pgPool(b), shortName("bench_"), shortName("idem_")).(*idempotency.PostgresStore)
			inner := *h
			*h = reliable.HandlerFunc(func(ctx context.Context, m *reliable.Message) error {
				_, err := store.ProcessTx(ctx, m.ID, func(ctx context.Context, _ pgx.Tx) error { return inner.Handle(ctx, m) })
				return err
			})
		}},
		{"retry-table-check", func(b *testing.B, cfg *consumer.Config, _ *reliable.Handler) {
			cfg.RetryTable = retryTable(b, pgPool(b), shortName("bench_"))
		}},
		{"redis-dedupe+retry-table", func(b *testing.B, cfg *consumer.Config, _ *reliable.Handler) {
			cfg.Dedupe = dedupeStore(b, "redis", nil, shortName("bench_"), "")
			cfg.RetryTable = retryTable(b, pgPool(b), shortName("bench_"))
		}},
	}
	n := min(benchMessages(), 5000)
	for _, work := range []time.Duration{5 * time.Millisecond, time.Millisecond} {
		for _, v := range variants {
			name := v.name
			if work != 5*time.Millisecond {
				name = "handler-" + work.String() + "/" + v.name
			}
			n := n
			if work < 5*time.Millisecond {
				n *= 4 // a run as long as the 5 ms handler's, not dominated by start-up
			}
			b.Run(name, func(b *testing.B) {
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
					var h reliable.Handler = reliable.HandlerFunc(func(context.Context, *reliable.Message) error {
						time.Sleep(work)
						handled.Add(1)
						return nil
					})
					cfg := consumer.Config{Topic: "orders", Concurrency: 64, Logger: quiet, DisableRetrier: true}
					v.setup(b, &cfg, &h)
					c, err := consumer.New(broker.Subscriber("bench", reliabletest.SubscriberOptions{}), h, cfg)
					if err != nil {
						b.Fatal(err)
					}
					steps := newStepTimes()
					consumer.SetStepHook(steps.add)
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
					consumer.SetStepHook(nil)
					b.ReportMetric(float64(n)/elapsed.Seconds(), "msgs/s")
					for _, s := range []string{"begin", "check", "done"} {
						if p, ok := steps.quantile(s, 50); ok {
							b.ReportMetric(float64(p)/float64(time.Millisecond), s+"-p50-ms")
						}
						if p, ok := steps.quantile(s, 99); ok {
							b.ReportMetric(float64(p)/float64(time.Millisecond), s+"-p99-ms")
						}
					}
				}
			})
		}
	}
}

// stepTimes collects the consumer's per-step durations (consumer.SetStepHook).
type stepTimes struct {
	mu sync.Mutex
	d  map[string][]time.Duration
}

func newStepTimes() *stepTimes { return &stepTimes{d: map[string][]time.Duration{}} }

func (s *stepTimes) add(step string, d time.Duration) {
	s.mu.Lock()
	s.d[step] = append(s.d[step], d)
	s.mu.Unlock()
}

func (s *stepTimes) quantile(step string, q int) (time.Duration, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ds := s.d[step]
	if len(ds) == 0 {
		return 0, false
	}
	slices.Sort(ds)
	return ds[len(ds)*q/100], true
}
