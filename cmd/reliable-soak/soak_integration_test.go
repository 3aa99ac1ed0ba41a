package main

import (
	"bytes"
	"log/slog"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/reliable-go/reliable/internal/testenv"
)

// TestMain lets the test binary serve as the campaign's child processes: the
// campaign re-executes it with a role in the environment.
func TestMain(m *testing.M) {
	if isChild() {
		os.Exit(childMain())
	}
	os.Exit(m.Run())
}

// soakMessages sizes the test campaigns: 2000 orders by default, or
// RELIABLE_SOAK_MESSAGES (CI's short campaign uses the command with 20000).
func soakMessages() int {
	if n, err := strconv.Atoi(os.Getenv("RELIABLE_SOAK_MESSAGES")); err == nil && n > 0 {
		return n
	}
	return 2000
}

// A short campaign on real processes and services with every fault once:
// kill -9 of a consumer (L01, L04, L05, L20) and of a relay (L03), the
// partition leader killed (L06) or RabbitMQ restarted (L02), connections cut,
// transient handler failures (L09, L10, L11), a burst (L15, L23), a slow
// downstream (L16), poison messages. The verdict, read from the databases,
// must find nothing lost, nothing applied twice and every key in order (L08,
// L12).
func TestCampaign(t *testing.T) {
	for _, broker := range []string{brokerKafka, brokerRabbitMQ} {
		t.Run(broker, func(t *testing.T) {
			testenv.PostgresDSN(t) // skip (or fail when required) without services
			if broker == brokerKafka {
				testenv.Kafka(t)
			} else {
				testenv.AMQPURL(t)
			}
			exe, err := os.Executable()
			if err != nil {
				t.Fatal(err)
			}
			cfg := &Config{
				Broker: broker, Messages: soakMessages(), Keys: 200, Consumers: 2, Relays: 2,
				Faults: faultKinds(broker), Seed: 7, Rate: 60, Burst: 400,
				FailRate: 0.02, FaultFailRate: 0.3, Latency: 50 * time.Millisecond, PoisonEvery: 500,
				Partitions: 4, Shards: 4, FaultGap: 2 * time.Second, StallTimeout: 3 * time.Minute,
			}
			if err := cfg.validate(); err != nil {
				t.Fatal(err)
			}
			var logs bytes.Buffer
			log := slog.New(slog.NewTextHandler(&logs, nil))
			ctx := testenv.Context(t, 12*time.Minute)
			rep, err := runOnce(ctx, cfg, exe, false, true, log)
			if rep != nil {
				var out bytes.Buffer
				rep.writeTable(&out)
				t.Log(out.String())
			}
			if err != nil {
				t.Log(logs.String())
				t.Fatal(err)
			}
			if !rep.Passed() {
				t.Log(logs.String())
				t.Fatalf("the campaign broke a promise: %v %v", rep.Verdict.Problems(), rep.Errors)
			}
			kinds, ok, _ := rep.faultCounts()
			if len(kinds) != len(cfg.Faults) {
				t.Errorf("faults injected: %v, want each of %v", kinds, cfg.Faults)
			}
			for _, k := range cfg.Faults {
				if ok[k] == 0 {
					t.Errorf("fault %s was never injected successfully", k)
				}
			}
			if rep.Verdict.Poison == 0 || rep.Verdict.InjectedFailures == 0 {
				t.Errorf("no poison (%d) or no injected failures (%d): the campaign tested less than it claims",
					rep.Verdict.Poison, rep.Verdict.InjectedFailures)
			}
		})
	}
}
