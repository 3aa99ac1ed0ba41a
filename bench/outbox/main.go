// Command outbox-bench measures the reliable outbox relay against
// watermill's SQL forwarder (watermill-sql + watermill-kafka), both durable
// (acks=all), on the same PostgreSQL and Kafka, in one run:
//
//   - throughput: a prefilled backlog is relayed to Kafka; messages per second
//     from the relay's start until the last confirm;
//   - latency: business transactions commit one message each at a fixed rate;
//     the time from each commit to the broker's confirm, p50 and p99.
//
// Usage (from this directory, with scripts/services.sh up):
//
//	go run . [-n 100000] [-keys 10000] [-wm-n 10000] [-rate 1000] [-duration 20s]
//
// Endpoints come from RELIABLE_POSTGRES_DSN and RELIABLE_KAFKA_BROKERS or
// the repository's .cache/services.env.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/IBM/sarama"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/adapters/kafka"
	"github.com/reliable-go/reliable/outbox"
)

var (
	flagN          = flag.Int("n", 100000, "backlog size for the relay throughput run")
	flagKeys       = flag.Int("keys", 10000, "distinct keys (orders)")
	flagWMN        = flag.Int("wm-n", 10000, "backlog size for the watermill forwarder throughput run")
	flagRate       = flag.Int("rate", 1000, "messages per second offered in the latency runs")
	flagDuration   = flag.Duration("duration", 20*time.Second, "length of each latency run")
	flagPayload    = flag.Int("payload", 100, "payload bytes")
	flagVacuum     = flag.Bool("vacuum", true, "VACUUM the outbox tables before each relay latency run (the throughput run leaves dead rows that autovacuum removes only within a minute)")
	flagBatchFirst = flag.Bool("batch-first", false, "run the relay with batch confirms before the default relay")
	flagSkipWM     = flag.Bool("skip-watermill", false, "run only the reliable relay")
	flagPubs       = flag.Int("publishers", 0, "relay Config.Publishers (0: default)")
	flagSkipBatch  = flag.Bool("skip-batch", false, "skip the relay with batch confirms")
	flagSkipLog    = flag.Bool("skip-log", false, "skip the log-reading relay (outbox.ModeLog)")
	flagLogLast    = flag.Bool("log-last", false, "run the log-reading relay after the polling relay (default: before)")
	flagLatOnly    = flag.String("latency-only", "", "comma-separated latency runs to make, in order, instead of the whole benchmark: relay, batch, log, and the baselines direct (the producer alone) and ctp (commit, then publish); e.g. ctp,log,relay")
	flagRepeat     = flag.Int("repeat", 1, "with -latency-only: how many times to make the sequence of runs")
	flagStallDump  = flag.String("stall-dump", "", "write every goroutine's stack to this file (suffixed with the run) the first time a relay latency run's oldest row waited 5s")
)

func main() {
	flag.Parse()
	log.SetFlags(0)
	dsn, brokers := env("RELIABLE_POSTGRES_DSN"), env("RELIABLE_KAFKA_BROKERS")
	if dsn == "" || brokers == "" {
		log.Fatal("RELIABLE_POSTGRES_DSN and RELIABLE_KAFKA_BROKERS are required (or .cache/services.env)")
	}
	run(dsn, strings.Split(brokers, ","))
}

