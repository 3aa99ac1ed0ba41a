// Command reliable-soak proves the SDK's promise end to end: nothing lost,
// nothing applied twice, every key in order, under faults, on the real
// services. It runs an order flow as separate processes (this binary
// re-executed with a role):
//
//   - writer: commits orders (soak_orders) with their outbox messages in one
//     transaction (outbox.Add), steadily and in bursts;
//   - relay (several): outbox.Relay publishing to Kafka or RabbitMQ through
//     the adapters' durable producers;
//   - consumer (several): kafka.NewConsumer or rabbitmq.NewConsumer with
//     PostgreSQL dedupe, the ordered retry table and key lanes, applying each
//     event to soak_results and recording it done in the same transaction.
//
// While they run, a schedule injects faults, each logged with a timestamp:
// kill -9 and restart of a consumer, kill -9 and restart of a relay, kill -9
// of the Kafka partition leader (or a RabbitMQ restart), a cut of every
// PostgreSQL (and AMQP) connection of the children through an in-process
// TCP proxy, a window of transient handler failures, a burst of orders like
// a batch job, a slow downstream (handler latency). Poison messages are
// mixed in and must end dead in the retry table.
//
// -profile chooses how the consumers configure the SDK. "tuned" (the
// default) is the configuration above. "quickstart" is exactly the README's
// quick start: Redis dedupe, retry.NewTable with a Group, Concurrency 32,
// the default RabbitMQ topology (no shards), no other tuning; its handler
// upserts the order's state, as the README tells a user to. "zero" is
// consumer.Config{Topic} alone: no retry table, no dedupe store, no
// dead-letter path (so no poison messages), the same upserting handler.
// Both run three consumer instances and add to "-faults all" a downstream
// outage (every handler call fails for 4 s), a rolling restart and a
// scale-up right after the burst, and a scale-down. Without a dedupe store
// repeats are counted and reported rather than failed; with Redis dedupe,
// which cannot commit with the handler's effect, a repeat whose first
// application was by a process killed -9 within seconds passes (the upsert
// absorbs it) and any other fails.
//
// The verdict is read from the databases: every committed order applied
// exactly once, per key in sequence order (apply order is a bigserial),
// nothing stuck but the poison. It prints a table (or JSON) with the faults
// by kind and each process's peak RSS (getrusage of the exited process), and
// exits 1 when any promise was broken.
//
// Examples:
//
//	go run ./cmd/reliable-soak -messages 10000 -faults all            # CI's short campaign (also on rabbitmq)
//	go run ./cmd/reliable-soak -broker rabbitmq -messages 20000 -faults all
//	go run ./cmd/reliable-soak -duration 60m -rate 400 -faults all    # long campaign
//	go run ./cmd/reliable-soak -backlog 1000000                       # peak RSS draining 1M
//	go run ./cmd/reliable-soak -profile quickstart -broker rabbitmq -messages 2000 -keys 50 -rate 40
//	go run ./cmd/reliable-soak -profile zero -messages 2000 -keys 50 -rate 40
//
// Services come from the RELIABLE_* environment variables or the env file of
// scripts/services.sh (.cache/services.env), as for the integration tests.
// Broker faults take internal/testenv's exclusive locks, so they wait for
// other packages' running tests and never kill a broker under them.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strings"
	"syscall"
	"testing"
	"time"
)

