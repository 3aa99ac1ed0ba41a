// Command claimcost measures the outbox relay's claim against the shape of
// the backlog (issue 15 item 4), in one run:
//
//   - 10k keys: -rows pending rows over 10,000 keys;
//   - 100 keys: the same rows over 100 keys;
//   - 1 key: the same rows over one key;
//   - dead rows: 10k keys plus -dead dead rows (over 1,000 other keys, which
//     they block).
//
// For each shape it reports the mean time of one claim while another relay
// holds every key (the claim finds nothing: before issue 15 it read the
// whole backlog), then the mean claim time and the drain rate (rows
// confirmed per second) of a relay publishing to Kafka for -window. Beside
// the one-key drain rate it reports one producer publishing sequentially
// (one message, wait for its confirm, the next): the natural bound of a key
// whose rows go out one at a time.
//
// Usage (from bench/outbox, with scripts/services.sh up):
//
//	go run ./claimcost [-rows 1000000] [-dead 200000] [-window 15s]
//
// or, under the test environment's shared locks (so no fault test restarts
// a broker meanwhile):
//
//	OUTBOX_BENCH=1 go test -run TestClaimCost -v -timeout 30m ./claimcost -args -rows 1000000
//
// Endpoints come from RELIABLE_POSTGRES_DSN and RELIABLE_KAFKA_BROKERS or
// the repository's .cache/services.env.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/IBM/sarama"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/adapters/kafka"
	"github.com/reliable-go/reliable/outbox"
)

var (
	flagRows   = flag.Int("rows", 1_000_000, "pending rows per shape")
	flagDead   = flag.Int("dead", 200_000, "dead rows in the dead-rows shape")
	flagWindow = flag.Duration("window", 15*time.Second, "drain measurement window per shape")
	flagClaims = flag.Int("claims", 20, "claims timed per shape while every key is leased elsewhere")
)

type shape struct {
	name       string
	keys, dead int
}

type result struct {
	shape
	fill, leasedClaim, drainClaim time.Duration
	drainRate                     float64
}

func main() {
	flag.Parse()
	loadEnv()
	dsn, brokers := os.Getenv("RELIABLE_POSTGRES_DSN"), os.Getenv("RELIABLE_KAFKA_BROKERS")
	if dsn == "" || brokers == "" {
		log.Fatal("RELIABLE_POSTGRES_DSN and RELIABLE_KAFKA_BROKERS are required (or .cache/services.env)")
	}
	run(dsn, strings.Split(brokers, ","))
}

// run measures every shape and prints the table.
func run(dsn string, brokers []string) {
	ctx := context.Background()
	b := &bench{dsn: dsn, brokers: brokers}
	topic := b.topic()
	defer b.deleteTopic(topic)
	pub, err := kafka.NewProducer(kafka.Config{Brokers: b.brokers, Logger: slog.New(slog.DiscardHandler)})
	must(err)
	defer pub.Close()
	warm := make([]*reliable.Message, 0, 64)
	for i := range 64 {
		warm = append(warm, &reliable.Message{Topic: topic, Key: fmt.Sprint("warmup-", i), Type: "warmup"})
	}
	must(pub.Publish(ctx, warm...))

	fmt.Printf("outbox claim cost by backlog shape: %d pending rows per shape, PostgreSQL + 3-broker Kafka (acks=all), drain window %s\n\n",
		*flagRows, *flagWindow)
	var results []result
	for _, s := range []shape{
		{name: "10k keys", keys: 10_000},
		{name: "100 keys", keys: 100},
		{name: "1 key", keys: 1},
		{name: fmt.Sprintf("10k keys + %dk dead rows", *flagDead/1000), keys: 10_000, dead: *flagDead},
	} {
		results = append(results, b.measure(ctx, s, pub, topic))
	}
	seq := sequential(ctx, pub, topic, *flagWindow)

	base := results[0]
	fmt.Printf("\n%-28s %10s %16s %16s %14s %8s\n", "shape", "fill", "claim, all held", "claim, draining", "drain rows/s", "vs 10k")
	for _, r := range results {
		fmt.Printf("%-28s %10s %16s %16s %14.0f %7.2fx\n", r.name, r.fill.Round(time.Second), r.leasedClaim.Round(10*time.Microsecond),
			r.drainClaim.Round(10*time.Microsecond), r.drainRate, base.drainRate/max(r.drainRate, 1))
	}
	fmt.Printf("%-28s %10s %16s %16s %14.0f\n", "one producer, sequential", "-", "-", "-", seq)
	fmt.Printf("\nclaim (all keys held elsewhere) vs the 10k-key case:")
	for _, r := range results[1:] {
		fmt.Printf(" %s %.2fx;", r.name, float64(r.leasedClaim)/float64(base.leasedClaim))
	}
	fmt.Println()
}