// run runs every measurement and prints the table.
func run(dsn string, brokers []string) {
	b := &bench{dsn: dsn, brokers: brokers, payload: make([]byte, *flagPayload)}
	ctx := context.Background()
	b.schema = fmt.Sprintf("outbox_bench_%d", time.Now().UnixNano())
	b.must(b.exec(ctx, "CREATE SCHEMA "+b.schema))
	defer func() { _ = b.exec(context.Background(), "DROP SCHEMA "+b.schema+" CASCADE") }()
	defer b.deleteTopics()

	fmt.Printf("outbox benchmark: PostgreSQL + 3-broker Kafka (acks=all, RF 3, min.insync.replicas 2), payload %d B, %d keys\n",
		*flagPayload, *flagKeys)
	fmt.Printf("throughput: backlog of %d (relay) / %d (forwarder) rows; latency: %d msgs/s for %s, one per transaction\n\n",
		*flagN, *flagWMN, *flagRate, *flagDuration)
	if *flagLatOnly != "" {
		b.latencyOnly(ctx)
		return
	}
	var rt, bt, lt float64
	pt := b.producerThroughput(ctx)
	if !*flagSkipLog && !*flagLogLast {
		lt = b.relayThroughput(ctx, false, true)
	}
	if *flagBatchFirst && !*flagSkipBatch {
		bt = b.relayThroughput(ctx, true, false)
		rt = b.relayThroughput(ctx, false, false)
	} else {
		rt = b.relayThroughput(ctx, false, false)
		if !*flagSkipBatch {
			bt = b.relayThroughput(ctx, true, false)
		}
	}
	if !*flagSkipLog && *flagLogLast {
		lt = b.relayThroughput(ctx, false, true)
	}
	var rl, bl, ll latency
	if !*flagSkipLog && !*flagLogLast {
		ll = b.relayLatency(ctx, false, true)
	}
	if *flagBatchFirst && !*flagSkipBatch {
		bl = b.relayLatency(ctx, true, false)
		rl = b.relayLatency(ctx, false, false)
	} else {
		rl = b.relayLatency(ctx, false, false)
		if !*flagSkipBatch {
			bl = b.relayLatency(ctx, true, false)
		}
	}
	if !*flagSkipLog && *flagLogLast {
		ll = b.relayLatency(ctx, false, true)
	}
	dl := b.directLatency(ctx, false)
	tl := b.directLatency(ctx, true)
	var wt float64
	var wl latency
	if !*flagSkipWM {
		wt = b.watermillThroughput(ctx)
		wl = b.watermillLatency(ctx)
	}
	fmt.Printf("\n%-34s %14s %10s %10s %10s\n", "run", "throughput", "p50", "p99", "max")
	fmt.Printf("%-34s %11.0f/s %10s %10s %10s\n", "reliable outbox relay", rt, rl.p50, rl.p99, rl.max)
	if !*flagSkipLog {
		fmt.Printf("%-34s %11.0f/s %10s %10s %10s\n", "reliable relay reading the WAL", lt, ll.p50, ll.p99, ll.max)
	}
	fmt.Printf("%-34s %11.0f/s %10s %10s %10s\n", "(baseline: kafka.NewProducer alone)", pt, dl.p50, dl.p99, dl.max)
	fmt.Printf("%-34s %14s %10s %10s %10s\n", "(baseline: commit, then publish)", "-", tl.p50, tl.p99, tl.max)
	if !*flagSkipBatch {
		fmt.Printf("%-34s %11.0f/s %10s %10s %10s\n", "(relay with batch confirms)", bt, bl.p50, bl.p99, bl.max)
	}
	if !*flagSkipLog {
		fmt.Printf("\nWAL relay: p99 %.2fx commit-then-publish's; throughput %.2fx the polling relay's, %.2fx the producer's alone\n",
			float64(ll.p99)/float64(max(tl.p99, 1)), lt/rt, lt/pt)
	}
	if *flagSkipWM {
		return
	}
	fmt.Printf("%-34s %11.0f/s %10s %10s %10s\n", "watermill SQL forwarder", wt, wl.p50, wl.p99, wl.max)
	fmt.Printf("\nrelay / forwarder throughput: %.1fx\n", rt/wt)
	if wl.missing > 0 {
		fmt.Printf("forwarder latency run: %d of %d messages not confirmed 30s after the load stopped (counted at that time)\n", wl.missing, wl.n)
	}
}

