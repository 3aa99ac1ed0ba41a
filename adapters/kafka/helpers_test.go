package kafka

import (
	"bufio"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/IBM/sarama"

	"github.com/reliable-go/reliable/internal/testenv"
)

// Integration tests run against the real 3-broker cluster that
// scripts/services.sh starts (RF 3, min.insync.replicas 2), found and locked
// through internal/testenv; without it they skip, unless
// RELIABLE_REQUIRE_SERVICES=1.

var (
	envFileOnce sync.Once
	envFile     map[string]string
)

// serviceEnv returns the environment variable key, or its value in
// <repo>/.cache/services.env (for RELIABLE_KAFKA_HOME, which testenv does not
// expose).
func serviceEnv(key string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	envFileOnce.Do(func() {
		envFile = map[string]string{}
		dir, _ := os.Getwd()
		for ; dir != filepath.Dir(dir); dir = filepath.Dir(dir) {
			f, err := os.Open(filepath.Join(dir, ".cache", "services.env"))
			if err != nil {
				continue
			}
			defer f.Close()
			sc := bufio.NewScanner(f)
			for sc.Scan() {
				line := strings.TrimPrefix(strings.TrimSpace(sc.Text()), "export ")
				k, v, ok := strings.Cut(line, "=")
				if !ok || strings.HasPrefix(k, "#") {
					continue
				}
				envFile[k] = strings.Trim(v, `'"`)
			}
			return
		}
	})
	return envFile[key]
}

// kafkaBrokers returns the cluster's addresses, or skips the test (fails it
// under RELIABLE_REQUIRE_SERVICES=1). The test holds testenv's shared lock on
// Kafka until it ends, so other packages' fault tests do not kill brokers
// under it.
func kafkaBrokers(t testing.TB) []string {
	t.Helper()
	return testenv.Kafka(t)
}

var nameSeq atomic.Int64

// uniqueName returns a topic or group name no other test run uses.
func uniqueName(prefix string) string {
	return fmt.Sprintf("%s-%d-%d-%d", prefix, os.Getpid(), time.Now().UnixNano()%1e9, nameSeq.Add(1))
}

// testLogger writes warnings and errors to stderr (not t.Log, which panics
// when a goroutine logs after the test ended).
func testLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// testConfig is a Config for the test cluster with test-friendly timings.
func testConfig(t testing.TB) Config {
	return Config{
		Brokers: kafkaBrokers(t),
		Logger:  testLogger(),
		Consumer: ConsumerConfig{
			CommitInterval: 200 * time.Millisecond,
			DrainTimeout:   10 * time.Second,
		},
	}
}

func adminClient(t testing.TB, brokers []string) sarama.ClusterAdmin {
	t.Helper()
	sc := sarama.NewConfig()
	sc.Version = DefaultVersion
	adm, err := sarama.NewClusterAdmin(brokers, sc)
	if err != nil {
		t.Fatalf("cluster admin: %v", err)
	}
	return adm
}

// createTopic creates topic with RF 3 (the "_rf" entry of configs overrides
// it; the other entries are topic configs), waits until every broker serves
// it, and deletes it when the test ends.
func createTopic(t testing.TB, brokers []string, topic string, partitions int32, configs map[string]string) {
	t.Helper()
	// RF 3 always: testenv's default follows the brokers it sees, and a topic
	// created while a broker restarts must not silently get fewer replicas.
	d := &sarama.TopicDetail{NumPartitions: partitions, ReplicationFactor: 3, ConfigEntries: map[string]*string{}}
	for k, v := range configs {
		if k == "_rf" {
			var rf int16
			if _, err := fmt.Sscan(v, &rf); err != nil {
				t.Fatalf("_rf %q: %v", v, err)
			}
			d.ReplicationFactor = rf
			continue
		}
		d.ConfigEntries[k] = &v
	}
	testenv.CreateTopicWith(t, brokers, topic, d)
}

// cluster returns exclusive control over the local cluster (other packages'
// Kafka tests wait); brokers this test stops are started again at its end.
func cluster(t testing.TB) *testenv.Cluster {
	t.Helper()
	return testenv.KafkaCluster(t)
}

// newTestClient returns a plain sarama client, closed when the test ends.
func newTestClient(t testing.TB, brokers []string) sarama.Client {
	t.Helper()
	sc := sarama.NewConfig()
	sc.Version = DefaultVersion
	client, err := sarama.NewClient(brokers, sc)
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	t.Cleanup(func() { _ = client.Close() })
	return client
}
