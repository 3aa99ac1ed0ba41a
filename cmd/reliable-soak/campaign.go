package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/jackc/pgx/v5/pgxpool"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/reliable-go/reliable/adapters/rabbitmq"
	"github.com/reliable-go/reliable/internal/testenv"
)

// runner sets up one run (schema, topic, proxies), supervises its child
// processes and tears it all down.
type runner struct {
	cfg     *Config
	log     *slog.Logger
	exe     string
	keep    bool
	procs   *procs
	proxies []*proxy
	pool    *pgxpool.Pool // direct: progress and verdict
	env     *scope        // holds the topic until teardown
	tempDir bool          // the run directory was made here: remove it
	started time.Time
}

// newRunner prepares a run: endpoints, run directory, proxies, schema and
// topic (or exchange and queues).
func newRunner(ctx context.Context, cfg *Config, exe string, keep, lock bool, log *slog.Logger) (r *runner, err error) {
	r = &runner{cfg: cfg, log: log, exe: exe, keep: keep, env: newScope("soak", log), started: time.Now()}
	defer func() {
		if err != nil {
			r.close()
			r = nil
		}
	}()
	var b [3]byte
	_, _ = rand.Read(b[:])
	cfg.RunID = time.Now().Format("0102t150405") + hex.EncodeToString(b[:])
	cfg.names()
	if cfg.Dir == "" {
		if cfg.Dir, err = os.MkdirTemp("", "reliable-soak-"+cfg.RunID+"-"); err != nil {
			return r, err
		}
		r.tempDir = true
	} else if err = os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return r, err
	}

	if cfg.PostgresDSN, _ = testenv.Lookup(testenv.EnvPostgresDSN); cfg.PostgresDSN == "" {
		return r, fmt.Errorf("no PostgreSQL: set %s or start the services (make services)", testenv.EnvPostgresDSN)
	}
	pgProxy, proxied, err := r.proxyURL("postgres", cfg.PostgresDSN, "5432")
	if err != nil {
		return r, err
	}
	cfg.ProxiedDSN = proxied
	r.proxies = append(r.proxies, pgProxy)

	switch cfg.Broker {
	case brokerKafka:
		v, _ := testenv.Lookup(testenv.EnvKafkaBrokers)
		if v == "" {
			return r, fmt.Errorf("no Kafka: set %s or start the services", testenv.EnvKafkaBrokers)
		}
		for _, b := range strings.Split(v, ",") {
			cfg.Kafka = append(cfg.Kafka, strings.TrimSpace(b))
		}
	case brokerRabbitMQ:
		if cfg.AMQPURL, _ = testenv.Lookup(testenv.EnvAMQPURL); cfg.AMQPURL == "" {
			return r, fmt.Errorf("no RabbitMQ: set %s or start the services", testenv.EnvAMQPURL)
		}
		amqpProxy, proxied, err := r.proxyURL("amqp", cfg.AMQPURL, "5672")
		if err != nil {
			return r, err
		}
		cfg.ProxiedAMQP = proxied
		r.proxies = append(r.proxies, amqpProxy)
	}

	if cfg.Profile == profileQuickstart {
		if cfg.RedisAddr, _ = testenv.Lookup(testenv.EnvRedisAddr); cfg.RedisAddr == "" {
			return r, fmt.Errorf("no Redis (the quick-start profile's dedupe): set %s or start the services", testenv.EnvRedisAddr)
		}
		redisProxy, proxied, err := r.proxyURL("redis", "redis://"+cfg.RedisAddr, "6379")
		if err != nil {
			return r, err
		}
		u, err := url.Parse(proxied)
		if err != nil {
			return r, err
		}
		cfg.ProxiedRedis = u.Host
		r.proxies = append(r.proxies, redisProxy)
	}

	if err := createSchema(ctx, cfg); err != nil {
		return r, err
	}
	if r.pool, err = openPool(ctx, cfg.PostgresDSN, cfg.Schema, "reliable-soak", 4); err != nil {
		return r, err
	}
	if lock {
		// Like an integration test, the run holds a shared lock on its
		// broker until it ends: other packages' fault tests wait instead of
		// killing brokers under it (a topic created while a broker is down
		// would get fewer replicas). Its own broker faults raise the lock to
		// exclusive while they last.
		err = r.env.do(func(tb testing.TB) error {
			if cfg.Broker == brokerKafka {
				testenv.Kafka(tb)
			} else {
				testenv.AMQPURL(tb)
			}
			return nil
		})
		if err != nil {
			return r, err
		}
	}
	switch cfg.Broker {
	case brokerKafka:
		err = r.env.do(func(tb testing.TB) error {
			// Replication factor 3 explicitly: testenv would settle for
			// fewer when a broker is down, and the publishers' durability
			// audit rightly refuses such a topic. Small segments: a broker
			// killed with -9 re-reads its unflushed segments on start, and
			// with the default 1 GiB segment that is a long campaign's whole
			// log, which outlasts services.sh's wait for the port.
			segment := strconv.Itoa(16 << 20)
			testenv.CreateTopicWith(tb, cfg.Kafka, cfg.Environment+"."+cfg.Topic,
				&sarama.TopicDetail{NumPartitions: int32(cfg.Partitions), ReplicationFactor: 3,
					ConfigEntries: map[string]*string{"segment.bytes": &segment}})
			return nil
		})
	case brokerRabbitMQ:
		if cfg.Profile == profileTuned {
			err = rabbitmq.Declare(ctx, cfg.AMQPURL, cfg.Topic, []string{cfg.Group}, rabbitmq.WithTopology(rabbitTopology(cfg)))
		} else {
			// As the README's quick start: the default topology.
			err = rabbitmq.Declare(ctx, cfg.AMQPURL, cfg.Topic, []string{cfg.Group})
		}
	}
	if err != nil {
		return r, err
	}
	if err := cfg.write(); err != nil {
		return r, err
	}
	if err := writeControl(cfg.Dir, initialControl(cfg)); err != nil {
		return r, err
	}
	r.procs = newProcs(exe, cfg.Dir, log)
	log.Info("run prepared", slog.String("dir", cfg.Dir), slog.String("schema", cfg.Schema),
		slog.String("topic", cfg.Topic), slog.Uint64("seed", cfg.Seed))
	return r, nil
}

