package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// results maps a benchmark name (as printed, GOMAXPROCS suffix included) to
// its metrics by unit ("msgs/s", "ns/op", "p99-ms"...).
type results map[string]map[string]float64

// get finds name's metric, ignoring the "-N" GOMAXPROCS suffix go test adds.
func (r results) get(name, unit string) (float64, bool) {
	if m, ok := r[name]; ok {
		v, ok := m[unit]
		return v, ok
	}
	for k, m := range r {
		if suffix, ok := strings.CutPrefix(k, name+"-"); ok {
			if _, err := strconv.Atoi(suffix); err == nil {
				v, ok := m[unit]
				return v, ok
			}
		}
	}
	return 0, false
}

// parseGoBench adds the benchmark lines of go test output to r:
//
//	BenchmarkProduce/async/reliable-2   20000   41234 ns/op   24.8 MB/s   24251 msgs/s
func parseGoBench(out []byte, r results) {
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		if _, err := strconv.Atoi(f[1]); err != nil {
			continue
		}
		m := map[string]float64{}
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				break
			}
			m[f[i+1]] = v
		}
		if ns, ok := m["ns/op"]; ok && ns > 0 {
			if _, has := m["msgs/s"]; !has {
				m["ops/s"] = 1e9 / ns
			}
		}
		r[f[0]] = m
	}
}

// parseOutbox adds the summary lines of bench/outbox to r, as
// "outbox/reliable" and "outbox/watermill":
//
//	reliable outbox relay                  9650/s      3.1ms     12.4ms     40.2ms
//	watermill SQL forwarder                 410/s    110.2ms    501.3ms    1.02s
func parseOutbox(out []byte, r results) {
	names := map[string]string{"reliable outbox relay": "outbox/reliable", "watermill SQL forwarder": "outbox/watermill",
		"(baseline: kafka.NewProducer alone)": "outbox/direct", "(baseline: commit, then publish)": "outbox/dualwrite",
		"(relay with batch confirms)": "outbox/batch"}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		for prefix, name := range names {
			rest, ok := strings.CutPrefix(line, prefix)
			if !ok {
				continue
			}
			f := strings.Fields(rest)
			if len(f) < 4 {
				continue
			}
			m := map[string]float64{}
			if rate, err := strconv.ParseFloat(strings.TrimSuffix(f[0], "/s"), 64); err == nil {
				m["msgs/s"] = rate
			} else if f[0] != "-" { // "-": a latency-only line
				continue
			}
			for i, unit := range []string{"p50-ms", "p99-ms", "max-ms"} {
				if d, err := time.ParseDuration(f[1+i]); err == nil {
					m[unit] = float64(d) / float64(time.Millisecond)
				}
			}
			r[name] = m
		}
	}
}

// roundOf splits a benchmark name "<base>/r<round>", GOMAXPROCS suffix
// ("-2") or not, into its base name and round.
func roundOf(name string) (base string, round int, ok bool) {
	if i := strings.LastIndexByte(name, '-'); i > 0 {
		if _, err := strconv.Atoi(name[i+1:]); err == nil && strings.Contains(name[:i], "/r") {
			name = name[:i]
		}
	}
	i := strings.LastIndex(name, "/r")
	if i < 0 {
		return "", 0, false
	}
	round, err := strconv.Atoi(name[i+2:])
	if err != nil || round < 1 {
		return "", 0, false
	}
	return name[:i], round, true
}

// medianRounds adds, for each benchmark run in rounds ("<base>/r<round>",
// see consumer BenchmarkPipelineOverhead), an entry under its base name
// holding the median of each metric over the rounds, and the number of
// rounds as "rounds". The rounds' own entries stay.
func medianRounds(r results) {
	byBase := map[string][]map[string]float64{}
	for name, m := range r {
		if base, _, ok := roundOf(name); ok {
			byBase[base] = append(byBase[base], m)
		}
	}
	for base, ms := range byBase {
		vals := map[string][]float64{}
		for _, m := range ms {
			for unit, v := range m {
				vals[unit] = append(vals[unit], v)
			}
		}
		agg := map[string]float64{"rounds": float64(len(ms))}
		for unit, vs := range vals {
			agg[unit] = median(vs)
		}
		r[base] = agg
	}
}

func median(vs []float64) float64 {
	vs = slices.Clone(vs)
	slices.Sort(vs)
	n := len(vs)
	if n%2 == 1 {
		return vs[n/2]
	}
	return (vs[n/2-1] + vs[n/2]) / 2
}

