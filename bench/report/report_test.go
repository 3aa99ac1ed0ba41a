package main

import (
	"bytes"
	"io"
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
	writeTable(&out, o, r, map[string]string{"consumer": "exit status 1"}, time.Minute)
	s := out.String()
	for _, want := range []string{
		"| Kafka produce, batches of 500 ", "20000 msgs/s", "20719 msgs/s", "0.97x",
		"n/a", // async was not measured
		"64.45x", "23.54x", "0.50x (lower is better)", "0.025x (lower is better)", "FAILED consumer: exit status 1",
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

// TestStepsTable: the consumer's store-step figures (p50 / p99 per message)
// and each setup's rate against the bare pipeline of the same handler.
func TestStepsTable(t *testing.T) {
	r := results{}
	parseGoBench([]byte(`BenchmarkPipelineOverhead/bare-2   1   470000000 ns/op   10000 msgs/s
BenchmarkPipelineOverhead/dedupe-redis-2   1   480000000 ns/op   0.4419 begin-p50-ms   8.324 begin-p99-ms   0.5555 done-p50-ms   4.733 done-p99-ms   9500 msgs/s
BenchmarkPipelineOverhead/handler-1ms/bare-2   1   470000000 ns/op   40000 msgs/s
BenchmarkPipelineOverhead/handler-1ms/retry-table-check-2   1   470000000 ns/op   0.01 check-p50-ms   1.5 check-p99-ms   38000 msgs/s
`), r)
	var out bytes.Buffer
	writeSteps(&out, options{suites: []string{"consumer"}}, r)
	s := out.String()
	for _, want := range []string{
		"| dedupe-redis | 5 ms | 0.44 / 8.32 | - | 0.56 / 4.73 | 9500 | 0.95x |",
		"| retry-table-check | 1 ms | - | 0.01 / 1.50 | - | 38000 | 0.95x |",
	} {
		if !strings.Contains(strings.Join(strings.Fields(s), " "), want) {
			t.Errorf("steps table lacks %q:\n%s", want, s)
		}
	}
	out.Reset()
	writeSteps(&out, options{suites: []string{"kafka"}}, r)
	if out.Len() != 0 {
		t.Errorf("steps table printed without the consumer suite:\n%s", out.String())
	}
}
