package consumer_test

import (
	"context"
	"errors"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/consumer"
	"github.com/reliable-go/reliable/idempotency"
	"github.com/reliable-go/reliable/internal/testenv"
	"github.com/reliable-go/reliable/reliabletest"
	"github.com/reliable-go/reliable/retry"
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
// The serial loop takes a fifth of the messages (2000, about 11 s): its rate
// is one handler call at a time, the same over any count, and 10000 would
// take a minute of the suite.
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
			if conc == 1 {
				n = max(n/5, 1)
			}
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

// benchRounds is how many interleaved rounds BenchmarkPipelineOverhead
// runs of every setup (RELIABLE_BENCH_ROUNDS overrides the default 3).
func benchRounds() int {
	if n, err := strconv.Atoi(os.Getenv("RELIABLE_BENCH_ROUNDS")); err == nil && n > 0 {
		return n
	}
	return 3
}

// BenchmarkPipelineOverhead measures what dedupe and the retry-table check
// add per message: 2 x benchMessages (20000) messages over 100 keys on one
// partition, Concurrency 64, the in-memory broker, and the real Redis and
// PostgreSQL. The top-level setups use a 5 ms handler; the "handler-1ms/"
// ones the same setups with a 1 ms handler and 1.5 times the messages.
//
// Every setup runs benchRounds times, interleaved (round 1 of every setup,
// then round 2...), as sub-benchmarks named "<setup>/r<round>", so that a
// noisy moment of the machine lands on one round of one setup, not on all
// of a setup's runs; bench/report takes the median of the rounds.
//
// Each run starts its own consumer, store clients and pools, as a process
// does, and reports:
//   - msgs/s: the whole run, messages over the time from Run to the last
//     message settled (handled, done recorded and acked), start-up included;
//   - steady-msgs/s: the messages settled after the first 10% over the time
//     from then to the last, the rate once start-up (the first connections,
//     the blocked-key cache's listener and first load) is behind;
//   - startup-ms: the time from Run to the first message settled, and
//     first10pct-ms to the first 10% (where the steady part begins);
//   - per message, the p50 and p99 of every store step it ran: dedupe Begin
//     ("begin-"), the retry-table check ("check-") and dedupe Done ("done-"),
//     over the whole run ("begin-p99-ms") and over the steady part
//     ("begin-steady-p99-ms").
//
// dedupe-postgres-tx runs the handler inside
// idempotency.PostgresStore.ProcessTx, one transaction per message;
// dedupe-redis-unbatched sends each Begin and Done alone
// (RedisConfig.MaxBatch 1), as the store did before it batched.
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
	for round := 1; round <= benchRounds(); round++ {
		for _, work := range []time.Duration{5 * time.Millisecond, time.Millisecond} {
			n := 2 * benchMessages()
			prefix := ""
			if work != 5*time.Millisecond {
				prefix = "handler-" + work.String() + "/"
				n = n * 3 / 2 // bare: 0.9 s a run against 1.9 s; the suite stays under 3 minutes
			}
			for _, v := range variants {
				b.Run(prefix+v.name+"/r"+strconv.Itoa(round), func(b *testing.B) {
					for i := 0; i < b.N; i++ {
						b.StopTimer()
						benchPipelineRun(b, n, work, v.setup)
					}
				})
			}
		}
	}
}

