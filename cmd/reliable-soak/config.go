package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/outbox"
)

// Broker kinds the campaign runs on.
const (
	brokerKafka    = "kafka"
	brokerRabbitMQ = "rabbitmq"
)

// Fault kinds, in the order the schedule injects them.
const (
	faultConsumerKill   = "consumer-kill"
	faultRelayKill      = "relay-kill"
	faultBrokerKill     = "broker-kill"       // Kafka: kill -9 the partition leader, restart it
	faultRabbitRestart  = "rabbitmq-restart"  // RabbitMQ: restart the server
	faultConnCut        = "conn-cut"          // reset every proxied connection, refuse new ones a while
	faultHandlerFailure = "handler-failures"  // a window of transient handler failures
	faultBurst          = "burst"             // a batch job writes many orders at once
	faultSlowDownstream = "slow-downstream"   // handler latency spike
	faultScaleUp        = "scale-up"          // one more consumer instance joins the group
	faultScaleDown      = "scale-down"        // one consumer instance leaves cleanly (SIGTERM) for good
	faultRollingRestart = "rolling-restart"   // each consumer instance in turn stopped gracefully and started again
	faultOutage         = "downstream-outage" // every handler call fails retryably for a while
)

// Consumer profiles: how the consumer processes configure the SDK.
const (
	// profileTuned is the campaign's own configuration: PostgreSQL dedupe
	// recorded in the handler's transaction, a retry table with short
	// backoffs, sharded RabbitMQ queues.
	profileTuned = "tuned"
	// profileQuickstart configures the consumers exactly as the README's
	// quick start does: Redis dedupe, retry.NewTable with a Group,
	// Concurrency 32, the default RabbitMQ topology, nothing else.
	profileQuickstart = "quickstart"
	// profileZero leaves every optional consumer field at its zero value:
	// no retry table, no dedupe store, no dead-letter path.
	profileZero = "zero"
)

var profiles = []string{profileTuned, profileQuickstart, profileZero}

// scaleFaults are the fault kinds that change the set of consumer instances;
// with the downstream outage they are the faults beyond the tuned profile's
// schedule.
var scaleFaults = []string{faultScaleUp, faultScaleDown, faultRollingRestart}

// extraFaults are every fault kind that is not part of the tuned profile's
// schedule.
var extraFaults = append(append([]string(nil), scaleFaults...), faultOutage)

// allFaults returns the fault kinds "-faults all" means for broker and
// profile: the tuned profile keeps its historical schedule; the quick-start
// and zero profiles, which exist to show the defaults hold with several
// instances, follow the burst with a downstream outage (every call fails,
// which outlasts the inline attempts of a consumer without a retry table,
// while the burst's keys queue up behind their failing first message), a
// rolling restart and a scale-up, so all three meet its backlog, scale
// down after the relay kill, and suffer a second outage after the handler
// failures, in steady traffic: a consumer that nacks a key's failing message
// while applying its later ones shows it right as an outage ends, and two
// outages meet more such keys than one.
func allFaults(broker, profile string) []string {
	base := faultKinds(broker)
	if profile == profileTuned || profile == "" {
		return base
	}
	out := make([]string, 0, len(base)+len(extraFaults))
	for _, f := range base {
		out = append(out, f)
		switch f {
		case faultBurst:
			out = append(out, faultOutage, faultRollingRestart, faultScaleUp)
		case faultRelayKill:
			out = append(out, faultScaleDown)
		case faultHandlerFailure:
			out = append(out, faultOutage)
		}
	}
	return out
}

// faultKinds returns the fault kinds of the tuned profile's schedule that
// apply to broker; scaleFaults apply too but are not part of it.
func faultKinds(broker string) []string {
	brokerFault := faultBrokerKill
	if broker == brokerRabbitMQ {
		brokerFault = faultRabbitRestart
	}
	// The burst comes early, so the broker fault and the kills that follow
	// meet a backlog (L23), not an idle pipeline.
	return []string{faultConsumerKill, faultBurst, brokerFault, faultRelayKill, faultHandlerFailure,
		faultSlowDownstream, faultConnCut}
}