// latencyOnly makes the -latency-only runs -repeat times (issue 19: a stall
// of the polling relay's latency run seen once in a while) and prints each
// run's p50/p99.
func (b *bench) latencyOnly(ctx context.Context) {
	pool := b.pool(ctx, 2)
	b.must(outbox.Migrate(ctx, pool))
	pool.Close()
	var lines []string
	p99s := map[string][]time.Duration{}
	for i := range *flagRepeat {
		for _, kind := range strings.Split(*flagLatOnly, ",") {
			var l latency
			switch kind {
			case "relay":
				l = b.relayLatency(ctx, false, false)
			case "batch":
				l = b.relayLatency(ctx, true, false)
			case "log":
				l = b.relayLatency(ctx, false, true)
			case "direct":
				l = b.directLatency(ctx, false)
			case "ctp":
				l = b.directLatency(ctx, true)
			default:
				log.Fatalf("-latency-only: unknown run %q (relay, batch, log, direct, ctp)", kind)
			}
			lines = append(lines, fmt.Sprintf("run %d %-6s p50 %10s p99 %10s max %10s unconfirmed %d", i+1, kind, l.p50, l.p99, l.max, l.missing))
			p99s[kind] = append(p99s[kind], l.p99)
			// Rows a stalled run left would load the next run's relay:
			// every run starts on an empty outbox.
			b.must(b.exec(ctx, "DELETE FROM "+b.schema+".reliable_outbox"))
			b.deleteTopics()
			b.topics = nil
		}
	}
	fmt.Println()
	for _, l := range lines {
		fmt.Println(l)
	}
	// Runs of one kind against the commit-then-publish baseline, median of
	// the repeats: issue 19's latency target compares the relays with it.
	base := median(p99s["ctp"])
	for _, kind := range strings.Split(*flagLatOnly, ",") {
		if kind == "ctp" || base == 0 || len(p99s[kind]) == 0 {
			continue
		}
		m := median(p99s[kind])
		fmt.Printf("%-6s median p99 %s: %.2fx commit-then-publish's median p99 %s (%d runs each)\n",
			kind, m, float64(m)/float64(base), base, len(p99s[kind]))
		p99s[kind] = nil // once per kind
	}
}

// median returns the median of ds (the upper one of an even count), 0 for
// none.
func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

type bench struct {
	dsn     string
	schema  string
	brokers []string
	payload []byte
	topics  []string
}

func (b *bench) must(err error) {
	if err != nil {
		log.Fatal(err)
	}
}

func (b *bench) exec(ctx context.Context, sql string) error {
	conn, err := pgx.Connect(ctx, b.dsn)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, sql)
	return err
}

func (b *bench) pool(ctx context.Context, maxConns int32) *pgxpool.Pool {
	cfg, err := pgxpool.ParseConfig(b.dsn)
	b.must(err)
	cfg.ConnConfig.RuntimeParams["search_path"] = b.schema
	cfg.MaxConns = maxConns
	p, err := pgxpool.NewWithConfig(ctx, cfg)
	b.must(err)
	// Open every connection now: a running application's pool is warm, and
	// dozens of backends starting at once would load the machine for the
	// first second of a latency run.
	conns := make([]*pgxpool.Conn, 0, maxConns)
	for range maxConns {
		c, err := p.Acquire(ctx)
		b.must(err)
		conns = append(conns, c)
	}
	for _, c := range conns {
		c.Release()
	}
	return p
}

func saramaConfig() *sarama.Config {
	c := sarama.NewConfig()
	c.Version = sarama.V2_8_0_0
	c.Producer.RequiredAcks = sarama.WaitForAll
	c.Producer.Idempotent = true
	c.Net.MaxOpenRequests = 1
	c.Producer.Retry.Max = 10
	c.Producer.Return.Successes = true
	c.Metadata.AllowAutoTopicCreation = false
	return c
}

// topic creates a topic with 12 partitions and replication factor 3.
func (b *bench) topic(name string) string {
	admin, err := sarama.NewClusterAdmin(b.brokers, saramaConfig())
	b.must(err)
	defer admin.Close()
	name = fmt.Sprintf("%s_%d", name, time.Now().UnixNano())
	minISR := "2"
	b.must(admin.CreateTopic(name, &sarama.TopicDetail{NumPartitions: 12, ReplicationFactor: 3,
		ConfigEntries: map[string]*string{"min.insync.replicas": &minISR}}, false))
	b.topics = append(b.topics, name)
	time.Sleep(2 * time.Second) // leaders elected everywhere
	return name
}

func (b *bench) deleteTopics() {
	admin, err := sarama.NewClusterAdmin(b.brokers, saramaConfig())
	if err != nil {
		return
	}
	defer admin.Close()
	for _, t := range b.topics {
		_ = admin.DeleteTopic(t)
	}
}

