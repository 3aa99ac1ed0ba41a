// Command report runs the SDK's performance comparisons in one go and prints
// one Markdown table: each figure of this SDK beside the raw client or the
// peer (watermill) measured in the same run, with their ratio.
//
// Suites (each measured in one process, SDK and baseline back to back):
//
//   - kafka: adapters/kafka BenchmarkProduce: the durable producer (batch
//     Publish and PublishAsync) against raw sarama with the same durability
//     settings and records.
//   - rabbitmq: adapters/rabbitmq BenchmarkPublish: the Publisher and the
//     durable producer against raw amqp091-go with a window of deferred
//     confirms, and against publishing one message at a time.
//   - consumer: consumer BenchmarkKeyLanesVsSerial (key lanes against
//     partition-serial consumption) and BenchmarkPipelineOverhead (what dedupe
//     and the retry-table check add against the bare pipeline, with a 5 ms
//     and a 1 ms handler, in interleaved rounds; a second table lists each
//     setup's start-up, each store step's p50 and p99 per message, and its
//     rates against the bare pipeline, whole run and steady state).
//   - outbox: bench/outbox (its own module, with watermill): the outbox relay
//     against watermill's SQL forwarder, throughput and latency.
//
// Run it from anywhere in the repository with the services up (make
// services); endpoints come from the RELIABLE_* variables or
// .cache/services.env:
//
//	cd bench/report && go run .             # everything (make bench)
//	go run . -suites kafka,consumer -v      # some suites, streaming their output
//
// Each suite's raw output is kept in a file (-raw-dir, by default a new
// directory under the system's temporary directory), named at the end of
// the table, so that an odd figure can be looked into after the run. The
// consumer pipeline setups run in interleaved rounds (-consumer-rounds); the
// table shows their medians, whole run and steady state.
//
// It exits 1 when a suite failed; the table then shows what was measured.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// options size the suites.
type options struct {
	suites         []string
	kafkaN         int
	rabbitN        int
	consumerN      int
	consumerRounds int
	outboxN        int
	outboxWMN      int
	outboxDuration time.Duration
	outboxRate     int
	verbose        bool
	rawDir         string
	timeout        time.Duration
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	var suites string
	fs := flag.NewFlagSet("report", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&suites, "suites", "kafka,rabbitmq,consumer,outbox", "suites to run")
	fs.IntVar(&o.kafkaN, "kafka-n", 20000, "messages per Kafka producer benchmark")
	fs.IntVar(&o.rabbitN, "rabbitmq-n", 20000, "messages per RabbitMQ publisher benchmark")
	fs.IntVar(&o.consumerN, "consumer-n", 0, "messages per consumer key-lane benchmark, twice that per pipeline setup (0: the benchmarks' own default, 10000)")
	fs.IntVar(&o.consumerRounds, "consumer-rounds", 0, "interleaved rounds of every consumer pipeline setup, reported as medians (0: the benchmark's default, 3)")
	fs.IntVar(&o.outboxN, "outbox-n", 50000, "outbox backlog relayed by the reliable relay")
	fs.IntVar(&o.outboxWMN, "outbox-wm-n", 10000, "outbox backlog relayed by watermill's forwarder")
	fs.DurationVar(&o.outboxDuration, "outbox-duration", 15*time.Second, "length of each outbox latency run")
	fs.IntVar(&o.outboxRate, "outbox-rate", 1000, "messages per second offered in the outbox latency runs")
	fs.BoolVar(&o.verbose, "v", false, "stream the suites' output to stderr")
	fs.StringVar(&o.rawDir, "raw-dir", "", "keep each suite's raw output in this directory as <suite>.txt (default: a new directory under the system's temporary directory)")
	fs.DurationVar(&o.timeout, "timeout", 40*time.Minute, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	for _, s := range strings.Split(suites, ",") {
		if s = strings.TrimSpace(s); s != "" {
			o.suites = append(o.suites, s)
		}
	}
	for _, s := range o.suites {
		if _, ok := suiteRows[s]; !ok {
			return o, fmt.Errorf("unknown suite %q (have kafka, rabbitmq, consumer, outbox)", s)
		}
	}
	return o, nil
}

func run(args []string, stdout, stderr io.Writer) int {
	o, err := parseFlags(args, stderr)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	root, err := repoRoot()
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	if o.rawDir == "" {
		o.rawDir, err = os.MkdirTemp("", "reliable-bench-")
	} else {
		err = os.MkdirAll(o.rawDir, 0o755)
	}
	if err != nil {
		fmt.Fprintf(stderr, "report: directory for the raw output: %v\n", err)
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()

	results := results{}
	failed := map[string]string{}
	raw := map[string]string{}
	start := time.Now()
	for _, s := range o.suites {
		fmt.Fprintf(stderr, "report: running %s ...\n", s)
		t := time.Now()
		raw[s] = filepath.Join(o.rawDir, s+".txt")
		out, err := runSuite(ctx, s, o, root, raw[s], stderr)
		parseGoBench(out, results)
		parseOutbox(out, results)
		if err != nil {
			failed[s] = err.Error()
			fmt.Fprintf(stderr, "report: %s failed: %v\n%s\n", s, err, tail(out, 40))
		} else {
			fmt.Fprintf(stderr, "report: %s done in %s\n", s, time.Since(t).Round(time.Second))
		}
	}
	medianRounds(results)
	writeTable(stdout, o, results, failed, time.Since(start), raw)
	if len(failed) > 0 {
		return 1
	}
	return 0
}

// repoRoot finds the SDK module's root: the nearest directory upwards whose
// go.mod declares github.com/reliable-go/reliable.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.Contains(b, []byte("module github.com/reliable-go/reliable\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("report: run it inside the reliable repository (no go.mod of github.com/reliable-go/reliable above)")
		}
		dir = parent
	}
}