// roundRatios returns sdk's metric over base's, round by round, for the
// rounds both ran.
func (r results) roundRatios(sdk, base, unit string) []float64 {
	sv, bv := map[int]float64{}, map[int]float64{}
	for name, m := range r {
		b, round, ok := roundOf(name)
		if !ok {
			continue
		}
		if v, ok := m[unit]; ok && b == sdk {
			sv[round] = v
		} else if ok && b == base {
			bv[round] = v
		}
	}
	var out []float64
	for round, s := range sv {
		if b, ok := bv[round]; ok && b > 0 {
			out = append(out, s/b)
		}
	}
	slices.Sort(out)
	return out
}

// row is one comparison of the table.
type row struct {
	what      string
	sdk       string // benchmark of this SDK
	sdkLabel  string
	base      string // benchmark of the raw client or peer
	baseLabel string
	unit      string
	lower     bool // lower is better (latency)
	// steady adds the steady-state figures ("steady-msgs/s") beside the
	// whole run's, for the consumer pipeline setups.
	steady bool
}

// suiteRows lists each suite's comparisons; the names are the benchmarks'
// own (see their doc comments).
var suiteRows = map[string][]row{
	"kafka": {
		{what: "Kafka produce, batches of 500", sdk: "BenchmarkProduce/sync-batch/reliable", sdkLabel: "kafka.NewProducer Publish",
			base: "BenchmarkProduce/sync-batch/raw-sarama", baseLabel: "raw sarama SyncProducer.SendMessages", unit: "msgs/s"},
		{what: "Kafka produce, one message per call", sdk: "BenchmarkProduce/async/reliable", sdkLabel: "kafka.Publisher PublishAsync",
			base: "BenchmarkProduce/async/raw-sarama", baseLabel: "raw sarama AsyncProducer", unit: "msgs/s"},
	},
	"rabbitmq": {
		{what: "RabbitMQ publish, 8 callers x 32 msgs", sdk: "BenchmarkPublish/publisher/8x32", sdkLabel: "rabbitmq.Publisher",
			base: "BenchmarkPublish/raw", baseLabel: "raw amqp091-go, 256 deferred confirms in flight", unit: "msgs/s"},
		{what: "RabbitMQ publish, 32 callers x 32 msgs", sdk: "BenchmarkPublish/publisher/32x32", sdkLabel: "rabbitmq.Publisher",
			base: "BenchmarkPublish/raw", baseLabel: "raw amqp091-go, 256 deferred confirms in flight", unit: "msgs/s"},
		{what: "RabbitMQ publish, 256 callers x 1 msg", sdk: "BenchmarkPublish/publisher/256x1", sdkLabel: "rabbitmq.Publisher",
			base: "BenchmarkPublish/raw", baseLabel: "raw amqp091-go, 256 deferred confirms in flight", unit: "msgs/s"},
		{what: "RabbitMQ publish with retries, 32 x 32", sdk: "BenchmarkPublish/producer/32x32", sdkLabel: "rabbitmq.NewProducer",
			base: "BenchmarkPublish/raw", baseLabel: "raw amqp091-go, 256 deferred confirms in flight", unit: "msgs/s"},
		{what: "RabbitMQ publish vs naive confirms", sdk: "BenchmarkPublish/publisher/32x32", sdkLabel: "rabbitmq.Publisher, 32 x 32",
			base: "BenchmarkPublish/one-at-a-time", baseLabel: "raw amqp091-go, wait for each confirm", unit: "msgs/s"},
	},
	"consumer": {
		{what: "consume 1 partition, 100 keys, 5 ms handler", sdk: "BenchmarkKeyLanesVsSerial/lanes-64", sdkLabel: "consumer key lanes, 64",
			base: "BenchmarkKeyLanesVsSerial/serial", baseLabel: "partition-serial loop", unit: "msgs/s"},
		{what: "pipeline + dedupe (Redis)", sdk: "BenchmarkPipelineOverhead/dedupe-redis", sdkLabel: "consumer, Redis dedupe",
			base: "BenchmarkPipelineOverhead/bare", baseLabel: "consumer, no stores", unit: "msgs/s", steady: true},
		{what: "pipeline + dedupe (PostgreSQL)", sdk: "BenchmarkPipelineOverhead/dedupe-postgres", sdkLabel: "consumer, PostgreSQL dedupe",
			base: "BenchmarkPipelineOverhead/bare", baseLabel: "consumer, no stores", unit: "msgs/s", steady: true},
		{what: "pipeline + retry-table check", sdk: "BenchmarkPipelineOverhead/retry-table-check", sdkLabel: "consumer, retry table",
			base: "BenchmarkPipelineOverhead/bare", baseLabel: "consumer, no stores", unit: "msgs/s", steady: true},
		{what: "pipeline + Redis dedupe + retry table", sdk: "BenchmarkPipelineOverhead/redis-dedupe+retry-table", sdkLabel: "consumer, both",
			base: "BenchmarkPipelineOverhead/bare", baseLabel: "consumer, no stores", unit: "msgs/s", steady: true},
		{what: "pipeline + PostgreSQL dedupe in the handler's tx", sdk: "BenchmarkPipelineOverhead/dedupe-postgres-tx", sdkLabel: "consumer, ProcessTx per message",
			base: "BenchmarkPipelineOverhead/bare", baseLabel: "consumer, no stores", unit: "msgs/s", steady: true},
		{what: "Redis dedupe batched vs one call per round trip", sdk: "BenchmarkPipelineOverhead/dedupe-redis", sdkLabel: "consumer, Redis dedupe",
			base: "BenchmarkPipelineOverhead/dedupe-redis-unbatched", baseLabel: "consumer, Redis dedupe, MaxBatch 1", unit: "msgs/s", steady: true},
		{what: "1 ms handler: pipeline + dedupe (Redis)", sdk: "BenchmarkPipelineOverhead/handler-1ms/dedupe-redis", sdkLabel: "consumer, Redis dedupe",
			base: "BenchmarkPipelineOverhead/handler-1ms/bare", baseLabel: "consumer, no stores", unit: "msgs/s", steady: true},
		{what: "1 ms handler: pipeline + dedupe (PostgreSQL)", sdk: "BenchmarkPipelineOverhead/handler-1ms/dedupe-postgres", sdkLabel: "consumer, PostgreSQL dedupe",
			base: "BenchmarkPipelineOverhead/handler-1ms/bare", baseLabel: "consumer, no stores", unit: "msgs/s", steady: true},
		{what: "1 ms handler: pipeline + retry-table check", sdk: "BenchmarkPipelineOverhead/handler-1ms/retry-table-check", sdkLabel: "consumer, retry table",
			base: "BenchmarkPipelineOverhead/handler-1ms/bare", baseLabel: "consumer, no stores", unit: "msgs/s", steady: true},
		{what: "1 ms handler: pipeline + Redis dedupe + retry table", sdk: "BenchmarkPipelineOverhead/handler-1ms/redis-dedupe+retry-table", sdkLabel: "consumer, both",
			base: "BenchmarkPipelineOverhead/handler-1ms/bare", baseLabel: "consumer, no stores", unit: "msgs/s", steady: true},
		{what: "1 ms handler: PostgreSQL dedupe in the handler's tx", sdk: "BenchmarkPipelineOverhead/handler-1ms/dedupe-postgres-tx", sdkLabel: "consumer, ProcessTx per message",
			base: "BenchmarkPipelineOverhead/handler-1ms/bare", baseLabel: "consumer, no stores", unit: "msgs/s", steady: true},
	},
	"outbox": {
		{what: "outbox backlog to Kafka, throughput", sdk: "outbox/reliable", sdkLabel: "outbox.Relay",
			base: "outbox/watermill", baseLabel: "watermill SQL forwarder", unit: "msgs/s"},
		{what: "outbox commit-to-confirm latency p50", sdk: "outbox/reliable", sdkLabel: "outbox.Relay",
			base: "outbox/watermill", baseLabel: "watermill SQL forwarder", unit: "p50-ms", lower: true},
		{what: "outbox commit-to-confirm latency p99", sdk: "outbox/reliable", sdkLabel: "outbox.Relay",
			base: "outbox/watermill", baseLabel: "watermill SQL forwarder", unit: "p99-ms", lower: true},
		{what: "what the outbox adds to latency, p50", sdk: "outbox/reliable", sdkLabel: "outbox.Relay",
			base: "outbox/direct", baseLabel: "kafka.NewProducer alone, no outbox", unit: "p50-ms", lower: true},
		{what: "what the outbox adds to latency, p99", sdk: "outbox/reliable", sdkLabel: "outbox.Relay",
			base: "outbox/direct", baseLabel: "kafka.NewProducer alone, no outbox", unit: "p99-ms", lower: true},
		{what: "outbox vs commit-then-publish, p50", sdk: "outbox/reliable", sdkLabel: "outbox.Relay",
			base: "outbox/dualwrite", baseLabel: "commit, then kafka.NewProducer (no outbox)", unit: "p50-ms", lower: true},
		{what: "outbox vs commit-then-publish, p99", sdk: "outbox/reliable", sdkLabel: "outbox.Relay",
			base: "outbox/dualwrite", baseLabel: "commit, then kafka.NewProducer (no outbox)", unit: "p99-ms", lower: true},
		{what: "relay confirms per message vs per batch, p50", sdk: "outbox/reliable", sdkLabel: "outbox.Relay, per-message confirms",
			base: "outbox/batch", baseLabel: "outbox.Relay, batch confirms", unit: "p50-ms", lower: true},
		{what: "relay confirms per message vs per batch, p99", sdk: "outbox/reliable", sdkLabel: "outbox.Relay, per-message confirms",
			base: "outbox/batch", baseLabel: "outbox.Relay, batch confirms", unit: "p99-ms", lower: true},
	},
}