// confirmClock records when each message ID was confirmed and when it was
// committed.
type confirmClock struct {
	mu        sync.Mutex
	committed map[string]time.Time
	handedAt  map[string]time.Time // first handed to the broker client
	confirmed map[string]time.Time
	count     int
	last      time.Time
	done      chan struct{}
	want      int
}

func newClock(want int) *confirmClock {
	return &confirmClock{committed: map[string]time.Time{}, handedAt: map[string]time.Time{}, confirmed: map[string]time.Time{},
		done: make(chan struct{}), want: want}
}

func (c *confirmClock) commit(ids []string, at time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, id := range ids {
		if _, ok := c.committed[id]; !ok { // the first note wins
			c.committed[id] = at
		}
	}
}

func (c *confirmClock) handed(ids []string) {
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, id := range ids {
		if _, ok := c.handedAt[id]; !ok {
			c.handedAt[id] = now
		}
	}
}

// split is the p50/p99 of the two parts of the relay's latency: commit to
// the Publish call (noticing, claiming, reading, batching) and the Publish
// call itself (the broker client and the broker).
func (c *confirmClock) split() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var queue, broker []time.Duration
	for id, at := range c.committed {
		h, ok1 := c.handedAt[id]
		conf, ok2 := c.confirmed[id]
		if ok1 && ok2 {
			queue = append(queue, max(h.Sub(at), 0))
			broker = append(broker, conf.Sub(h))
		}
	}
	q := func(ds []time.Duration, p float64) time.Duration {
		if len(ds) == 0 {
			return 0
		}
		slices.Sort(ds)
		return ds[int(p*float64(len(ds)-1))].Round(100 * time.Microsecond)
	}
	return fmt.Sprintf("commit to Publish call p50 %s p99 %s; Publish call p50 %s p99 %s",
		q(queue, 0.5), q(queue, 0.99), q(broker, 0.5), q(broker, 0.99))
}

func (c *confirmClock) confirm(ids []string) {
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, id := range ids {
		if _, dup := c.confirmed[id]; dup {
			continue
		}
		c.confirmed[id] = now
		c.count++
		c.last = now
		if c.count == c.want {
			close(c.done)
		}
	}
}

type latency struct {
	p50, p99, max time.Duration
	n, missing    int
}

func (c *confirmClock) latencies(timeoutAt time.Time) latency {
	c.mu.Lock()
	defer c.mu.Unlock()
	var ds []time.Duration
	missing := 0
	for id, at := range c.committed {
		conf, ok := c.confirmed[id]
		if !ok {
			missing++
			conf = timeoutAt
		}
		ds = append(ds, max(conf.Sub(at), 0))
	}
	slices.Sort(ds)
	if len(ds) == 0 {
		return latency{}
	}
	q := func(p float64) time.Duration { return ds[int(p*float64(len(ds)-1))].Round(100 * time.Microsecond) }
	return latency{p50: q(0.5), p99: q(0.99), max: ds[len(ds)-1].Round(100 * time.Microsecond), n: len(ds), missing: missing}
}

// timeline is the worst commit-to-confirm latency per 2-second window of
// commit time, to tell a slow start from a steady tail.
func (c *confirmClock) timeline() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var first time.Time
	for _, at := range c.committed {
		if first.IsZero() || at.Before(first) {
			first = at
		}
	}
	worst := map[int]time.Duration{}
	last := 0
	for id, at := range c.committed {
		conf, ok := c.confirmed[id]
		if !ok {
			continue
		}
		w := int(at.Sub(first) / (2 * time.Second))
		worst[w] = max(worst[w], conf.Sub(at))
		last = max(last, w)
	}
	var b strings.Builder
	for w := 0; w <= last; w++ {
		fmt.Fprintf(&b, " %ds:%s", 2*w, worst[w].Round(time.Millisecond))
	}
	return b.String()
}

// clockPublisher notes the confirm time of every message Publish returned
// nil for.
type clockPublisher struct {
	reliable.Publisher
	clock *confirmClock
}