type bench struct {
	dsn     string
	brokers []string
}

func must(err error) {
	if err != nil {
		log.Fatal(err)
	}
}

// measure builds the shape in a schema of its own, times claims while every
// key is leased by another relay, then lets a relay drain for the window.
func (b *bench) measure(ctx context.Context, s shape, pub reliable.Publisher, topic string) result {
	res := result{shape: s}
	schema := fmt.Sprintf("claimcost_%d", time.Now().UnixNano())
	pool := b.pool(ctx, schema, true)
	defer func() {
		_, _ = pool.Exec(context.Background(), "DROP SCHEMA "+schema+" CASCADE")
		pool.Close()
	}()
	must(outbox.Migrate(ctx, pool))
	start := time.Now()
	exec(ctx, pool, `INSERT INTO reliable_outbox (lane, msg_id, topic, key, type, payload, event_time)
		SELECT 'k:order-' || (i % $2), 'id-' || i, $3, 'order-' || (i % $2), 'order.paid', '\x00'::bytea, now()
		FROM generate_series(1, $1) AS i`, *flagRows, s.keys, topic)
	if s.dead > 0 {
		exec(ctx, pool, `INSERT INTO reliable_outbox (lane, msg_id, topic, key, type, payload, event_time, attempts, last_error, dead_at)
			SELECT 'k:dead-' || (i % 1000), 'dead-' || i, $2, 'dead-' || (i % 1000), 'order.paid', '\x00'::bytea, now(), 5, 'refused', now()
			FROM generate_series(1, $1) AS i`, s.dead, topic)
	}
	exec(ctx, pool, `VACUUM ANALYZE reliable_outbox`)
	res.fill = time.Since(start)
	log.Printf("%s: filled in %s", s.name, res.fill.Round(time.Millisecond))

	// Every key leased by another relay: each claim finds nothing.
	exec(ctx, pool, `INSERT INTO reliable_outbox_leases (lane, owner, expires_at)
		SELECT DISTINCT lane, 'other-relay', now() + interval '1 hour' FROM reliable_outbox`)
	exec(ctx, pool, `ANALYZE reliable_outbox_leases`)
	st := b.run(ctx, schema, pub, func(r *outbox.Relay) bool { return r.Stats().ClaimQueries >= uint64(*flagClaims) }, 5*time.Minute)
	res.leasedClaim = st.ClaimTime / time.Duration(max(st.ClaimQueries, 1))
	log.Printf("%s: every key held elsewhere: %d claims, mean %s, %d keys claimed", s.name, st.ClaimQueries, res.leasedClaim, st.KeysLeased)

	// Drain: the other relay is gone.
	exec(ctx, pool, `DELETE FROM reliable_outbox_leases`)
	began := time.Now()
	st = b.run(ctx, schema, pub, func(*outbox.Relay) bool { return time.Since(began) >= *flagWindow }, *flagWindow+time.Minute)
	res.drainClaim = st.ClaimTime / time.Duration(max(st.ClaimQueries, 1))
	res.drainRate = float64(st.Published) / time.Since(began).Seconds()
	log.Printf("%s: drain: %d confirmed in %s (%.0f/s), %d claims, mean %s", s.name, st.Published, time.Since(began).Round(time.Millisecond),
		res.drainRate, st.ClaimQueries, res.drainClaim)
	return res
}

