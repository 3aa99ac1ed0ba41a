package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

const goBenchOut = `goos: linux
goarch: amd64
pkg: github.com/reliable-go/reliable/adapters/kafka
BenchmarkProduce/sync-batch/raw-sarama-2         	   20000	     48263 ns/op	  21.22 MB/s	     20719 msgs/s
BenchmarkProduce/sync-batch/reliable-2           	   20000	     50000 ns/op	  20.48 MB/s	     20000 msgs/s
BenchmarkKeyLanesVsSerial/lanes-64-2             	       1	 812345678 ns/op	         0.81 s/run	     12310 msgs/s
BenchmarkKeyLanesVsSerial/serial                 	       1	 999999999 ns/op	       191.0 msgs/s
PASS
`

const outboxOut = `outbox benchmark: PostgreSQL + 3-broker Kafka
run                                    throughput        p50        p99        max
reliable outbox relay                    9650/s      3.1ms     12.4ms     40.2ms
(baseline: kafka.NewProducer alone)           -      2.5ms      9.9ms     30.1ms
(baseline: commit, then publish)              -      4.0ms     11.0ms     31.0ms
(relay with batch confirms)                   -      6.2ms     24.8ms     50.0ms
watermill SQL forwarder                   410/s    110.2ms   501.3ms      1.02s

relay / forwarder throughput: 23.5x
`

func TestParsersAndTable(t *testing.T) {
	r := results{}
	parseGoBench([]byte(goBenchOut), r)
	parseOutbox([]byte(outboxOut), r)
	for _, c := range []struct {
		name, unit string
		want       float64
	}{
		{"BenchmarkProduce/sync-batch/raw-sarama", "msgs/s", 20719},
		{"BenchmarkProduce/sync-batch/reliable", "ns/op", 50000},
		// "-64" is part of the name, "-2" the GOMAXPROCS suffix; and without
		// a suffix (GOMAXPROCS=1) the name is found as is.
		{"BenchmarkKeyLanesVsSerial/lanes-64", "msgs/s", 12310},
		{"BenchmarkKeyLanesVsSerial/serial", "msgs/s", 191},
		{"outbox/reliable", "msgs/s", 9650},
		{"outbox/watermill", "p99-ms", 501.3},
		{"outbox/watermill", "max-ms", 1020},
		{"outbox/direct", "p50-ms", 2.5},
		{"outbox/dualwrite", "p99-ms", 11},
		{"outbox/batch", "p99-ms", 24.8},
	} {
		got, ok := r.get(c.name, c.unit)
		if !ok || got != c.want {
			t.Errorf("%s %s = %v, %v; want %v", c.name, c.unit, got, ok, c.want)
		}
	}
	if _, ok := r.get("BenchmarkKeyLanesVsSerial/lanes", "msgs/s"); ok {
		t.Error("a name's prefix matched another benchmark")
	}

	var out bytes.Buffer
	o := options{suites: []string{"kafka", "consumer", "outbox"}}
	writeTable(&out, o, r, map[string]string{"consumer": "exit status 1"}, time.Minute,
		map[string]string{"kafka": "/tmp/x/kafka.txt", "consumer": "/tmp/x/consumer.txt"})
	s := out.String()
	for _, want := range []string{
		"| Kafka produce, batches of 500 ", "20000 msgs/s", "20719 msgs/s", "0.97x",
		"n/a", // async was not measured
		"64.45x", "23.54x", "0.50x (lower is better)", "0.025x (lower is better)", "FAILED consumer: exit status 1",
		"Raw output of each suite: kafka: /tmp/x/kafka.txt, consumer: /tmp/x/consumer.txt",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("table lacks %q:\n%s", want, s)
		}
	}
}

func TestParseFlagsRejectsUnknownSuite(t *testing.T) {
	if _, err := parseFlags([]string{"-suites", "kafka,nats"}, io.Discard); err == nil || !strings.Contains(err.Error(), "nats") {
		t.Errorf("err = %v", err)
	}
	o, err := parseFlags(nil, io.Discard)
	if err != nil || len(o.suites) != 4 {
		t.Errorf("defaults: %+v, %v", o, err)
	}
}