func (p *clockPublisher) Publish(ctx context.Context, msgs ...*reliable.Message) error {
	ids := make([]string, len(msgs))
	for i, m := range msgs {
		ids[i] = m.ID
	}
	p.clock.handed(ids)
	err := p.Publisher.Publish(ctx, msgs...)
	failed := map[string]bool{}
	if err != nil {
		if pe, ok := err.(*reliable.PublishError); ok {
			failed = pe.FailedIDs()
		} else {
			return err
		}
	}
	ids = ids[:0]
	for _, m := range msgs {
		if !failed[m.ID] {
			ids = append(ids, m.ID)
		}
	}
	p.clock.confirm(ids)
	return err
}

// PublishAsync notes the confirm time of msg when its own confirm arrives,
// so the relay's per-message path is timed like the batch path.
func (p *clockPublisher) PublishAsync(ctx context.Context, msg *reliable.Message, done func(*reliable.Message, error)) error {
	ap, ok := p.Publisher.(reliable.AsyncPublisher)
	if !ok {
		return errors.ErrUnsupported
	}
	msg.EnsureID()
	p.clock.handed([]string{msg.ID})
	return ap.PublishAsync(ctx, msg, func(m *reliable.Message, err error) {
		if err == nil {
			p.clock.confirm([]string{m.ID})
		}
		done(m, err)
	})
}

// batchOnly hides a publisher's PublishAsync, so the relay publishes in
// batches and waits for each batch's slowest confirm: the relay as it was
// before it confirmed messages one by one, timed side by side.
type batchOnly struct{ reliable.Publisher }

func (b *bench) newRelay(ctx context.Context, topic string, clock *confirmClock, batches bool, slot string) (*outbox.Relay, *pgxpool.Pool, func()) {
	pool := b.pool(ctx, 8)
	logger := slog.New(slog.DiscardHandler)
	if os.Getenv("BENCH_DEBUG") != "" {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	pub, err := kafka.NewProducer(kafka.Config{Brokers: b.brokers, Logger: logger})
	b.must(err)
	b.warmUp(ctx, pub, topic)
	var relayPub reliable.Publisher = &clockPublisher{Publisher: pub, clock: clock}
	if batches {
		relayPub = batchOnly{relayPub}
	}
	cfg := outbox.Config{
		Logger:     logger,
		Publishers: *flagPubs,
	}
	if slot != "" {
		cfg.Mode, cfg.Slot = outbox.ModeLog, slot
	}
	relay, err := outbox.NewRelay(pool, relayPub, cfg)
	b.must(err)
	return relay, pool, func() { _ = pub.Close(); pool.Close() }
}

// warmUp publishes to every partition of topic through pub before a run,
// so that no run times the producer's start (metadata, producer ID, the
// first connection to each leader) instead of steady state.
func (b *bench) warmUp(ctx context.Context, pub reliable.Publisher, topic string) {
	msgs := make([]*reliable.Message, 0, 64)
	for i := range 64 { // 64 keys reach each of the 12 partitions, most likely
		msgs = append(msgs, &reliable.Message{Topic: topic, Key: fmt.Sprintf("warmup-%d", i), Type: "warmup", Payload: b.payload})
	}
	b.must(pub.Publish(ctx, msgs...))
}

func (b *bench) message(topic string, i int) *reliable.Message {
	return &reliable.Message{Topic: topic, Key: fmt.Sprintf("order-%d", i%*flagKeys), Type: "order.paid", Payload: b.payload}
}

// vacuum removes the dead rows a previous run left in the outbox tables
// (-vacuum), so that each run starts as after autovacuum.
func (b *bench) vacuum(ctx context.Context) {
	if *flagVacuum {
		b.must(b.exec(ctx, "VACUUM ANALYZE "+b.schema+".reliable_outbox, "+b.schema+".reliable_outbox_keys, "+b.schema+".reliable_outbox_leases"))
	}
}

// relayThroughput prefills the outbox, then times the relay draining it;
// with batches it publishes in batch calls instead of confirming each
// message on its own.
func (b *bench) relayThroughput(ctx context.Context, batches, logMode bool) float64 {
	name := "relay"
	if batches {
		name = "relay (batch confirms)"
	}
	topic := b.topic("outbox_bench_tp")
	pool := b.pool(ctx, 8)
	defer pool.Close()
	b.must(outbox.Migrate(ctx, pool))
	b.vacuum(ctx)
	slot := ""
	if logMode {
		// The slot exists before the backlog is written: the relay reads
		// the backlog from the log.
		name, slot = "relay (WAL)", b.schema+"_tp"
		b.must(outbox.CreateSlot(ctx, pool, slot))
		defer b.dropSlot(pool, slot)
	}
	n := *flagN
	fill := time.Now()
	const perTx = 500
	var wg sync.WaitGroup
	sem := make(chan struct{}, 4)
	for start := 0; start < n; start += perTx {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			msgs := make([]*reliable.Message, 0, perTx)
			for i := start; i < min(start+perTx, n); i++ {
				msgs = append(msgs, b.message(topic, i))
			}
			b.must(pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { return outbox.Add(ctx, tx, msgs...) }))
		})
	}
	wg.Wait()
	log.Printf("%s: prefilled %d rows in %s", name, n, time.Since(fill).Round(time.Millisecond))

	clock := newClock(n)
	relay, _, closeRelay := b.newRelay(ctx, topic, clock, batches, slot)
	defer closeRelay()
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	start := time.Now()
	go func() { defer close(done); _ = relay.Run(rctx) }()
	select {
	case <-clock.done:
	case <-time.After(10 * time.Minute):
		log.Fatal("relay throughput run timed out")
	}
	elapsed := clock.last.Sub(start)
	// Wait for the deletes too, so the latency run starts on an empty table.
	for {
		var pending int64
		b.must(pool.QueryRow(ctx, `SELECT count(*) FROM reliable_outbox`).Scan(&pending))
		if pending == 0 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	<-done
	s := relay.Stats()
	log.Printf("%s: %d confirmed in %s (%d Publish calls, %.0f per call; %d rows from the log, %d claim queries)", name, n, elapsed.Round(time.Millisecond),
		s.Batches, float64(s.Published)/float64(max(s.Batches, 1)), s.LogRows, s.ClaimQueries)
	return float64(n) / elapsed.Seconds()
}