// runSuite runs one suite and returns its combined output, which it also
// writes to the file rawPath as it comes, so that a run can be looked into
// afterwards (and a run cut short leaves what it printed).
func runSuite(ctx context.Context, suite string, o options, root, rawPath string, stderr io.Writer) ([]byte, error) {
	var dir string
	var args []string
	env := os.Environ()
	bench := func(pattern, benchtime, pkg string) []string {
		return []string{"test", "-run", "^$", "-bench", pattern, "-benchtime", benchtime, "-count", "1", "-timeout", "30m", pkg}
	}
	switch suite {
	case "kafka":
		dir, args = root, bench("^BenchmarkProduce$", strconv.Itoa(o.kafkaN)+"x", "./adapters/kafka/")
	case "rabbitmq":
		dir, args = root, bench("^BenchmarkPublish$", strconv.Itoa(o.rabbitN)+"x", "./adapters/rabbitmq/")
	case "consumer":
		dir, args = root, bench("^(BenchmarkKeyLanesVsSerial|BenchmarkPipelineOverhead)$", "1x", "./consumer/")
		if o.consumerN > 0 {
			env = append(env, "RELIABLE_BENCH_MESSAGES="+strconv.Itoa(o.consumerN))
		}
		if o.consumerRounds > 0 {
			env = append(env, "RELIABLE_BENCH_ROUNDS="+strconv.Itoa(o.consumerRounds))
		}
	case "outbox":
		dir = filepath.Join(root, "bench", "outbox")
		args = []string{"run", ".", "-n", strconv.Itoa(o.outboxN), "-wm-n", strconv.Itoa(o.outboxWMN),
			"-duration", o.outboxDuration.String(), "-rate", strconv.Itoa(o.outboxRate)}
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err != nil {
			return nil, fmt.Errorf("bench/outbox is missing: %w", err)
		}
	}
	var tee io.Writer
	if o.verbose {
		tee = stderr
	}
	return runGo(ctx, dir, args, env, rawPath, tee)
}

// runGo runs go with args in dir and returns its combined output, which it
// also writes, as it comes, to the file rawPath (after a line naming the
// command) and to tee when not nil.
func runGo(ctx context.Context, dir string, args, env []string, rawPath string, tee io.Writer) ([]byte, error) {
	f, err := os.Create(rawPath)
	if err != nil {
		return nil, fmt.Errorf("raw output file: %w", err)
	}
	defer f.Close()
	fmt.Fprintf(f, "# go %s (in %s), started %s\n", strings.Join(args, " "), dir, time.Now().Format(time.RFC3339))
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir, cmd.Env = dir, env
	cmd.WaitDelay = 10 * time.Second
	ws := []io.Writer{&out, f}
	if tee != nil {
		ws = append(ws, tee)
	}
	cmd.Stdout = io.MultiWriter(ws...)
	cmd.Stderr = cmd.Stdout
	err = cmd.Run()
	if err != nil {
		err = fmt.Errorf("go %s (in %s): %w", strings.Join(args, " "), dir, err)
	}
	return out.Bytes(), err
}

func tail(b []byte, lines int) string {
	ls := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(ls) > lines {
		ls = ls[len(ls)-lines:]
	}
	return strings.Join(ls, "\n")
}