// pipelineOut is BenchmarkPipelineOverhead output of two interleaved rounds
// (three of dedupe-redis with the 5 ms handler), as go test prints it.
const pipelineOut = `BenchmarkPipelineOverhead/bare/r1-2   1   470000000 ns/op   10000 msgs/s   5.2 startup-ms   10200 steady-msgs/s
BenchmarkPipelineOverhead/dedupe-redis/r1-2   1   480000000 ns/op   0.4419 begin-p50-ms   8.324 begin-p99-ms   0.40 begin-steady-p50-ms   2.0 begin-steady-p99-ms   0.5555 done-p50-ms   4.733 done-p99-ms   0.5 done-steady-p50-ms   1.5 done-steady-p99-ms   9500 msgs/s   30 startup-ms   10100 steady-msgs/s
BenchmarkPipelineOverhead/handler-1ms/bare/r1-2   1   470000000 ns/op   40000 msgs/s   1.5 startup-ms   41000 steady-msgs/s
BenchmarkPipelineOverhead/handler-1ms/retry-table-check/r1-2   1   470000000 ns/op   0.01 check-p50-ms   1.5 check-p99-ms   0.01 check-steady-p50-ms   0.02 check-steady-p99-ms   38000 msgs/s   20 startup-ms   40000 steady-msgs/s
BenchmarkPipelineOverhead/bare/r2-2   1   470000000 ns/op   8000 msgs/s   5.4 startup-ms   8000 steady-msgs/s
BenchmarkPipelineOverhead/dedupe-redis/r2-2   1   480000000 ns/op   0.5 begin-p50-ms   9 begin-p99-ms   0.5 begin-steady-p50-ms   3.0 begin-steady-p99-ms   0.6 done-p50-ms   5 done-p99-ms   0.6 done-steady-p50-ms   2.5 done-steady-p99-ms   7000 msgs/s   40 startup-ms   7700 steady-msgs/s
BenchmarkPipelineOverhead/dedupe-redis/r3-2   1   480000000 ns/op   0.5 begin-p50-ms   9 begin-p99-ms   0.5 begin-steady-p50-ms   3.0 begin-steady-p99-ms   0.6 done-p50-ms   5 done-p99-ms   0.6 done-steady-p50-ms   2.5 done-steady-p99-ms   3000 msgs/s   900 startup-ms   3000 steady-msgs/s
BenchmarkPipelineOverhead/handler-1ms/bare/r2-2   1   470000000 ns/op   36000 msgs/s   1.5 startup-ms   37000 steady-msgs/s
BenchmarkPipelineOverhead/handler-1ms/retry-table-check/r2-2   1   470000000 ns/op   0.01 check-p50-ms   0.5 check-p99-ms   0.01 check-steady-p50-ms   0.04 check-steady-p99-ms   36000 msgs/s   24 startup-ms   37000 steady-msgs/s
`

// TestRoundsMedians: the rounds of a pipeline setup are found by name,
// with or without the GOMAXPROCS suffix, and their median (the mean of the
// middle two for an even count) stands for the setup; names that merely
// contain "/r" are not taken for rounds.
func TestRoundsMedians(t *testing.T) {
	for _, c := range []struct {
		name, base string
		round      int
		ok         bool
	}{
		{"BenchmarkPipelineOverhead/bare/r1-2", "BenchmarkPipelineOverhead/bare", 1, true},
		{"BenchmarkPipelineOverhead/redis-dedupe+retry-table/r12", "BenchmarkPipelineOverhead/redis-dedupe+retry-table", 12, true},
		{"BenchmarkPipelineOverhead/handler-1ms/retry-table-check/r3-16", "BenchmarkPipelineOverhead/handler-1ms/retry-table-check", 3, true},
		{"BenchmarkPublish/raw-2", "", 0, false},
		{"BenchmarkProduce/sync-batch/raw-sarama-2", "", 0, false},
		{"BenchmarkKeyLanesVsSerial/lanes-64-2", "", 0, false},
	} {
		base, round, ok := roundOf(c.name)
		if base != c.base || round != c.round || ok != c.ok {
			t.Errorf("roundOf(%q) = %q, %d, %v; want %q, %d, %v", c.name, base, round, ok, c.base, c.round, c.ok)
		}
	}
	r := results{}
	parseGoBench([]byte(pipelineOut+goBenchOut), r)
	medianRounds(r)
	for _, c := range []struct {
		name, unit string
		want       float64
	}{
		{"BenchmarkPipelineOverhead/bare", "msgs/s", 9000}, // 10000 and 8000
		{"BenchmarkPipelineOverhead/bare", "rounds", 2},
		{"BenchmarkPipelineOverhead/dedupe-redis", "msgs/s", 7000}, // 9500, 7000, 3000
		{"BenchmarkPipelineOverhead/dedupe-redis", "startup-ms", 40},
		{"BenchmarkPipelineOverhead/dedupe-redis", "rounds", 3},
		{"BenchmarkPipelineOverhead/handler-1ms/retry-table-check", "check-steady-p99-ms", 0.03},
		{"BenchmarkPipelineOverhead/dedupe-redis/r3", "msgs/s", 3000}, // a round stays
		{"BenchmarkKeyLanesVsSerial/serial", "msgs/s", 191},           // not in rounds: as is
	} {
		if got, ok := r.get(c.name, c.unit); !ok || got != c.want {
			t.Errorf("%s %s = %v, %v; want %v", c.name, c.unit, got, ok, c.want)
		}
	}
	if _, ok := r.get("BenchmarkPublish/raw", "rounds"); ok {
		t.Error("a benchmark without rounds got a median")
	}
	// Round by round: dedupe-redis r1 / bare r1 and r2 / r2; r3 has no bare.
	if got := r.roundRatios("BenchmarkPipelineOverhead/dedupe-redis", "BenchmarkPipelineOverhead/bare", "msgs/s"); !slices.Equal(got, []float64{0.875, 0.95}) {
		t.Errorf("round ratios = %v, want [0.875 0.95]", got)
	}
}