func main() {
	if isChild() {
		os.Exit(childMain())
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// options are the flags that are not part of the run's Config.
type options struct {
	report  string
	keep    bool
	timeout time.Duration
	quiet   bool
	noLock  bool
	clean   string
}

func parseFlags(args []string, stderr io.Writer) (*Config, options, error) {
	cfg := &Config{}
	var o options
	var faults string
	fs := flag.NewFlagSet("reliable-soak", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.Broker, "broker", brokerKafka, "kafka or rabbitmq")
	fs.StringVar(&cfg.Profile, "profile", profileTuned, "consumer configuration: "+
		"tuned (PostgreSQL dedupe in the handler's transaction, short retry backoffs, sharded RabbitMQ queues), "+
		"quickstart (exactly the README's quick start: Redis dedupe, retry table, Concurrency 32, default topology) or "+
		"zero (consumer.Config{Topic} only: no retry table, no dedupe, no dead-letter path; no poison messages)")
	fs.IntVar(&cfg.Messages, "messages", 0, "orders to write (default 20000 unless -duration or -backlog is set)")
	fs.DurationVar(&cfg.Duration, "duration", 0, "write orders for this long instead of -messages")
	fs.IntVar(&cfg.Keys, "keys", 1000, "order keys; each key's events must apply in sequence")
	fs.IntVar(&cfg.Consumers, "consumers", 3, "consumer processes")
	fs.IntVar(&cfg.Relays, "relays", 2, "relay processes")
	fs.StringVar(&cfg.RelayMode, "relay-mode", "poll", "how relays find rows: poll (LISTEN/NOTIFY and polling) or log "+
		"(the write-ahead log through a replication slot, outbox.ModeLog; PostgreSQL needs wal_level=logical)")
	fs.StringVar(&faults, "faults", "all", `faults to inject: "all", "none" or a list of `+
		strings.Join(append(append(faultKinds(brokerKafka), faultRabbitRestart), extraFaults...), ",")+
		` ("all" includes `+strings.Join(extraFaults, ", ")+` with -profile quickstart or zero)`)
	fs.Uint64Var(&cfg.Seed, "seed", 1, "seed of the injected failures and of fault targets")
	fs.StringVar(&o.report, "report", "table", "table (Markdown) or json")
	fs.Float64Var(&cfg.Rate, "rate", 250, "steady orders per second outside bursts")
	fs.IntVar(&cfg.Burst, "burst", 2000, "orders one burst writes at once")
	fs.Float64Var(&cfg.FailRate, "fail-rate", 0.01, "baseline fraction of first and second handler attempts failing transiently")
	fs.Float64Var(&cfg.FaultFailRate, "fault-fail-rate", 0.3, "that fraction during the handler-failures fault")
	fs.DurationVar(&cfg.Latency, "latency", 100*time.Millisecond, "handler latency during the slow-downstream fault")
	fs.IntVar(&cfg.PoisonEvery, "poison-every", -1, "every n-th order is a poison message on a key of its own (0: none; default 2500, 0 with -profile zero)")
	fs.IntVar(&cfg.OversizeEvery, "oversize-every", 0, "every n-th order is too large to publish, on a key of its own, and must end dead in the outbox alone (L13; 0: none)")
	fs.IntVar(&cfg.Partitions, "partitions", 6, "partitions of the Kafka topic")
	fs.IntVar(&cfg.Shards, "shards", -1, "RabbitMQ: shard queues of the group (default 2 per consumer; none with -profile quickstart or zero)")
	fs.DurationVar(&cfg.FaultGap, "fault-gap", 3*time.Second, "pause between two faults")
	fs.DurationVar(&cfg.StallTimeout, "stall-timeout", 3*time.Minute, "fail when nothing settles for this long after writing and faults ended")
	fs.IntVar(&cfg.Backlog, "backlog", 0, "memory mode: load N orders, drain them with one relay, then one consumer, and report their peak RSS")
	fs.StringVar(&cfg.Dir, "dir", "", "run directory for config and child logs (default: a new temporary directory)")
	fs.BoolVar(&o.keep, "keep", false, "keep the run's schema, topic and directory")
	fs.DurationVar(&o.timeout, "timeout", 0, "give up after this long (0: never; a stall still ends the run)")
	fs.BoolVar(&o.quiet, "quiet", false, "log warnings and errors only")
	fs.StringVar(&o.clean, "clean", "", "delete what the kept run with this run ID left (schema, topic, queues) and exit")
	fs.BoolVar(&o.noLock, "no-lock", false, "do not hold testenv's shared lock on the broker for the whole run "+
		"(other packages' fault tests may then kill brokers during it; broker faults still take the exclusive lock)")
	if err := fs.Parse(args); err != nil {
		return nil, o, err
	}
	if cfg.Messages == 0 && cfg.Duration == 0 && cfg.Backlog == 0 {
		cfg.Messages = 20000
	}
	if cfg.Shards < 0 {
		cfg.Shards = 0 // the default topology
		if cfg.Profile == profileTuned {
			cfg.Shards = 2 * cfg.Consumers
		}
	}
	if cfg.PoisonEvery < 0 {
		// Without a dead-letter path a poison message holds its key until an
		// operator acts (by design): the zero profile injects none.
		cfg.PoisonEvery = 2500
		if cfg.Profile == profileZero {
			cfg.PoisonEvery = 0
		}
	}
	if cfg.Backlog > 0 {
		cfg.Consumers, cfg.Relays, faults = 1, 1, "none"
	}
	cfg.Faults = parseFaults(faults, cfg.Broker, cfg.Profile)
	if o.report != "table" && o.report != "json" {
		return nil, o, fmt.Errorf("-report is %q, want table or json", o.report)
	}
	return cfg, o, cfg.validate()
}

// run is the parent: it runs one campaign (or the backlog mode) and returns
// the exit code: 0 when every promise held, 1 when one broke, 2 when the run
// could not be done.
func run(args []string, stdout, stderr io.Writer) int {
	cfg, o, err := parseFlags(args, stderr)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	// internal/testenv reads testing's flags (testing.Short) when it takes
	// the service locks; register them and mark them parsed.
	testing.Init()
	_ = flag.CommandLine.Parse(nil)
	if o.clean != "" {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if err := cleanRun(ctx, o.clean); err != nil {
			fmt.Fprintln(stderr, "reliable-soak:", err)
			return 2
		}
		return 0
	}

	level := slog.LevelInfo
	if o.quiet {
		level = slog.LevelWarn
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if o.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.timeout)
		defer cancel()
	}
	rep, err := runOnce(ctx, cfg, exe, o.keep, !o.noLock, log)
	if rep != nil {
		rep.Command = "reliable-soak " + strings.Join(args, " ")
		if o.report == "json" {
			_ = rep.writeJSON(stdout)
		} else {
			rep.writeTable(stdout)
		}
	}
	if (err != nil || !rep.Passed()) && cfg.Dir != "" {
		printLogTails(stderr, cfg.Dir, 15)
	}
	if err != nil {
		fmt.Fprintln(stderr, "reliable-soak:", err)
		return 2
	}
	if !rep.Passed() {
		return 1
	}
	return 0
}

// revision is the commit the binary was built from (the build's VCS
// stamp, "+dirty" when the tree had changes), or, when the binary carries
// none (`go run`, tests, some builds), git's HEAD now: call it when the
// campaign starts, before HEAD can move.
func revision() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		var rev, dirty string
		for _, s := range bi.Settings {
			switch {
			case s.Key == "vcs.revision" && len(s.Value) >= 7:
				rev = s.Value[:7]
			case s.Key == "vcs.modified" && s.Value == "true":
				dirty = "+dirty"
			}
		}
		if rev != "" {
			return rev + dirty
		}
	}
	out, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "unknown"
	}
	rev := strings.TrimSpace(string(out))
	if st, err := exec.Command("git", "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(bytes.TrimSpace(st)) > 0 {
		rev += "+dirty"
	}
	return rev
}

