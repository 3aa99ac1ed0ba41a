package kafka

import (
	"context"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/IBM/sarama"

	"github.com/reliable-go/reliable"
)

// Benchmarks of this package's producer against raw sarama with the same
// durability settings (acks=all, idempotent, one in-flight request, murmur2)
// and the same records (1 KiB payload, key, the same ce_ headers), on the
// real cluster. Run all in one go:
//
//	go test -run '^$' -bench 'BenchmarkProduce' -benchtime 20000x -count 3 ./adapters/kafka/

const (
	benchPayload = 1024
	benchBatch   = 500
	benchKeys    = 1000
)

var (
	benchTopicOnce sync.Once
	benchTopic     string
)

func benchSetup(b *testing.B) (Config, string) {
	brokers := kafkaBrokers(b)
	benchTopicOnce.Do(func() {
		benchTopic = uniqueName("bench")
		// Not deleted by createTopic's cleanup of the first sub-benchmark:
		// created here with a throwaway testing.TB.
		createTopic(&onceTB{b}, brokers, benchTopic, 6, nil)
	})
	cfg := Config{Brokers: brokers, Logger: testLogger(), Audit: AuditConfig{Policy: AuditOff}}
	return cfg, benchTopic
}

// onceTB lets the shared topic outlive the sub-benchmark that created it.
type onceTB struct{ *testing.B }

func (o *onceTB) Cleanup(func()) {}

func benchMessages(topic string, n int) []*reliable.Message {
	payload := make([]byte, benchPayload)
	msgs := make([]*reliable.Message, n)
	for i := range msgs {
		msgs[i] = &reliable.Message{
			Topic: topic, Key: "order-" + strconv.Itoa(i%benchKeys), Type: "order.paid",
			Payload: payload,
		}
	}
	return msgs
}

// rawRecord builds the record the SDK would send for m, so raw sarama
// carries the same bytes and pays for building them (an ID, the headers), as
// a raw-sarama user who wants deduplicable messages would.
func rawRecord(m *reliable.Message, topic string) *sarama.ProducerMessage {
	m.EnsureID()
	m.Time = time.Now()
	return toRecord(m, topic, "")
}

func rawConfig(b *testing.B, cfg Config) *sarama.Config {
	sc, err := cfg.withDefaults().saramaConfig(roleProducer)
	if err != nil {
		b.Fatal(err)
	}
	return sc
}

func reportRate(b *testing.B, start time.Time) {
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
}

func BenchmarkProduce(b *testing.B) {
	b.Run("sync-batch/raw-sarama", func(b *testing.B) {
		cfg, topic := benchSetup(b)
		sp, err := sarama.NewSyncProducer(cfg.Brokers, rawConfig(b, cfg))
		if err != nil {
			b.Fatal(err)
		}
		defer sp.Close()
		msgs := benchMessages(topic, b.N)
		b.SetBytes(benchPayload)
		b.ResetTimer()
		start := time.Now()
		for i := 0; i < b.N; i += benchBatch {
			batch := msgs[i:min(i+benchBatch, b.N)]
			recs := make([]*sarama.ProducerMessage, len(batch))
			for j, m := range batch {
				recs[j] = rawRecord(m, topic)
			}
			if err := sp.SendMessages(recs); err != nil {
				b.Fatal(err)
			}
		}
		reportRate(b, start)
	})
	b.Run("sync-batch/reliable", func(b *testing.B) {
		cfg, topic := benchSetup(b)
		p, err := NewProducer(cfg)
		if err != nil {
			b.Fatal(err)
		}
		defer p.Close()
		msgs := benchMessages(topic, b.N)
		ctx := context.Background()
		b.SetBytes(benchPayload)
		b.ResetTimer()
		start := time.Now()
		for i := 0; i < b.N; i += benchBatch {
			if err := p.Publish(ctx, msgs[i:min(i+benchBatch, b.N)]...); err != nil {
				b.Fatal(err)
			}
		}
		reportRate(b, start)
	})
	b.Run("async/raw-sarama", func(b *testing.B) {
		cfg, topic := benchSetup(b)
		ap, err := sarama.NewAsyncProducer(cfg.Brokers, rawConfig(b, cfg))
		if err != nil {
			b.Fatal(err)
		}
		defer ap.Close()
		msgs := benchMessages(topic, b.N)
		var acked atomic.Int64
		all := make(chan struct{})
		go func() {
			for range ap.Successes() {
				if acked.Add(1) == int64(b.N) {
					close(all)
				}
			}
		}()
		go func() {
			for e := range ap.Errors() {
				b.Error(e)
			}
		}()
		b.SetBytes(benchPayload)
		b.ResetTimer()
		start := time.Now()
		for _, m := range msgs {
			ap.Input() <- rawRecord(m, topic)
		}
		<-all
		reportRate(b, start)
	})
	b.Run("async/reliable", func(b *testing.B) {
		cfg, topic := benchSetup(b)
		p, err := NewPublisher(cfg)
		if err != nil {
			b.Fatal(err)
		}
		defer p.Close()
		msgs := benchMessages(topic, b.N)
		var acked atomic.Int64
		all := make(chan struct{})
		done := func(_ *reliable.Message, err error) {
			if err != nil {
				b.Error(err)
			}
			if acked.Add(1) == int64(b.N) {
				close(all)
			}
		}
		ctx := context.Background()
		b.SetBytes(benchPayload)
		b.ResetTimer()
		start := time.Now()
		for _, m := range msgs {
			if err := p.PublishAsync(ctx, m, done); err != nil {
				b.Fatal(err)
			}
		}
		<-all
		reportRate(b, start)
	})
}