// TestStepsTable: each pipeline setup's start-up, store steps (steady p50 /
// p99, the whole run's p99) and rates against the bare pipeline of the same
// handler, whole run and steady, with the range of the ratio over rounds;
// and the main table's pipeline rows show both rates and both ratios.
func TestStepsTable(t *testing.T) {
	r := results{}
	parseGoBench([]byte(pipelineOut), r)
	medianRounds(r)
	var out bytes.Buffer
	o := options{suites: []string{"consumer"}}
	writeSteps(&out, o, r)
	s := strings.Join(strings.Fields(out.String()), " ")
	for _, want := range []string{
		"| bare | 5 ms | 5 ms | - | - | - | 9000 | 1.00x | 9100 | 1.00x |",
		// 7000 / 9000; rounds 0.875 and 0.95 (r3 has no bare). Steady 7700
		// / 9100; rounds 7700 / 8000 and 10100 / 10200.
		"| dedupe-redis | 5 ms | 40 ms | 0.50 / 3.00 (9.00) | - | 0.60 / 2.50 (5.00) | 7000 | 0.78x (0.88-0.95) | 7700 | 0.85x (0.96-0.99) |",
		"| retry-table-check | 1 ms | 22 ms | - | 0.01 / 0.03 (1.00) | - | 37000 | 0.97x (0.95-1.00) | 38500 | 0.99x (0.98-1.00) |",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("steps table lacks %q:\n%s", want, out.String())
		}
	}
	out.Reset()
	writeTable(&out, o, r, nil, time.Minute, nil)
	s = strings.Join(strings.Fields(out.String()), " ")
	for _, want := range []string{
		"| pipeline + dedupe (Redis) | consumer, Redis dedupe | 7000 msgs/s (steady 7700) | consumer, no stores | 9000 msgs/s (steady 9100) | 0.78x (steady 0.85x) |",
		"| 1 ms handler: pipeline + retry-table check | consumer, retry table | 37000 msgs/s (steady 38500) | consumer, no stores | 38000 msgs/s (steady 39000) | 0.97x (steady 0.99x) |",
		"the median of 2 rounds",
		"messages settled after the first 10%",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("table lacks %q:\n%s", want, out.String())
		}
	}
	out.Reset()
	writeSteps(&out, options{suites: []string{"kafka"}}, r)
	if out.Len() != 0 {
		t.Errorf("steps table printed without the consumer suite:\n%s", out.String())
	}
}

// TestRunGoKeepsRawOutput: a suite's output goes to its raw file as well
// as to the caller, also when the command fails.
func TestRunGoKeepsRawOutput(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ok.txt")
	out, err := runGo(context.Background(), dir, []string{"version"}, os.Environ(), path, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), "go version") || !strings.HasSuffix(string(b), string(out)) || !strings.HasPrefix(string(b), "# go version") {
		t.Errorf("output %q, raw file %q", out, b)
	}
	path = filepath.Join(dir, "failed.txt")
	out, err = runGo(context.Background(), dir, []string{"no-such-command"}, os.Environ(), path, nil)
	if err == nil {
		t.Fatal("a failing command reported no error")
	}
	if b, _ := os.ReadFile(path); len(out) == 0 || !strings.HasSuffix(string(b), string(out)) {
		t.Errorf("failed command: output %q, raw file %q", out, b)
	}
}
