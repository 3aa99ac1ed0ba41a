package consumer_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/adapters/kafka"
	"github.com/reliable-go/reliable/consumer"
	"github.com/reliable-go/reliable/idempotency"
	"github.com/reliable-go/reliable/internal/testenv"
	"github.com/reliable-go/reliable/retry"
)

// Integration tests of the whole pipeline on the real services: Kafka (the
// 3-broker cluster), PostgreSQL (retry table, dedupe, ledger) and Redis
// (dedupe). They skip without services unless RELIABLE_REQUIRE_SERVICES=1.

func shortName(prefix string) string {
	var b [5]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// pgPool has 32 connections: a consumer may run 64 lanes, each of which
// may need one for dedupe or the retry table.
func pgPool(t testing.TB) *pgxpool.Pool {
	return testenv.PostgresPool(t, 32)
}

func redisClient(t testing.TB) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: testenv.RedisAddr(t)})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func retryTable(t testing.TB, pool *pgxpool.Pool, group string) *retry.Table {
	t.Helper()
	name := shortName("rt_")
	table, err := retry.NewTable(pool, retry.TableConfig{Group: group, Table: name, Logger: quiet,
		Backoff: reliable.Backoff{Initial: 20 * time.Millisecond, Max: 200 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := table.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, _ = pool.Exec(ctx, "DROP TABLE IF EXISTS "+name+", "+name+"_leases CASCADE")
	})
	return table
}

func kafkaConfig(brokers []string, group string) kafka.Config {
	return kafka.Config{
		Brokers: brokers,
		Logger:  quiet,
		Consumer: kafka.ConsumerConfig{
			Group:          group,
			CommitInterval: 200 * time.Millisecond,
		},
	}
}

// publishOrders publishes n messages over keys with a per-key "seq" header,
// in order per key, through the durable Kafka producer.
func publishOrders(t testing.TB, brokers []string, topic string, n, keys int) []*reliable.Message {
	t.Helper()
	pub, err := kafka.NewProducer(kafka.Config{Brokers: brokers, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	msgs := make([]*reliable.Message, n)
	for i := range msgs {
		k := i % keys
		msgs[i] = &reliable.Message{Topic: topic, Key: "order-" + strconv.Itoa(k), Type: "order.event",
			Headers: map[string]string{"seq": strconv.Itoa(i / keys)}}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for i := 0; i < n; i += 500 {
		if err := pub.Publish(ctx, msgs[i:min(i+500, n)]...); err != nil {
			t.Fatalf("publish: %v", err)
		}
	}
	return msgs
}

// failsFirstTime says whether a message's first attempt fails: about rate
// of messages, chosen by ID so both instances agree.
func failsFirstTime(msg *reliable.Message, rate uint32) bool {
	h := fnv.New32a()
	_, _ = h.Write([]byte(msg.ID))
	return h.Sum32()%100 < rate
}

func TestKafkaTwoInstancesTransientFailuresExactlyOnceInOrder(t *testing.T) {
	// L09, L10, L11, L12, L20 on real Kafka, PostgreSQL and Redis: two consumer
	// instances in one group, each with its own retrier on one retry table,
	// 20% transient failures. Every message applied exactly once, in order per
	// key.
	if testing.Short() {
		t.Skip("integration test")
	}
	brokers := testenv.Kafka(t)
	pool := pgPool(t)
	rdb := redisClient(t)
	topic := testenv.UniqueName(t, "pipeline")
	testenv.CreateTopic(t, brokers, topic, 4)
	group := shortName("kitchen_")
	table := retryTable(t, pool, group)
	n := 2000
	if s := os.Getenv("RELIABLE_PIPELINE_N"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	msgs := publishOrders(t, brokers, topic, n, 50)

	led := newLedger()
	var failed sync.Map
	h := reliable.HandlerFunc(func(_ context.Context, m *reliable.Message) error {
		if failsFirstTime(m, 20) {
			if _, again := failed.LoadOrStore(m.ID, true); !again {
				return errors.New("downstream timeout")
			}
		}
		led.apply(m)
		return nil
	})
	var stops []func() error
	for i := 0; i < 2; i++ {
		store, err := idempotency.NewRedis(rdb, idempotency.RedisConfig{Namespace: group})
		if err != nil {
			t.Fatal(err)
		}
		c, err := kafka.NewConsumer(kafkaConfig(brokers, group), h, consumer.Config{
			Topic: topic, Dedupe: store, RetryTable: table, Concurrency: 32, Logger: quiet,
			Retrier: retry.RetrierConfig{PollInterval: 50 * time.Millisecond, Instance: "instance-" + strconv.Itoa(i)},
		})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- c.Run(ctx) }()
		stops = append(stops, func() error { cancel(); return <-done })
		time.Sleep(time.Second) // the second one joins while the first works: a rebalance
	}
	eventually(t, 3*time.Minute, "every message applied", func() bool { return led.count() == n })
	for _, stop := range stops {
		if err := stop(); err != nil {
			t.Errorf("Run: %v", err)
		}
	}
	led.check(t, msgs)
	var parkedFirst int
	failed.Range(func(any, any) bool { parkedFirst++; return true })
	t.Logf("%d messages over 50 keys, %d failed their first attempt; all applied once, in order", n, parkedFirst)
}

// Crash after the handler succeeded but before the offset commit (L20): the
// child process handles every message, records it done in the dedupe store,
// and is killed with SIGKILL before it ever commits. The redelivered messages
// must be recognised as duplicates and not applied again, for both stores.
func TestKillAfterHandleBeforeCommitDedupes(t *testing.T) {
	for _, store := range []string{"redis", "postgres"} {
		t.Run(store, func(t *testing.T) { testKillAfterHandleBeforeCommit(t, store) })
	}
}

const crashChildEnv = "RELIABLE_CONSUMER_CRASH_CHILD"

func testKillAfterHandleBeforeCommit(t *testing.T, storeKind string) {
	if testing.Short() {
		t.Skip("integration test")
	}
	brokers := testenv.Kafka(t)
	pool := pgPool(t)
	topic := testenv.UniqueName(t, "crash")
	testenv.CreateTopic(t, brokers, topic, 2)
	group := shortName("crash_")
	ledgerTable := shortName("ledger_")
	ctx := testenv.Context(t, 3*time.Minute)
	if _, err := pool.Exec(ctx, "CREATE TABLE "+ledgerTable+" (message_id text NOT NULL, applied_by text NOT NULL)"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = pool.Exec(context.Background(), "DROP TABLE IF EXISTS "+ledgerTable+", idem_"+ledgerTable)
	})
	const n = 200
	publishOrders(t, brokers, topic, n, 10)

	cmd := exec.Command(os.Args[0], "-test.run", "^TestCrashChild$", "-test.v")
	cmd.Env = append(os.Environ(), crashChildEnv+"=1", "CHILD_TOPIC="+topic, "CHILD_GROUP="+group,
		"CHILD_LEDGER="+ledgerTable, "CHILD_STORE="+storeKind)
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	store := dedupeStore(t, storeKind, pool, group, "idem_"+ledgerTable)
	// Wait until the child applied every message; Done follows each handler
	// within milliseconds, so a short pause lets the last ones be recorded.
	// Then kill it: it never committed an offset.
	eventually(t, 2*time.Minute, "the child to handle everything", func() bool {
		var rows int
		_ = pool.QueryRow(ctx, "SELECT count(*) FROM "+ledgerTable).Scan(&rows)
		return rows >= n
	})
	time.Sleep(2 * time.Second)
	_ = cmd.Process.Signal(syscall.SIGKILL)
	_ = cmd.Wait()
	if t.Failed() {
		t.Log(out.String())
	}

	var dups atomic.Int64
	h := reliable.HandlerFunc(func(ctx context.Context, m *reliable.Message) error {
		_, err := pool.Exec(ctx, "INSERT INTO "+ledgerTable+" VALUES ($1, 'parent')", m.ID)
		return err
	})
	c, err := kafka.NewConsumer(kafkaConfig(brokers, group), h, consumer.Config{Topic: topic, Dedupe: store, Logger: quiet,
		Observe: func(e consumer.Event) {
			if e.Outcome == consumer.OutcomeDuplicate {
				dups.Add(1)
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(runCtx) }()
	eventually(t, 2*time.Minute, "redelivery of the uncommitted messages", func() bool { return dups.Load() >= n })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	var rows, distinct int
	if err := pool.QueryRow(ctx, "SELECT count(*), count(DISTINCT message_id) FROM "+ledgerTable).Scan(&rows, &distinct); err != nil {
		t.Fatal(err)
	}
	if rows != n || distinct != n {
		t.Fatalf("ledger has %d rows for %d distinct messages, want %d once each", rows, distinct, n)
	}
	t.Logf("%s: %d messages redelivered after kill -9, all skipped as duplicates", storeKind, dups.Load())
}

func dedupeStore(t testing.TB, kind string, pool *pgxpool.Pool, group, table string) idempotency.Store {
	t.Helper()
	switch kind {
	case "redis":
		s, err := idempotency.NewRedis(redisClient(t), idempotency.RedisConfig{Namespace: group})
		if err != nil {
			t.Fatal(err)
		}
		return s
	default:
		s, err := idempotency.NewPostgres(pool, idempotency.PostgresConfig{Namespace: group, Table: table})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := s.Migrate(ctx); err != nil {
			t.Fatal(err)
		}
		return s
	}
}

// TestCrashChild is the consumer process that TestKillAfterHandleBeforeCommit
// kills; it does nothing in a normal run.
func TestCrashChild(t *testing.T) {
	if os.Getenv(crashChildEnv) != "1" {
		t.Skip("runs only as the child of TestKillAfterHandleBeforeCommitDedupes")
	}
	brokers := testenv.Kafka(t)
	pool := pgPool(t)
	group, ledgerTable := os.Getenv("CHILD_GROUP"), os.Getenv("CHILD_LEDGER")
	store := dedupeStore(t, os.Getenv("CHILD_STORE"), pool, group, "idem_"+ledgerTable)
	h := reliable.HandlerFunc(func(ctx context.Context, m *reliable.Message) error {
		_, err := pool.Exec(ctx, "INSERT INTO "+ledgerTable+" VALUES ($1, 'child')", m.ID)
		return err
	})
	kcfg := kafkaConfig(brokers, group)
	kcfg.Consumer.CommitInterval = time.Hour // the crash comes before any commit
	c, err := kafka.NewConsumer(kcfg, h, consumer.Config{Topic: os.Getenv("CHILD_TOPIC"), Dedupe: store, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	_ = c.Run(context.Background()) // until killed
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf []byte
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	return len(p), nil
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return fmt.Sprintf("child output:\n%s", b.buf)
}