// benchPipelineRun runs one consumer over n messages with a handler that
// takes work and the stores setup adds, and reports its metrics (see
// BenchmarkPipelineOverhead).
func benchPipelineRun(b *testing.B, n int, work time.Duration, setup func(*testing.B, *consumer.Config, *reliable.Handler)) {
	broker := reliabletest.NewBroker(reliabletest.BrokerOptions{Partitions: 1})
	broker.CreateTopic("orders")
	msgs := make([]*reliable.Message, n)
	for j := range msgs {
		msgs[j] = &reliable.Message{Topic: "orders", Key: "order-" + strconv.Itoa(j%100)}
	}
	if err := broker.Publisher().Publish(context.Background(), msgs...); err != nil {
		b.Fatal(err)
	}
	var h reliable.Handler = reliable.HandlerFunc(func(context.Context, *reliable.Message) error {
		time.Sleep(work)
		return nil
	})
	// Progress counts settled messages (Observe runs after the ack), so the
	// last dedupe Done and ack are inside the measured time.
	var (
		start              time.Time
		settled, unhandled atomic.Int64
		first, tenth, last atomic.Int64 // time.Duration since start
		finished           = make(chan struct{})
	)
	observe := func(e consumer.Event) {
		if e.Outcome != consumer.OutcomeHandled {
			unhandled.Add(1)
			return
		}
		k := settled.Add(1)
		switch at := time.Since(start); {
		case k == 1:
			first.Store(int64(at))
		case k == int64(n/10):
			tenth.Store(int64(at))
		case k == int64(n):
			last.Store(int64(at))
			close(finished)
		}
	}
	cfg := consumer.Config{Topic: "orders", Concurrency: 64, Logger: quiet, DisableRetrier: true, Observe: observe}
	setup(b, &cfg, &h)
	c, err := consumer.New(broker.Subscriber("bench", reliabletest.SubscriberOptions{}), h, cfg)
	if err != nil {
		b.Fatal(err)
	}
	steps := newStepTimes()
	consumer.SetStepHook(steps.add)
	defer consumer.SetStepHook(nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	b.StartTimer()
	start = time.Now()
	steps.start = start
	go func() { done <- c.Run(ctx) }()
	select {
	case <-finished:
	case <-time.After(5 * time.Minute):
		b.Fatalf("%d of %d messages settled after 5 minutes", settled.Load(), n)
	}
	b.StopTimer()
	cancel()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	if u := unhandled.Load(); u > 0 {
		b.Fatalf("%d deliveries ended otherwise than handled", u)
	}
	firstAt, tenthAt, lastAt := time.Duration(first.Load()), time.Duration(tenth.Load()), time.Duration(last.Load())
	b.ReportMetric(float64(n)/lastAt.Seconds(), "msgs/s")
	b.ReportMetric(float64(n-n/10)/(lastAt-tenthAt).Seconds(), "steady-msgs/s")
	b.ReportMetric(float64(firstAt)/float64(time.Millisecond), "startup-ms")
	b.ReportMetric(float64(tenthAt)/float64(time.Millisecond), "first10pct-ms")
	for _, s := range []string{"begin", "check", "done"} {
		for _, q := range []int{50, 99} {
			if p, ok := steps.quantile(s, q, 0); ok {
				b.ReportMetric(float64(p)/float64(time.Millisecond), s+"-p"+strconv.Itoa(q)+"-ms")
			}
			if p, ok := steps.quantile(s, q, tenthAt); ok {
				b.ReportMetric(float64(p)/float64(time.Millisecond), s+"-steady-p"+strconv.Itoa(q)+"-ms")
			}
		}
	}
}

// stepTimes collects the consumer's per-step durations (consumer.SetStepHook)
// and when each step ended, from start.
type stepTimes struct {
	start time.Time // set before the consumer runs
	mu    sync.Mutex
	d     map[string][]stepTime
}

type stepTime struct{ end, took time.Duration }

func newStepTimes() *stepTimes { return &stepTimes{d: map[string][]stepTime{}} }

func (s *stepTimes) add(step string, d time.Duration) {
	end := time.Since(s.start)
	s.mu.Lock()
	s.d[step] = append(s.d[step], stepTime{end: end, took: d})
	s.mu.Unlock()
}

// quantile returns the q-th percentile of step's durations among the steps
// that ended after from.
func (s *stepTimes) quantile(step string, q int, from time.Duration) (time.Duration, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ds []time.Duration
	for _, st := range s.d[step] {
		if st.end >= from {
			ds = append(ds, st.took)
		}
	}
	if len(ds) == 0 {
		return 0, false
	}
	slices.Sort(ds)
	return ds[len(ds)*q/100], true
}

// slowListenTracer counts the retry table's Blocked queries and holds each
// LISTEN for listenDelay, a listener slow to start (a busy database, a new
// connection's authentication).
type slowListenTracer struct {
	listenDelay time.Duration
	blocked     atomic.Int64
}

func (s *slowListenTracer) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	switch {
	case strings.HasPrefix(d.SQL, "LISTEN"):
		select {
		case <-time.After(s.listenDelay):
		case <-ctx.Done():
		}
	case strings.HasPrefix(d.SQL, "SELECT EXISTS (SELECT 1 FROM"):
		s.blocked.Add(1)
	}
	return ctx
}