// run runs a relay on schema until done, then stops it and returns its
// stats.
func (b *bench) run(ctx context.Context, schema string, pub reliable.Publisher, done func(*outbox.Relay) bool, limit time.Duration) outbox.Stats {
	pool := b.pool(ctx, schema, false)
	defer pool.Close()
	r, err := outbox.NewRelay(pool, pub, outbox.Config{Logger: slog.New(slog.DiscardHandler), PollInterval: 50 * time.Millisecond})
	must(err)
	rctx, cancel := context.WithCancel(ctx)
	stopped := make(chan error, 1)
	go func() { stopped <- r.Run(rctx) }()
	deadline := time.Now().Add(limit)
	for !done(r) {
		if time.Now().After(deadline) {
			log.Fatalf("relay run did not finish within %s: %+v", limit, r.Stats())
		}
		time.Sleep(10 * time.Millisecond)
	}
	st := r.Stats()
	cancel()
	must(<-stopped)
	return st
}

// sequential publishes one message at a time, each after the previous
// one's confirm, for d, and returns messages per second.
func sequential(ctx context.Context, pub reliable.Publisher, topic string, d time.Duration) float64 {
	start := time.Now()
	n := 0
	for time.Since(start) < d {
		must(pub.Publish(ctx, &reliable.Message{Topic: topic, Key: "order-0", Type: "order.paid", Payload: []byte{0}}))
		n++
	}
	rate := float64(n) / time.Since(start).Seconds()
	log.Printf("one producer, sequential: %d in %s (%.0f/s)", n, time.Since(start).Round(time.Millisecond), rate)
	return rate
}

func exec(ctx context.Context, pool *pgxpool.Pool, sql string, args ...any) {
	if _, err := pool.Exec(ctx, sql, args...); err != nil {
		log.Fatalf("%s: %v", strings.Fields(sql)[0], err)
	}
}

func (b *bench) pool(ctx context.Context, schema string, create bool) *pgxpool.Pool {
	cfg, err := pgxpool.ParseConfig(b.dsn)
	must(err)
	cfg.MaxConns = 8
	if create {
		p, err := pgxpool.NewWithConfig(ctx, cfg)
		must(err)
		exec(ctx, p, "CREATE SCHEMA "+schema)
		p.Close()
	}
	cfg.ConnConfig.RuntimeParams["search_path"] = schema
	p, err := pgxpool.NewWithConfig(ctx, cfg)
	must(err)
	return p
}

// topic creates a topic with 12 partitions and replication factor 3.
func (b *bench) topic() string {
	admin, err := sarama.NewClusterAdmin(b.brokers, saramaConfig())
	must(err)
	defer admin.Close()
	name := fmt.Sprintf("claimcost_%d", time.Now().UnixNano())
	minISR := "2"
	must(admin.CreateTopic(name, &sarama.TopicDetail{NumPartitions: 12, ReplicationFactor: 3,
		ConfigEntries: map[string]*string{"min.insync.replicas": &minISR}}, false))
	time.Sleep(2 * time.Second) // leaders elected everywhere
	return name
}

func (b *bench) deleteTopic(name string) {
	admin, err := sarama.NewClusterAdmin(b.brokers, saramaConfig())
	if err != nil {
		return
	}
	defer admin.Close()
	_ = admin.DeleteTopic(name)
}

func saramaConfig() *sarama.Config {
	c := sarama.NewConfig()
	c.Version = sarama.V2_8_0_0
	return c
}

// loadEnv reads the repository's .cache/services.env for variables not set.
func loadEnv() {
	f, err := os.Open(filepath.Join("..", "..", ".cache", "services.env"))
	if err != nil {
		return
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if !ok || strings.HasPrefix(k, "#") || os.Getenv(k) != "" {
			continue
		}
		_ = os.Setenv(k, strings.Trim(v, "'\""))
	}
}