// TestProducerThroughputVsRaw measures this producer against raw sarama on
// the real cluster, alternating the two in every round so that load from
// other processes hits both alike, and reports the median of the per-round
// ratios. It runs only with RELIABLE_KAFKA_BENCH=1:
//
//	RELIABLE_KAFKA_BENCH=1 go test -run TestProducerThroughputVsRaw -v ./adapters/kafka/
//
// RELIABLE_KAFKA_BENCH_ROUNDS (default 7) and RELIABLE_KAFKA_BENCH_MESSAGES
// (default 20000) size it.
func TestProducerThroughputVsRaw(t *testing.T) {
	if os.Getenv("RELIABLE_KAFKA_BENCH") != "1" {
		t.Skip("set RELIABLE_KAFKA_BENCH=1 to run the throughput comparison")
	}
	brokers := kafkaBrokers(t)
	rounds := envInt("RELIABLE_KAFKA_BENCH_ROUNDS", 7)
	n := envInt("RELIABLE_KAFKA_BENCH_MESSAGES", 20000)
	topic := uniqueName("bench")
	createTopic(t, brokers, topic, 6, nil)
	cfg := Config{Brokers: brokers, Logger: testLogger(), Audit: AuditConfig{Policy: AuditOff}}
	ctx := context.Background()

	sc, err := cfg.withDefaults().saramaConfig(roleProducer)
	if err != nil {
		t.Fatal(err)
	}
	sp, err := sarama.NewSyncProducer(brokers, sc)
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	sc2, _ := cfg.withDefaults().saramaConfig(roleProducer)
	ap, err := sarama.NewAsyncProducer(brokers, sc2)
	if err != nil {
		t.Fatal(err)
	}
	defer ap.Close()
	apDone := make(chan error, 1024)
	go func() {
		for range ap.Successes() {
			apDone <- nil
		}
	}()
	go func() {
		for e := range ap.Errors() {
			apDone <- e.Err
		}
	}()
	prod, err := NewProducer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	pub, err := NewPublisher(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()

	modes := map[string]func() error{
		"sync-batch/raw-sarama": func() error {
			msgs := benchMessages(topic, n)
			for i := 0; i < n; i += benchBatch {
				batch := msgs[i:min(i+benchBatch, n)]
				recs := make([]*sarama.ProducerMessage, len(batch))
				for j, m := range batch {
					recs[j] = rawRecord(m, topic)
				}
				if err := sp.SendMessages(recs); err != nil {
					return err
				}
			}
			return nil
		},
		"sync-batch/reliable": func() error {
			msgs := benchMessages(topic, n)
			for i := 0; i < n; i += benchBatch {
				if err := prod.Publish(ctx, msgs[i:min(i+benchBatch, n)]...); err != nil {
					return err
				}
			}
			return nil
		},
		"async/raw-sarama": func() error {
			msgs := benchMessages(topic, n)
			go func() {
				for _, m := range msgs {
					ap.Input() <- rawRecord(m, topic)
				}
			}()
			for range n {
				if err := <-apDone; err != nil {
					return err
				}
			}
			return nil
		},
		"async/reliable": func() error {
			msgs := benchMessages(topic, n)
			done := make(chan error, 1024)
			go func() {
				for _, m := range msgs {
					if err := pub.PublishAsync(ctx, m, func(_ *reliable.Message, err error) { done <- err }); err != nil {
						done <- err
					}
				}
			}()
			for range n {
				if err := <-done; err != nil {
					return err
				}
			}
			return nil
		},
	}
	rate := map[string][]float64{}
	ratio := map[string][]float64{}
	cpu := map[string][]float64{} // client CPU µs per message, all goroutines
	for r := 0; r < rounds; r++ {
		for _, path := range []string{"sync-batch", "async"} {
			order := []string{path + "/raw-sarama", path + "/reliable"}
			if r%2 == 1 {
				order[0], order[1] = order[1], order[0]
			}
			got := map[string]float64{}
			for _, mode := range order {
				start, cpu0 := time.Now(), processCPU()
				if err := modes[mode](); err != nil {
					t.Fatalf("%s: %v", mode, err)
				}
				got[mode] = float64(n) / time.Since(start).Seconds()
				rate[mode] = append(rate[mode], got[mode])
				cpu[mode] = append(cpu[mode], float64((processCPU()-cpu0).Microseconds())/float64(n))
			}
			ratio[path] = append(ratio[path], got[path+"/reliable"]/got[path+"/raw-sarama"])
		}
	}
	for _, path := range []string{"sync-batch", "async"} {
		raw, rel := median(rate[path+"/raw-sarama"]), median(rate[path+"/reliable"])
		t.Logf("%-10s raw sarama median %7.0f msgs/s, reliable median %7.0f msgs/s: ratio of medians %.3f, median per-round ratio %.3f (rounds: %s)",
			path, raw, rel, rel/raw, median(ratio[path]), fmtRatios(ratio[path]))
		t.Logf("%-10s client CPU per message: raw sarama %.1fµs, reliable %.1fµs (medians)",
			path, median(cpu[path+"/raw-sarama"]), median(cpu[path+"/reliable"]))
	}
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func fmtRatios(xs []float64) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = strconv.FormatFloat(x, 'f', 2, 64)
	}
	return strings.Join(parts, " ")
}

// processCPU is the user+system CPU time the test process used so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