// offer commits one message per transaction at rate per second for d,
// recording commit times, and returns the number offered.
func offer(ctx context.Context, rate int, d time.Duration, clock *confirmClock, add func(ctx context.Context, i int) (string, error)) int {
	// Enough writers that commit latency (an fsync each) does not cap the rate.
	workers := max(8, rate/25)
	interval := time.Duration(workers) * time.Second / time.Duration(rate)
	var wg sync.WaitGroup
	var mu sync.Mutex
	total := 0
	end := time.Now().Add(d)
	for w := range workers {
		wg.Go(func() {
			next := time.Now().Add(time.Duration(w) * interval / time.Duration(workers))
			for i := w; time.Now().Before(end); i += workers {
				time.Sleep(time.Until(next))
				next = next.Add(interval)
				id, err := add(ctx, i)
				if err != nil {
					log.Fatal(err)
				}
				clock.commit([]string{id}, time.Now())
				mu.Lock()
				total++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return total
}

// relayLatency times the relay at a steady rate; with batches it publishes
// in batch calls instead of confirming each message on its own.
func (b *bench) relayLatency(ctx context.Context, batches, logMode bool) latency {
	name := "relay"
	if batches {
		name = "relay (batch confirms)"
	}
	b.vacuum(ctx)
	topic := b.topic("outbox_bench_lat")
	clock := newClock(-1)
	slot := ""
	if logMode {
		name, slot = "relay (WAL)", b.schema+"_lat"
		sp := b.pool(ctx, 2)
		b.must(outbox.CreateSlot(ctx, sp, slot))
		defer func() { b.dropSlot(sp, slot); sp.Close() }()
	}
	relay, _, closeRelay := b.newRelay(ctx, topic, clock, batches, slot)
	defer closeRelay()
	// The business transactions use their own pool, as an application's
	// would, so they do not queue the relay behind them for connections.
	pool := b.pool(ctx, int32(max(8, *flagRate/25)))
	defer pool.Close()
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = relay.Run(rctx) }()
	watched := make(chan struct{})
	go func() { defer close(watched); b.watchStalls(rctx, pool, name, relay) }()
	time.Sleep(time.Second)
	n := offer(ctx, *flagRate, *flagDuration, clock, func(ctx context.Context, i int) (string, error) {
		m := b.message(topic, i)
		err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { return outbox.Add(ctx, tx, m) })
		return m.ID, err
	})
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		clock.mu.Lock()
		c := clock.count
		clock.mu.Unlock()
		if c >= n {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	<-done
	<-watched
	s := relay.Stats()
	if logMode {
		log.Printf("%s: state %s, %d rows from the log, %d claim queries, %d visibility waits", name, s.LogState, s.LogRows, s.ClaimQueries, s.LogVisibilityWaits)
	}
	log.Printf("%s: %d keys leased, %d returned, %d orphaned leases taken back, %d outages, %d failures, last error %q",
		name, s.KeysLeased, s.KeysReturned, s.OrphanLeases, s.Outages, s.Failures, s.LastError)
	l := clock.latencies(time.Now())
	log.Printf("%s latency: %d messages at %d/s: p50 %s p99 %s max %s, %d unconfirmed", name, l.n, *flagRate, l.p50, l.p99, l.max, l.missing)
	log.Printf("%s latency, worst per 2s of commit time:%s", name, clock.timeline())
	log.Printf("%s latency, split: %s", name, clock.split())
	return l
}

func env(name string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	dir, _ := os.Getwd()
	for ; dir != filepath.Dir(dir); dir = filepath.Dir(dir) {
		f, err := os.Open(filepath.Join(dir, ".cache", "services.env"))
		if err != nil {
			continue
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), "=")
			if ok && k == name {
				return strings.Trim(v, `'"`)
			}
		}
		return ""
	}
	return ""
}

// directLatency publishes one message per call at the same rate straight
// through kafka.NewProducer, without any outbox. Alone, it is the broker's
// own share of the latency on this machine. With dualWrite, each message's
// business row is first committed in its own transaction: an application
// without an outbox (which loses the message when it crashes between the
// two), timed from the commit as the relay is, under the same PostgreSQL
// load.
func (b *bench) directLatency(ctx context.Context, dualWrite bool) latency {
	name, topic := "direct", b.topic("direct_bench_lat")
	if dualWrite {
		name, topic = "commit-then-publish", b.topic("dual_bench_lat")
	}
	pub, err := kafka.NewProducer(kafka.Config{Brokers: b.brokers, Logger: slog.New(slog.DiscardHandler)})
	b.must(err)
	defer pub.Close()
	clock := newClock(-1)
	cp := &clockPublisher{Publisher: pub, clock: clock}
	b.warmUp(ctx, pub, topic)
	pool := b.pool(ctx, int32(max(8, *flagRate/25)))
	defer pool.Close()
	_, err = pool.Exec(ctx, `CREATE TABLE IF NOT EXISTS bench_orders (id text PRIMARY KEY, payload bytea NOT NULL)`)
	b.must(err)
	offer(ctx, *flagRate, *flagDuration, clock, func(ctx context.Context, i int) (string, error) {
		m := b.message(topic, i)
		m.EnsureID()
		if dualWrite {
			if _, err := pool.Exec(ctx, `INSERT INTO bench_orders (id, payload) VALUES ($1, $2)`, m.ID, m.Payload); err != nil {
				return "", err
			}
		}
		// offer notes the commit time after this returns; note it here,
		// before the publish.
		clock.commit([]string{m.ID}, time.Now())
		return m.ID, cp.Publish(ctx, m)
	})
	l := clock.latencies(time.Now())
	log.Printf("%s latency: %d messages at %d/s: p50 %s p99 %s max %s", name, l.n, *flagRate, l.p50, l.p99, l.max)
	return l
}

// dropSlot drops a run's replication slot once its relay's walsender ended.
func (b *bench) dropSlot(pool *pgxpool.Pool, slot string) {
	ctx := context.Background()
	for range 50 {
		if err := outbox.DropSlot(ctx, pool, slot); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	log.Printf("replication slot %s left behind: drop it (SELECT pg_drop_replication_slot('%s'))", slot, slot)
}

// producerThroughput publishes the throughput run's messages straight
// through kafka.NewProducer, as the relay does (Publishers calls of up to
// BatchSize messages in flight, one message per key at a time is not
// required here): the ceiling a relay could reach on this machine.
func (b *bench) producerThroughput(ctx context.Context) float64 {
	topic := b.topic("producer_bench_tp")
	pub, err := kafka.NewProducer(kafka.Config{Brokers: b.brokers, Logger: slog.New(slog.DiscardHandler)})
	b.must(err)
	defer pub.Close()
	b.warmUp(ctx, pub, topic)
	n := *flagN
	const batch = 2000
	next := make(chan int)
	var wg sync.WaitGroup
	start := time.Now()
	for range 8 {
		wg.Go(func() {
			for from := range next {
				msgs := make([]*reliable.Message, 0, batch)
				for i := from; i < min(from+batch, n); i++ {
					msgs = append(msgs, b.message(topic, i))
				}
				b.must(pub.Publish(ctx, msgs...))
			}
		})
	}
	for from := 0; from < n; from += batch {
		next <- from
	}
	close(next)
	wg.Wait()
	elapsed := time.Since(start)
	log.Printf("kafka.NewProducer alone: %d confirmed in %s", n, elapsed.Round(time.Millisecond))
	return float64(n) / elapsed.Seconds()
}

// watchStalls logs, once a second while ctx lasts, the oldest pending row
// when it waited over two seconds, with what holds its key: no lease (the
// claim loop is behind), a lease of this relay (it works the key, or holds
// a lease it forgot: an orphan), or another owner's (a previous run's
// relay, until the lease expires). Issue 19 (a): one run's polling relay
// had rows waiting ~21 s; this says which of those it was.
func (b *bench) watchStalls(ctx context.Context, pool *pgxpool.Pool, name string, relay *outbox.Relay) {
	instance := relay.Instance()
	dumped := false
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		var (
			age, leftMs  float64
			lane, owner  string
			pending, own int64
			others       int64
		)
		err := pool.QueryRow(ctx, `SELECT extract(epoch FROM now() - o.created_at), o.lane,
				coalesce(l.owner, ''), coalesce(extract(epoch FROM l.expires_at - now()) * 1000, 0),
				(SELECT count(*) FROM reliable_outbox),
				(SELECT count(*) FROM reliable_outbox_leases WHERE owner = $1),
				(SELECT count(*) FROM reliable_outbox_leases WHERE owner <> $1)
			FROM reliable_outbox o LEFT JOIN reliable_outbox_leases l ON l.lane = o.lane
			ORDER BY o.id LIMIT 1`, instance).Scan(&age, &lane, &owner, &leftMs, &pending, &own, &others)
		if err != nil || age < 2 {
			continue
		}
		holder := "no lease"
		switch {
		case owner == instance:
			holder = "this relay's lease"
		case owner != "":
			holder = "lease of " + owner
		}
		s := relay.Stats()
		log.Printf("%s stall watch: oldest pending row %.1fs old, lane %s, %s (expires in %.1fs); %d pending, leases: %d this relay's, %d others'; "+
			"relay: %d keys, %d buffered, %d in flight, %d published, %d marked, %d claim queries, %d outages, %d failures, %d orphaned leases taken back, last error %q",
			name, age, lane, holder, leftMs/1000, pending, own, others, s.Keys, s.Buffered, s.InFlight, s.Published, s.Marked, s.ClaimQueries,
			s.Outages, s.Failures, s.OrphanLeases, s.LastError)
		if age >= 5 && *flagStallDump != "" && !dumped {
			dumped = true
			path := fmt.Sprintf("%s.%d", *flagStallDump, time.Now().UnixNano())
			if f, err := os.Create(path); err == nil {
				_ = pprof.Lookup("goroutine").WriteTo(f, 2)
				_ = f.Close()
				log.Printf("%s stall watch: goroutines written to %s", name, path)
			}
		}
	}
}