// proxyURL starts a proxy in front of the service of rawURL and returns the
// URL rewritten to go through it.
func (r *runner) proxyURL(name, rawURL, defaultPort string) (*proxy, string, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, "", fmt.Errorf("%s URL: %w", name, err)
	}
	port := u.Port()
	if port == "" {
		port = defaultPort
	}
	p, err := newProxy(name, net.JoinHostPort(u.Hostname(), port), r.log)
	if err != nil {
		return nil, "", err
	}
	u.Host = p.Addr()
	return p, u.String(), nil
}

// close stops every child and proxy and, unless keep is set, drops the
// schema, the topic (or queues) and the run directory.
func (r *runner) close() {
	if r.procs != nil {
		r.procs.stopAll(30 * time.Second)
	}
	for _, p := range r.proxies {
		p.Close()
	}
	if r.pool != nil {
		r.pool.Close()
	}
	if r.keep {
		r.log.Info("kept the run's schema, topic and directory", slog.String("schema", r.cfg.Schema),
			slog.String("dir", r.cfg.Dir))
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if r.cfg.Schema != "" && r.cfg.PostgresDSN != "" {
		if err := dropSchema(ctx, r.cfg); err != nil {
			r.log.Warn("dropping the run's schema", slog.String("error", err.Error()))
		}
	}
	if err := r.env.finish(); err != nil {
		r.log.Warn("deleting the run's topic", slog.String("error", err.Error()))
	}
	if r.cfg.RedisAddr != "" {
		if err := deleteRedisRecords(ctx, r.cfg.RedisAddr, r.cfg.redisNamespace()); err != nil {
			r.log.Warn("deleting the run's dedupe records", slog.String("error", err.Error()))
		}
	}
	if r.cfg.Broker == brokerRabbitMQ && r.cfg.AMQPURL != "" && r.cfg.Topic != "" {
		// RabbitMQ may be restarting (another package's fault test): retry.
		for attempt := 1; ; attempt++ {
			err := deleteRabbitTopology(r.cfg)
			if err == nil {
				break
			}
			if attempt == 5 {
				r.log.Warn("deleting the run's queues", slog.String("error", err.Error()))
				break
			}
			time.Sleep(5 * time.Second)
		}
	}
	if r.tempDir {
		_ = os.RemoveAll(r.cfg.Dir)
	}
}

// deleteRabbitTopology deletes the queues and exchanges Declare made.
func deleteRabbitTopology(cfg *Config) error {
	conn, err := amqp.DialConfig(cfg.AMQPURL, amqp.Config{Dial: amqp.DefaultDial(5 * time.Second)})
	if err != nil {
		return err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return err
	}
	defer ch.Close()
	var errs []error
	queues := []string{rabbitmq.QueueName(cfg.Topic, cfg.Group), rabbitmq.DeadLetterQueueName(cfg.Topic, cfg.Group)}
	for i := range max(cfg.Shards, 1) {
		queues = append(queues, rabbitmq.ShardQueueName(cfg.Topic, cfg.Group, i))
	}
	for _, q := range queues {
		if _, err := ch.QueueDelete(q, false, false, false); err != nil {
			errs = append(errs, err)
			if ch, err = conn.Channel(); err != nil { // a 404 closes the channel
				return errors.Join(errs...)
			}
		}
	}
	for _, x := range []string{cfg.Topic, cfg.Topic + ".dlx", rabbitmq.QueueName(cfg.Topic, cfg.Group) + ".shards"} {
		if err := ch.ExchangeDelete(x, false, false); err != nil {
			if ch, err = conn.Channel(); err != nil {
				return err
			}
		}
	}
	return nil
}

// startAll starts the consumers and relays.
func (r *runner) startServices(consumers, relays int) error {
	for i := 1; i <= consumers; i++ {
		if err := r.procs.start("consumer-"+strconv.Itoa(i), roleConsumer, i); err != nil {
			return err
		}
	}
	for i := 1; i <= relays; i++ {
		if err := r.procs.start("relay-"+strconv.Itoa(i), roleRelay, i); err != nil {
			return err
		}
	}
	return nil
}

// campaign runs the fault campaign and returns its report.
func (r *runner) campaign(ctx context.Context) (*Report, error) {
	cfg := r.cfg
	rep := &Report{Mode: "campaign", Broker: cfg.Broker, Seed: cfg.Seed, RunID: cfg.RunID}
	if err := r.startServices(cfg.Consumers, cfg.Relays); err != nil {
		return rep, err
	}
	if err := r.procs.start("writer", roleWriter, 0); err != nil {
		return rep, err
	}
	writingDone := r.procs.exited("writer")
	inj := newInjector(cfg, r.procs, r.proxies, r.log, r.started, func(ctx context.Context) (progress, error) {
		return readProgress(ctx, r.pool, cfg.Group, false)
	})
	schedDone := make(chan struct{})
	schedCtx, stopSched := context.WithCancel(ctx)
	defer stopSched()
	go func() {
		defer close(schedDone)
		// Let the pipeline warm up (group joins, first publishes) first.
		select {
		case <-schedCtx.Done():
			return
		case <-time.After(5 * time.Second):
		}
		inj.schedule(schedCtx, writingDone)
	}()

	err := r.supervise(ctx, rep, writingDone, schedDone)
	stopSched()
	<-schedDone
	rep.Faults = inj.eventList()
	for _, f := range rep.Faults {
		if f.Error != "" {
			rep.Errors = append(rep.Errors, fmt.Sprintf("fault %s at %s could not be injected: %s",
				f.Kind, f.Start.Format("15:04:05"), f.Error))
		}
	}
	return r.finish(ctx, rep, err)
}

// supervise waits until every order settled (or the run stalls or ctx
// ends), restarting processes that crash on their own.
func (r *runner) supervise(ctx context.Context, rep *Report, writingDone, schedDone <-chan struct{}) error {
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	var last progress
	lastChange, lastLog := time.Now(), time.Time{}
	settledSince := time.Time{}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
		r.restartCrashed(rep)
		// Count effects (cheap) while the run goes on; distinct messages
		// (exact, a scan of the results) only to confirm the end.
		pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		p, err := readProgress(pctx, r.pool, r.cfg.Group, false)
		if err == nil && p.settled() && closed(writingDone) && closed(schedDone) {
			p, err = readProgress(pctx, r.pool, r.cfg.Group, true)
		}
		cancel()
		if err != nil {
			r.log.Warn("reading progress", slog.String("error", err.Error()))
			continue
		}
		if p != last {
			last, lastChange = p, time.Now()
		}
		if time.Since(lastLog) >= 10*time.Second {
			lastLog = time.Now()
			r.log.Info("progress", slog.String("t", "+"+time.Since(r.started).Round(time.Second).String()),
				slog.Int64("orders", p.orders), slog.Int64("applied", p.appliedUnique), slog.Int64("dead", p.dead),
				slog.Int64("outbox_pending", p.outboxPending), slog.Int64("retry_pending", p.retryPending))
		}
		writing, faulting := !closed(writingDone), !closed(schedDone)
		if writing || faulting {
			lastChange = time.Now() // a stall only counts once the run is winding down
			continue
		}
		if p.settled() {
			if settledSince.IsZero() {
				settledSince = time.Now()
			}
			// Settled twice in a row, some seconds apart: late redeliveries
			// (a duplicate would show up now) had their chance.
			if time.Since(settledSince) >= 5*time.Second {
				return nil
			}
			continue
		}
		settledSince = time.Time{}
		if time.Since(lastChange) > r.cfg.StallTimeout {
			err := fmt.Errorf("stalled: nothing changed for %s (orders %d, applied %d, dead %d, outbox pending %d, retry pending %d)",
				r.cfg.StallTimeout, p.orders, p.appliedUnique, p.dead, p.outboxPending, p.retryPending)
			rep.Errors = append(rep.Errors, err.Error())
			return nil
		}
	}
}