// Config is one campaign's settings. The parent fills it from flags and
// hands it to every child process as JSON (the file run.json in the run
// directory), so all processes agree on names and rates.
type Config struct {
	Broker    string        // brokerKafka or brokerRabbitMQ
	Profile   string        // profileTuned, profileQuickstart or profileZero
	Messages  int           // orders to write; 0 with Duration: until Duration passes
	Duration  time.Duration // write for this long (when Messages is 0)
	Keys      int           // order keys (each with its own sequence)
	Consumers int           // consumer processes
	Relays    int           // relay processes
	Faults    []string      // fault kinds to inject
	Seed      uint64        // decides transient failures and fault targets
	Rate      float64       // steady orders per second written outside bursts
	Burst     int           // orders one burst writes at once
	// RelayMode is how relays find rows: "poll" (LISTEN/NOTIFY and
	// polling, the default) or "log" (the write-ahead log, through a
	// replication slot named like the run's schema).
	RelayMode string
	// FailRate is the baseline fraction of first and second attempts that
	// fail transiently; the handler-failures fault raises it to FaultFailRate
	// for a window.
	FailRate, FaultFailRate float64
	// Latency is the handler's extra latency during slow-downstream.
	Latency time.Duration
	// PoisonEvery makes every n-th order a poison message on a key of its own
	// (0: none). Poison messages are expected to end dead in the retry table.
	PoisonEvery int
	// OversizeEvery makes every n-th order a message too large to publish
	// (L13), on a key of its own (0: none); it is expected to end dead in
	// the outbox, and nothing published with it may suffer.
	OversizeEvery int
	// Partitions of the Kafka topic; Shards of the RabbitMQ group queue (0:
	// the default topology, one group queue).
	Partitions int
	Shards     int
	// FaultGap is the pause between two faults.
	FaultGap time.Duration
	// StallTimeout fails the campaign when nothing more is applied for this
	// long after writing ended.
	StallTimeout time.Duration
	// Backlog, when above 0, runs the memory mode instead of a campaign: it
	// writes Backlog orders first, then drains them with one relay, then with
	// one consumer, measuring each one's peak RSS.
	Backlog int

	// Filled by the parent at setup.
	RunID        string
	Dir          string // run directory: config, control file, child logs
	Schema       string // PostgreSQL schema holding every table of the run
	PostgresDSN  string // direct, for the writer and the verifier
	ProxiedDSN   string // through the connection-cut proxy, for relays and consumers
	Topic        string // unprefixed topic (Kafka: prefixed by Environment)
	Group        string // consumer group
	Environment  string
	Kafka        []string
	AMQPURL      string // direct
	ProxiedAMQP  string // through the proxy, for children
	RedisAddr    string // direct (quick-start profile)
	ProxiedRedis string // through the proxy, for consumers
}

// validate returns every problem of c at once. An empty Profile means
// profileTuned (runs configured before profiles existed).
func (c *Config) validate() error {
	if c.Profile == "" {
		c.Profile = profileTuned
	}
	var p reliable.Problems
	p.Addf(c.Broker != brokerKafka && c.Broker != brokerRabbitMQ, "-broker is %q, want kafka or rabbitmq", c.Broker)
	p.Addf(c.Backlog == 0 && c.Messages <= 0 && c.Duration <= 0, "set -messages N or -duration D")
	p.Addf(c.Messages < 0, "-messages is negative")
	p.Addf(c.Keys < 1, "-keys must be at least 1")
	p.Addf(c.Consumers < 1, "-consumers must be at least 1")
	p.Addf(c.Relays < 1, "-relays must be at least 1")
	_, modeErr := outbox.ParseMode(c.RelayMode)
	p.Addf(modeErr != nil, "-relay-mode is %q, want poll or log", c.RelayMode)
	p.Addf(c.Rate <= 0, "-rate must be positive")
	p.Addf(c.FailRate < 0 || c.FailRate >= 1, "-fail-rate must be in [0, 1)")
	p.Addf(c.FaultFailRate < 0 || c.FaultFailRate >= 1, "-fault-fail-rate must be in [0, 1)")
	p.Addf(c.Partitions < 1, "-partitions must be at least 1")
	p.Addf(c.Backlog < 0, "-backlog is negative")
	p.Addf(!slices.Contains(profiles, c.Profile), "-profile is %q, want one of %s", c.Profile, strings.Join(profiles, ", "))
	p.Addf(c.Profile != profileTuned && c.Shards != 0,
		"-shards is %d: the %s profile uses the default RabbitMQ topology, without shards", c.Shards, c.Profile)
	p.Addf(c.Profile == profileZero && c.PoisonEvery != 0,
		"-poison-every is %d: the zero profile has no dead-letter path, a poison message would hold its key forever (use 0)", c.PoisonEvery)
	known := append(faultKinds(c.Broker), extraFaults...)
	for _, f := range c.Faults {
		p.Addf(!slices.Contains(known, f), "fault %q is not one of %s for %s", f, strings.Join(known, ", "), c.Broker)
	}
	return p.Err("reliable-soak")
}

// parseFaults turns "all", "none" or a comma-separated list into kinds.
func parseFaults(s, broker, profile string) []string {
	switch strings.TrimSpace(s) {
	case "all":
		return allFaults(broker, profile)
	case "", "none":
		return nil
	}
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// burstReserve is the part of Messages the first burst writes.
func (c *Config) burstReserve() int {
	if c.Messages > 0 && c.Burst > 0 && slices.Contains(c.Faults, faultBurst) {
		return min(c.Burst, c.Messages/2)
	}
	return 0
}

// steadyQuota is how many steady orders may be written until fault i (from
// 0) of the first cycle ends: the steady orders are released in
// len(Faults)+1 equal shares, the first at the start, the next as each fault
// ends, so the share written in the gap before a fault is still flowing when
// it strikes, however long the faults before it took. -1 means no limit
// (Duration mode, no faults, or past the first cycle).
func (c *Config) steadyQuota(i int) int64 {
	k := len(c.Faults)
	if c.Messages <= 0 || k == 0 || i >= k {
		return -1
	}
	steady := int64(c.Messages - c.burstReserve())
	return steady * int64(i+1) / int64(k+1)
}

const configFile = "run.json"

func (c *Config) write() error {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(c.Dir, configFile), b, 0o644)
}

func readConfig(dir string) (*Config, error) {
	b, err := os.ReadFile(filepath.Join(dir, configFile))
	if err != nil {
		return nil, fmt.Errorf("read run config: %w", err)
	}
	var c Config
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("parse run config: %w", err)
	}
	return &c, nil
}