// printLogTails shows the end of every child's log, so a failed CI run can
// be read from the CI log alone.
func printLogTails(w io.Writer, dir string, lines int) {
	logs, _ := filepath.Glob(filepath.Join(dir, "*.log"))
	for _, l := range logs {
		b, err := os.ReadFile(l)
		if err != nil {
			continue
		}
		ls := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
		if len(ls) > lines {
			ls = ls[len(ls)-lines:]
		}
		fmt.Fprintf(w, "--- %s (last %d lines)\n%s\n", l, len(ls), strings.Join(ls, "\n"))
	}
}

// runOnce prepares the run, runs it and tears it down.
func runOnce(ctx context.Context, cfg *Config, exe string, keep, lock bool, log *slog.Logger) (*Report, error) {
	r, err := newRunner(ctx, cfg, exe, keep, lock, log)
	if err != nil {
		return nil, err
	}
	rev := revision()
	var rep *Report
	if cfg.Backlog > 0 {
		rep, err = r.backlog(ctx)
	} else {
		rep, err = r.campaign(ctx)
	}
	if rep != nil && !rep.Passed() {
		r.keep = true // keep the evidence
	}
	r.close()
	if rep != nil {
		rep.Revision = rev
		if r.keep {
			rep.Dir = cfg.Dir
		}
	}
	return rep, err
}