// restartCrashed restarts consumers and relays that exited on their own, as
// a supervisor (systemd, Kubernetes) would, and records each crash as an
// error of the run: the SDK should not crash its host process.
func (r *runner) restartCrashed(rep *Report) {
	for _, c := range r.procs.list() {
		if c.role == roleWriter || r.procs.running(c.name) {
			continue
		}
		r.procs.mu.Lock()
		crashed := !c.expected
		r.procs.mu.Unlock()
		if !crashed {
			continue // killed by a fault; the injector restarts it
		}
		rep.Errors = append(rep.Errors, fmt.Sprintf("%s exited on its own (%s); see %s.log", c.name, c.lastExit, c.name))
		if err := r.procs.start(c.name, c.role, c.index); err != nil {
			rep.Errors = append(rep.Errors, fmt.Sprintf("restarting %s: %v", c.name, err))
		}
	}
}

// finish stops the children, reads the verdict and completes rep.
func (r *runner) finish(ctx context.Context, rep *Report, runErr error) (*Report, error) {
	if runErr != nil {
		rep.Errors = append(rep.Errors, runErr.Error())
	}
	r.procs.stopAll(60 * time.Second)
	vctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Minute)
	defer cancel()
	v, err := verify(vctx, r.pool, r.cfg.Group, rules{profile: r.cfg.Profile, kills: r.procs.kills()})
	if err != nil {
		return rep, err
	}
	rep.Verdict = v
	rep.Processes = r.procs.stats()
	for _, p := range rep.Processes {
		if p.Crashes > 0 && !containsPrefix(rep.Errors, p.Name+" exited") {
			rep.Errors = append(rep.Errors, fmt.Sprintf("%s crashed %d times", p.Name, p.Crashes))
		}
	}
	rep.Duration = time.Since(r.started)
	var span *time.Duration
	if err := r.pool.QueryRow(vctx, `SELECT (SELECT max(applied_at) FROM soak_results) - (SELECT min(created_at) FROM soak_orders)`).
		Scan(&span); err == nil && span != nil && *span > 0 {
		rep.Throughput = float64(v.AppliedUnique+v.DeadExpected) / span.Seconds()
	}
	return rep, nil
}

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func containsPrefix(list []string, prefix string) bool {
	for _, s := range list {
		if strings.HasPrefix(s, prefix) {
			return true
		}
	}
	return false
}
