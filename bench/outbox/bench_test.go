package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/reliable-go/reliable/internal/testenv"
)

// TestOutboxBenchmark runs the benchmark under the test environment's shared
// locks, so no fault test kills a broker meanwhile:
//
//	OUTBOX_BENCH=1 go test -run TestOutboxBenchmark -v -timeout 30m . -args -n 100000
func TestOutboxBenchmark(t *testing.T) {
	if os.Getenv("OUTBOX_BENCH") == "" {
		t.Skip("set OUTBOX_BENCH=1 to run the benchmark")
	}
	if os.Getenv("RELIABLE_ENV_FILE") == "" {
		// testenv looks for the env file at the root of the module, which
		// here is bench/outbox; the services' file is at the repository's.
		if abs, err := filepath.Abs("../../.cache/services.env"); err == nil {
			t.Setenv("RELIABLE_ENV_FILE", abs)
		}
	}
	brokers := testenv.Kafka(t)
	dsn := testenv.PostgresDSN(t)
	run(dsn, brokers)
}
