package kafka

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/IBM/sarama"
)

// Integration tests run against the real 3-broker cluster that
// scripts/services.sh starts (RF 3, min.insync.replicas 2). Its endpoints come
// from the environment or the env file the script writes; without them the
// tests skip, unless RELIABLE_REQUIRE_SERVICES=1.

var (
	envFileOnce sync.Once
	envFile     map[string]string
)

// serviceEnv returns the environment variable key, or its value in
// <repo>/.cache/services.env.
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

// kafkaBrokers returns the cluster's addresses or skips the test.
func kafkaBrokers(t testing.TB) []string {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test skipped in -short mode")
	}
	b := serviceEnv("RELIABLE_KAFKA_BROKERS")
	if b == "" {
		if os.Getenv("RELIABLE_REQUIRE_SERVICES") == "1" {
			t.Fatal("RELIABLE_KAFKA_BROKERS is not set and RELIABLE_REQUIRE_SERVICES=1")
		}
		t.Skip("no Kafka: set RELIABLE_KAFKA_BROKERS or run scripts/services.sh up")
	}
	return strings.Split(b, ",")
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

// createTopic creates topic with RF 3 (and extra topic configs) and waits
// until every partition has a leader.
func createTopic(t testing.TB, brokers []string, topic string, partitions int32, configs map[string]string) {
	t.Helper()
	adm := adminClient(t, brokers)
	defer adm.Close()
	entries := map[string]*string{}
	for k, v := range configs {
		entries[k] = &v
	}
	rf := int16(3)
	if v, ok := configs["_rf"]; ok {
		delete(entries, "_rf")
		fmt.Sscan(v, &rf)
	}
	err := adm.CreateTopic(topic, &sarama.TopicDetail{NumPartitions: partitions, ReplicationFactor: rf, ConfigEntries: entries}, false)
	if err != nil && !errors.Is(err, sarama.ErrTopicAlreadyExists) {
		t.Fatalf("create topic %s: %v", topic, err)
	}
	t.Cleanup(func() { deleteTopic(brokers, topic) })
	waitLeaders(t, brokers, topic, partitions)
}

func deleteTopic(brokers []string, topic string) {
	sc := sarama.NewConfig()
	sc.Version = DefaultVersion
	adm, err := sarama.NewClusterAdmin(brokers, sc)
	if err != nil {
		return
	}
	defer adm.Close()
	_ = adm.DeleteTopic(topic)
}

// waitLeaders waits until every broker's metadata has topic with a leader
// for each partition: right after CreateTopic, a broker that has not caught
// up answers "unknown topic".
func waitLeaders(t testing.TB, brokers []string, topic string, partitions int32) {
	t.Helper()
	sc := sarama.NewConfig()
	sc.Version = DefaultVersion
	deadline := time.Now().Add(30 * time.Second)
	for _, addr := range brokers {
		b := sarama.NewBroker(addr)
		if err := b.Open(sc); err != nil {
			t.Fatalf("broker %s: %v", addr, err)
		}
		for {
			ok := false
			resp, err := b.GetMetadata(sarama.NewMetadataRequest(sc.Version, []string{topic}))
			if err == nil && len(resp.Topics) == 1 && resp.Topics[0].Err == sarama.ErrNoError &&
				len(resp.Topics[0].Partitions) == int(partitions) {
				ok = true
				for _, p := range resp.Topics[0].Partitions {
					if p.Leader < 0 {
						ok = false
					}
				}
			}
			if ok {
				break
			}
			if time.Now().After(deadline) {
				_ = b.Close()
				t.Fatalf("topic %s: broker %s has no leaders for it after 30s (err %v)", topic, addr, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
		_ = b.Close()
	}
}

// brokerCtl runs scripts/services.sh kafka-<cmd> id.
func brokerCtl(t testing.TB, cmd string, id int32) {
	t.Helper()
	if serviceEnv("RELIABLE_SERVICES_SCRIPT") == "" {
		t.Skip("RELIABLE_SERVICES_SCRIPT unknown: cannot control brokers")
	}
	if err := brokerCtlErr(cmd, id); err != nil {
		t.Fatal(err)
	}
}

// brokerCtlErr runs scripts/services.sh kafka-<cmd> id, retrying once: the
// script serialises on a lock that another engineer's `up` may hold.
func brokerCtlErr(cmd string, id int32) error {
	script := serviceEnv("RELIABLE_SERVICES_SCRIPT")
	if script == "" {
		return errors.New("RELIABLE_SERVICES_SCRIPT unknown: cannot control brokers")
	}
	var err error
	for attempt := 0; attempt < 2; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		var out []byte
		out, err = exec.CommandContext(ctx, "bash", script, "kafka-"+cmd, fmt.Sprint(id)).CombinedOutput()
		cancel()
		if err == nil {
			return nil
		}
		if len(out) > 2000 {
			out = out[len(out)-2000:]
		}
		err = fmt.Errorf("services.sh kafka-%s %d: %w\n%s", cmd, id, err, out)
	}
	return err
}

// killBroker kill -9s broker id and makes sure it is started again when the
// test ends, whatever happens.
func killBroker(t testing.TB, id int32) {
	t.Helper()
	t.Cleanup(func() { brokerCtl(t, "start", id) })
	brokerCtl(t, "kill", id)
}

// leaderOf returns the broker ID that leads topic/partition.
func leaderOf(t testing.TB, brokers []string, topic string, partition int32) int32 {
	t.Helper()
	sc := sarama.NewConfig()
	sc.Version = DefaultVersion
	client, err := sarama.NewClient(brokers, sc)
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	defer client.Close()
	b, err := client.Leader(topic, partition)
	if err != nil {
		t.Fatalf("leader of %s/%d: %v", topic, partition, err)
	}
	return b.ID()
}

// waitAllBrokers waits until the cluster reports all three brokers and every
// partition of topic has its full ISR again.
func waitISR(t testing.TB, brokers []string, topic string, partitions int32) {
	t.Helper()
	adm := adminClient(t, brokers)
	defer adm.Close()
	deadline := time.Now().Add(90 * time.Second)
	for {
		metas, err := adm.DescribeTopics([]string{topic})
		if err == nil && len(metas) == 1 && len(metas[0].Partitions) == int(partitions) {
			full := true
			for _, p := range metas[0].Partitions {
				if len(p.Isr) < 3 {
					full = false
				}
			}
			if full {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Logf("topic %s: ISR not full after 90s (err %v)", topic, err)
			return
		}
		time.Sleep(250 * time.Millisecond)
	}
}
