package main

import (
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/examples/internal/env"
)

// config is the demo's command line, with defaults for a machine that has
// only Go: everything in one process, nothing durable.
type config struct {
	Broker string // embedded, memory, kafka, rabbitmq
	Store  string // memory, postgres
	Dedupe string // memory, redis, postgres; empty: like Store

	KafkaBrokers string
	AMQPURL      string
	PostgresDSN  string
	RedisAddr    string
	Schema       string // PostgreSQL schema of the demo's tables

	Orders      int
	BurstShare  float64 // share of the orders a batch job places at once
	FailRate    float64 // transient handler failures
	StaleRate   float64 // order-service reads that lag behind (L21)
	Restart     bool    // restart the consumer mid-run
	Concurrency int
	Partitions  int
	Seed        uint64
	Timeout     time.Duration

	OrdersAddr  string
	KitchenAddr string
	Exit        bool
	Verbose     bool

	// inspect, set by tests, is called with the running demo after the
	// summary, before it shuts down.
	inspect func(*app) error
}

func defaultConfig() config {
	return config{
		Broker: "embedded", Store: "memory",
		Schema:     "reliable_demo",
		Orders:     200,
		BurstShare: 0.5,
		FailRate:   0.1, StaleRate: 0.05,
		Restart:     true,
		Concurrency: 8,
		Partitions:  6,
		Seed:        1,
		Timeout:     2 * time.Minute,
		OrdersAddr:  "127.0.0.1:8080", KitchenAddr: "127.0.0.1:8081",
	}
}

// parseFlags reads the command line; endpoints default to the RELIABLE_*
// environment variables (or .cache/services.env).
func parseFlags(args []string, stderr io.Writer) (config, error) {
	c := defaultConfig()
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, `Usage: go run ./examples/demo [flags]

Runs the order service and the kitchen display service in one process, sends
a burst of orders through them with injected faults, prints a summary read
from the stores, and keeps the kitchen page up until Ctrl-C.

Flags:
`)
		fs.PrintDefaults()
	}
	fs.StringVar(&c.Broker, "broker", c.Broker, "embedded (in-process Kafka, kfake), memory (in-memory test double), kafka or rabbitmq")
	fs.StringVar(&c.Store, "store", c.Store, "memory or postgres: where orders, the outbox, the kitchen display and the retry table live")
	fs.StringVar(&c.Dedupe, "dedupe", "", "memory, redis or postgres (default: like -store)")
	fs.StringVar(&c.KafkaBrokers, "kafka-brokers", env.Lookup(env.KafkaBrokers), "Kafka bootstrap addresses, comma-separated (env "+env.KafkaBrokers+")")
	fs.StringVar(&c.AMQPURL, "amqp-url", env.Lookup(env.AMQPURL), "RabbitMQ URL (env "+env.AMQPURL+")")
	fs.StringVar(&c.PostgresDSN, "postgres-dsn", env.Lookup(env.PostgresDSN), "PostgreSQL DSN (env "+env.PostgresDSN+")")
	fs.StringVar(&c.RedisAddr, "redis-addr", env.Lookup(env.RedisAddr), "Redis host:port (env "+env.RedisAddr+")")
	fs.StringVar(&c.Schema, "schema", c.Schema, "PostgreSQL schema for the demo's tables; dropped and recreated at start")
	fs.IntVar(&c.Orders, "orders", c.Orders, "orders to generate (each makes 2 or 3 events)")
	fs.Float64Var(&c.BurstShare, "burst", c.BurstShare, "share of the orders a batch job places all at once (0 to 1)")
	fs.Float64Var(&c.FailRate, "fail-rate", c.FailRate, "rate of injected transient handler failures (0 to 1)")
	fs.Float64Var(&c.StaleRate, "stale-rate", c.StaleRate, "rate of order-service reads that lag behind the event (0 to 1, L21)")
	fs.BoolVar(&c.Restart, "restart", c.Restart, "restart the consumer in the middle of the run")
	fs.IntVar(&c.Concurrency, "concurrency", c.Concurrency, "orders the kitchen handles at once (key lanes)")
	fs.IntVar(&c.Partitions, "partitions", c.Partitions, "partitions of the orders topic (embedded, memory and kafka)")
	fs.Uint64Var(&c.Seed, "seed", c.Seed, "random seed of the traffic and the faults")
	fs.DurationVar(&c.Timeout, "timeout", c.Timeout, "how long to wait for the kitchen to catch up")
	fs.StringVar(&c.OrdersAddr, "orders-addr", c.OrdersAddr, "listen address of the order service's HTTP API")
	fs.StringVar(&c.KitchenAddr, "kitchen-addr", c.KitchenAddr, "listen address of the kitchen display")
	fs.BoolVar(&c.Exit, "exit", false, "exit after the summary (non-zero when a figure is wrong) instead of serving the page until Ctrl-C")
	fs.BoolVar(&c.Verbose, "v", false, "log what the services do (the injected failures included)")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	return c, c.validate()
}

func (c *config) validate() error {
	if c.Dedupe == "" {
		c.Dedupe = c.Store
	}
	var p reliable.Problems
	oneOf := func(name, v string, allowed ...string) {
		for _, a := range allowed {
			if v == a {
				return
			}
		}
		p.Addf(true, "-%s=%q: want one of %s", name, v, strings.Join(allowed, ", "))
	}
	oneOf("broker", c.Broker, "embedded", "memory", "kafka", "rabbitmq")
	oneOf("store", c.Store, "memory", "postgres")
	oneOf("dedupe", c.Dedupe, "memory", "redis", "postgres")
	p.Addf(c.Broker == "kafka" && c.KafkaBrokers == "", "-broker=kafka needs -kafka-brokers or %s", env.KafkaBrokers)
	p.Addf(c.Broker == "rabbitmq" && c.AMQPURL == "", "-broker=rabbitmq needs -amqp-url or %s", env.AMQPURL)
	p.Addf((c.Store == "postgres" || c.Dedupe == "postgres") && c.PostgresDSN == "", "PostgreSQL needs -postgres-dsn or %s", env.PostgresDSN)
	p.Addf(c.Dedupe == "redis" && c.RedisAddr == "", "-dedupe=redis needs -redis-addr or %s", env.RedisAddr)
	p.Addf(c.Dedupe == "postgres" && c.Store != "postgres", "-dedupe=postgres needs -store=postgres")
	p.Addf(c.Orders < 0, "-orders is negative")
	p.Addf(c.BurstShare < 0 || c.BurstShare > 1, "-burst %v is not between 0 and 1", c.BurstShare)
	p.Addf(c.FailRate < 0 || c.FailRate > 0.9, "-fail-rate %v is not between 0 and 0.9", c.FailRate)
	p.Addf(c.StaleRate < 0 || c.StaleRate > 0.9, "-stale-rate %v is not between 0 and 0.9", c.StaleRate)
	p.Addf(c.Concurrency < 1, "-concurrency must be at least 1")
	p.Addf(c.Partitions < 1, "-partitions must be at least 1")
	p.Addf(c.Timeout <= 0, "-timeout must be positive")
	return p.Err("demo")
}