func fmtRatio(x float64) string {
	if x < 0.1 {
		return fmt.Sprintf("%.3fx", x)
	}
	return fmt.Sprintf("%.2fx", x)
}

func format(v float64, unit string) string {
	switch {
	case strings.HasSuffix(unit, "-ms"):
		return fmt.Sprintf("%.1f ms", v)
	case v >= 100:
		return fmt.Sprintf("%.0f %s", v, unit)
	default:
		return fmt.Sprintf("%.1f %s", v, unit)
	}
}

// writeTable prints the one table, then the suites that failed and where
// each suite's raw output is (raw: suite -> file).
func writeTable(w io.Writer, o options, r results, failed map[string]string, took time.Duration, raw map[string]string) {
	fmt.Fprintf(w, "\n## make bench: this SDK beside the raw clients and watermill, same run\n\n")
	tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', 0)
	fmt.Fprintln(tw, "| comparison\t| this SDK\t| figure\t| baseline\t| figure\t| SDK / baseline\t|")
	fmt.Fprintln(tw, "|---\t|---\t|--:\t|---\t|--:\t|--:\t|")
	for _, s := range o.suites {
		for _, rw := range suiteRows[s] {
			sv, sok := r.get(rw.sdk, rw.unit)
			bv, bok := r.get(rw.base, rw.unit)
			sf, bf, ratio := "n/a", "n/a", "n/a"
			if sok {
				sf = format(sv, rw.unit)
			}
			if bok {
				bf = format(bv, rw.unit)
			}
			if sok && bok && bv > 0 {
				ratio = fmtRatio(sv / bv)
				if rw.lower {
					ratio += " (lower is better)"
				}
			}
			if rw.steady {
				ss, sok := r.get(rw.sdk, "steady-msgs/s")
				bs, bok := r.get(rw.base, "steady-msgs/s")
				if sok {
					sf += fmt.Sprintf(" (steady %.0f)", ss)
				}
				if bok {
					bf += fmt.Sprintf(" (steady %.0f)", bs)
				}
				if sok && bok && bs > 0 {
					ratio += " (steady " + fmtRatio(ss/bs) + ")"
				}
			}
			fmt.Fprintf(tw, "| %s\t| %s\t| %s\t| %s\t| %s\t| %s\t|\n", rw.what, rw.sdkLabel, sf, rw.baseLabel, bf, ratio)
		}
	}
	tw.Flush()
	if slices.Contains(o.suites, "consumer") {
		rounds := "each setup run once"
		if n, ok := r.get("BenchmarkPipelineOverhead/bare", "rounds"); ok {
			rounds = fmt.Sprintf("the median of %.0f rounds, every setup run once per round, interleaved", n)
		}
		fmt.Fprintf(w, "\nConsumer pipeline rows (\"pipeline + ...\", %s): the first figure and ratio are the whole run, messages over the time from Run to the last message settled (handled, done recorded, acked), start-up included; \"steady\" is the rate once started, the messages settled after the first 10%% over the time from then to the last. Start-up (Run to the first message settled) is in the steps table below.\n", rounds)
	}
	writeSteps(w, o, r)
	fmt.Fprintf(w, "\nSuites: %s; took %s. Kafka and RabbitMQ: %d and %d messages per variant; consumer: %s; outbox: %d-row backlog (watermill %d), latency at %d msgs/s for %s.\n",
		strings.Join(o.suites, ", "), took.Round(time.Second), o.kafkaN, o.rabbitN, consumerSizes(o), o.outboxN, o.outboxWMN, o.outboxRate, o.outboxDuration)
	for _, s := range o.suites {
		if err, ok := failed[s]; ok {
			fmt.Fprintf(w, "\nFAILED %s: %s\n", s, err)
		}
	}
	var files []string
	for _, s := range o.suites {
		if f, ok := raw[s]; ok {
			files = append(files, s+": "+f)
		}
	}
	if len(files) > 0 {
		fmt.Fprintf(w, "\nRaw output of each suite: %s\n", strings.Join(files, ", "))
	}
}