func (*slowListenTracer) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// TestStartupChecksWaitForTheBlockedKeyCache: the deliveries that arrive
// at start-up, before the blocked-key cache's listener listens, wait for
// the cache (its first load and the listener) instead of each asking the
// retry table, a round trip and at start-up often a new connection apiece
// (what made the retry-table check cost 10-17% of a short benchmark run).
// The cache still answers for the blocked key: its messages are parked
// behind the entry that was in the table before the consumer started.
func TestStartupChecksWaitForTheBlockedKeyCache(t *testing.T) {
	group := shortName("g_")
	table := retryTable(t, pgPool(t), group)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := table.Park(ctx, &reliable.Message{ID: "old", Topic: "orders", Key: "order-0"}, errors.New("downstream unavailable")); err != nil {
		t.Fatal(err)
	}
	tracer := &slowListenTracer{listenDelay: 200 * time.Millisecond}
	pcfg, err := pgxpool.ParseConfig(testenv.PostgresDSN(t))
	if err != nil {
		t.Fatal(err)
	}
	pcfg.MaxConns = 8
	pcfg.ConnConfig.Tracer = tracer
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	traced, err := retry.NewTable(pool, table.Config())
	if err != nil {
		t.Fatal(err)
	}

	broker := reliabletest.NewBroker(reliabletest.BrokerOptions{Partitions: 1})
	broker.CreateTopic("orders")
	const keys, perKey = 100, 3
	var msgs []*reliable.Message
	for i := 0; i < keys*perKey; i++ {
		msgs = append(msgs, &reliable.Message{ID: "m" + strconv.Itoa(i), Topic: "orders", Key: "order-" + strconv.Itoa(i%keys)})
	}
	publish(t, broker, msgs...)
	var settled atomic.Int64
	all := make(chan struct{})
	ev := newEvents()
	runConsumer(t, broker.Subscriber(group, reliabletest.SubscriberOptions{}), reliable.HandlerFunc(func(context.Context, *reliable.Message) error {
		return nil
	}), consumer.Config{Topic: "orders", RetryTable: traced, DisableRetrier: true, Concurrency: 64, Logger: quiet,
		Observe: consumer.Observers(ev.observe, func(consumer.Event) {
			if settled.Add(1) == keys*perKey {
				close(all)
			}
		})})
	select {
	case <-all:
	case <-ctx.Done():
		t.Fatalf("%d of %d messages settled in 30s", settled.Load(), keys*perKey)
	}
	for _, m := range msgs {
		want := consumer.OutcomeHandled
		if m.Key == "order-0" {
			want = consumer.OutcomeParked
		}
		if got := ev.outcomes(m.ID); len(got) != 1 || got[0] != want {
			t.Errorf("%s (key %s): outcomes %v, want [%v]", m.ID, m.Key, got, want)
		}
	}
	// order-0's messages ask the table (the cache holds the key); no other.
	if n := tracer.blocked.Load(); n > perKey {
		t.Errorf("the table was asked %d times whether a key is blocked; want at most %d (the blocked key's messages): "+
			"the others should have waited for the cache", n, perKey)
	}
}
