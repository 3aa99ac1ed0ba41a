package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/reliable-go/reliable/internal/testenv"
)

// TestClaimCost runs the benchmark under the test environment's shared
// locks, so no fault test kills a broker meanwhile:
//
//	OUTBOX_BENCH=1 go test -run TestClaimCost -v -timeout 30m ./claimcost -args -rows 1000000
func TestClaimCost(t *testing.T) {
	if os.Getenv("OUTBOX_BENCH") == "" {
		t.Skip("set OUTBOX_BENCH=1 to run the benchmark")
	}
	if os.Getenv("RELIABLE_ENV_FILE") == "" {
		if abs, err := filepath.Abs("../../../.cache/services.env"); err == nil {
			t.Setenv("RELIABLE_ENV_FILE", abs)
		}
	}
	run(testenv.PostgresDSN(t), testenv.Kafka(t))
}