// consumerSizes describes the consumer suite's message counts and rounds
// (see consumer/bench_test.go: the pipeline runs twice the key-lane count,
// 1.5 times that with the 1 ms handler; the serial loop a fifth).
func consumerSizes(o options) string {
	n := o.consumerN
	if n <= 0 {
		n = 10000
	}
	rounds := o.consumerRounds
	if rounds <= 0 {
		rounds = 3
	}
	return fmt.Sprintf("%d messages for key lanes (serial loop %d); %d per pipeline setup (%d with the 1 ms handler), %d interleaved rounds",
		n, max(n/5, 1), 2*n, 2*n*3/2, rounds)
}

// stepVariants are the BenchmarkPipelineOverhead setups writeSteps lists.
var stepVariants = []string{"bare", "dedupe-redis", "dedupe-redis-unbatched", "dedupe-postgres", "dedupe-postgres-tx", "retry-table-check", "redis-dedupe+retry-table"}

// writeSteps prints, when the consumer suite ran, each pipeline setup's
// start-up, what each of its store steps costs per message (p50 / p99 in
// steady state, and the whole run's p99) and its rates against the bare
// pipeline of the same handler, whole run and steady, with the range of the
// ratio over the rounds.
func writeSteps(w io.Writer, o options, r results) {
	if !slices.Contains(o.suites, "consumer") {
		return
	}
	fmt.Fprintf(w, "\n### consumer pipeline setups: start-up, store steps per message, rates\n\n")
	fmt.Fprintf(w, "Store steps: p50 / p99 in ms once started (after the first 10%% of messages), and in brackets the whole run's p99. Start-up: ms from Run to the first message settled. \"vs bare\": the ratio of the medians, and in brackets the lowest and highest ratio of one round (each round's setup against the same round's bare pipeline).\n\n")
	tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', 0)
	fmt.Fprintln(tw, "| setup\t| handler\t| start-up\t| dedupe Begin\t| retry-table check\t| dedupe Done\t| msgs/s\t| vs bare\t| steady msgs/s\t| steady vs bare\t|")
	fmt.Fprintln(tw, "|---\t|---\t|--:\t|--:\t|--:\t|--:\t|--:\t|--:\t|--:\t|--:\t|")
	for _, h := range []struct{ label, prefix string }{{"5 ms", ""}, {"1 ms", "handler-1ms/"}} {
		baseName := "BenchmarkPipelineOverhead/" + h.prefix + "bare"
		for _, v := range stepVariants {
			name := "BenchmarkPipelineOverhead/" + h.prefix + v
			rate, ok := r.get(name, "msgs/s")
			if !ok {
				continue
			}
			step := func(s string) string {
				p50, ok50 := r.get(name, s+"-steady-p50-ms")
				p99, ok99 := r.get(name, s+"-steady-p99-ms")
				whole, okw := r.get(name, s+"-p99-ms")
				if !ok50 || !ok99 {
					return "-"
				}
				out := fmt.Sprintf("%.2f / %.2f", p50, p99)
				if okw {
					out += fmt.Sprintf(" (%.2f)", whole)
				}
				return out
			}
			vsBare := func(unit string) string {
				if v == "bare" {
					return "1.00x"
				}
				s, sok := r.get(name, unit)
				b, bok := r.get(baseName, unit)
				if !sok || !bok || b <= 0 {
					return "n/a"
				}
				out := fmtRatio(s / b)
				if rs := r.roundRatios(name, baseName, unit); len(rs) > 1 {
					out += fmt.Sprintf(" (%.2f-%.2f)", rs[0], rs[len(rs)-1])
				}
				return out
			}
			cell := func(unit, f string) string {
				if x, ok := r.get(name, unit); ok {
					return fmt.Sprintf(f, x)
				}
				return "n/a"
			}
			fmt.Fprintf(tw, "| %s\t| %s\t| %s\t| %s\t| %s\t| %s\t| %.0f\t| %s\t| %s\t| %s\t|\n", v, h.label,
				cell("startup-ms", "%.0f ms"), step("begin"), step("check"), step("done"),
				rate, vsBare("msgs/s"), cell("steady-msgs/s", "%.0f"), vsBare("steady-msgs/s"))
		}
	}
	tw.Flush()
}
