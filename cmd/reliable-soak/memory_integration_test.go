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

// L05, L23: a relay draining a backlog of pending outbox rows stays under
// 128 MiB, and a consumer draining a backlog in the topic under 256 MiB:
// nothing may hold the backlog in memory. 100k rows over 4096 keys is enough
// to show a relay that reads ahead too much (its default read-ahead is
// MaxKeys x Window = 4096 x 32 rows, all decoded).
//
// It takes a few minutes, so it runs only with RELIABLE_SOAK_MEMORY=1
// (RELIABLE_SOAK_MEMORY_ROWS overrides the row count), and without -race:
// `make test-memory`, which CI runs with 20,000 rows. The 1M figures of the
// issue come from `reliable-soak -backlog 1000000`.
func TestBacklogMemoryStaysBounded(t *testing.T) {
	if os.Getenv("RELIABLE_SOAK_MEMORY") != "1" {
		t.Skip("set RELIABLE_SOAK_MEMORY=1 to drain a 100k backlog and check the peak RSS budgets")
	}
	if raceEnabled {
		t.Skip("peak RSS is measured without -race (the race detector multiplies memory use)")
	}
	testenv.PostgresDSN(t)
	testenv.Kafka(t)
	rows := 100000
	if n, err := strconv.Atoi(os.Getenv("RELIABLE_SOAK_MEMORY_ROWS")); err == nil && n > 0 {
		rows = n
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cfg := &Config{Broker: brokerKafka, Backlog: rows, Keys: 4096, Consumers: 1, Relays: 1, Seed: 1, Rate: 1,
		FailRate: 0.01, Partitions: 6, StallTimeout: 3 * time.Minute}
	if err := cfg.validate(); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	rep, err := runOnce(testenv.Context(t, 30*time.Minute), cfg, exe, false, true, slog.New(slog.NewTextHandler(&logs, nil)))
	if rep != nil {
		var out bytes.Buffer
		rep.writeTable(&out)
		t.Log(out.String())
	}
	if err != nil {
		t.Log(logs.String())
		t.Fatal(err)
	}
	if !rep.Verdict.OK() {
		t.Errorf("the backlog broke a promise: %v", rep.Verdict.Problems())
	}
	for _, p := range rep.overBudget() {
		t.Error(p)
	}
}
