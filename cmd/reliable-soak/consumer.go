package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"math/rand/v2"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/adapters/kafka"
	"github.com/reliable-go/reliable/adapters/rabbitmq"
	"github.com/reliable-go/reliable/consumer"
	"github.com/reliable-go/reliable/idempotency"
	"github.com/reliable-go/reliable/retry"
)

// Handler failures.
var (
	errInjected = errors.New("soak: injected transient failure")
	errPoison   = errors.New("soak: poison message")
	errOutage   = errors.New("soak: downstream outage")
)

// consumerConcurrency is each consumer process's key lanes in the tuned
// profile; quickStartConcurrency is the README's quick start's.
const (
	consumerConcurrency   = 16
	quickStartConcurrency = 32
)

// runConsumer consumes the topic until ctx ends, configured by cfg.Profile
// (see newConsumer). Its PostgreSQL, Redis and RabbitMQ connections go
// through the parent's proxy; its Kafka connections through a cutDialer.
func runConsumer(ctx context.Context, cfg *Config, name string, index int, log *slog.Logger) error {
	lanes := consumerConcurrency
	if cfg.Profile == profileQuickstart {
		lanes = quickStartConcurrency
	}
	pool, err := openPool(ctx, cfg.ProxiedDSN, cfg.Schema, name, int32(lanes)+12)
	if err != nil {
		return err
	}
	defer pool.Close()
	ctl := startControlWatcher(ctx, cfg.Dir, Control{FailRate: cfg.FailRate})
	dialer := newCutDialer()
	go watchCuts(ctx, ctl, dialer, log)

	a := &applier{pool: pool, name: name, pid: os.Getpid(), ctl: ctl, seed: cfg.Seed, log: log}
	var outcomes [consumer.OutcomeUnsettled + 1]atomic.Int64
	// Observe only counts outcomes for the log line below; it changes
	// nothing in the pipeline.
	observe := func(e consumer.Event) {
		if e.Outcome > 0 && int(e.Outcome) < len(outcomes) {
			outcomes[e.Outcome].Add(1)
		}
	}
	var c *consumer.Consumer
	switch cfg.Profile {
	case profileQuickstart:
		rdb := redis.NewClient(&redis.Options{Addr: cfg.ProxiedRedis})
		defer rdb.Close()
		c, err = newQuickStartConsumer(ctx, cfg, pool, rdb, dialer, a, observe)
	case profileZero:
		c, err = newZeroConsumer(cfg, dialer, a, observe)
	default:
		c, err = newTunedConsumer(cfg, name, index, pool, dialer, a, observe, log)
	}
	if err != nil {
		return err
	}
	err = c.Run(ctx)
	log.Info("consumer stopped",
		slog.Int64("handled", outcomes[consumer.OutcomeHandled].Load()),
		slog.Int64("duplicate", outcomes[consumer.OutcomeDuplicate].Load()),
		slog.Int64("parked", outcomes[consumer.OutcomeParked].Load()),
		slog.Int64("dead_lettered", outcomes[consumer.OutcomeDeadLettered].Load()),
		slog.Int64("unsettled", outcomes[consumer.OutcomeUnsettled].Load()))
	return err
}

// newTunedConsumer is the campaign's own configuration: PostgreSQL dedupe
// recorded in the handler's transaction (DoneTx), the retry table with short
// backoffs and a fast retrier, sharded RabbitMQ queues with this process's
// primary shards.
func newTunedConsumer(cfg *Config, name string, index int, pool *pgxpool.Pool, dialer *cutDialer, a *applier,
	observe func(consumer.Event), log *slog.Logger) (*consumer.Consumer, error) {
	store, err := newDedupe(pool, cfg)
	if err != nil {
		return nil, err
	}
	table, err := newRetryTable(pool, cfg, log)
	if err != nil {
		return nil, err
	}
	a.store = store
	ccfg := consumer.Config{
		Topic:       cfg.Topic,
		Environment: cfg.Environment,
		Dedupe:      store,
		RetryTable:  table,
		Retrier:     retry.RetrierConfig{PollInterval: 250 * time.Millisecond, LeaseTTL: 5 * time.Second},
		Concurrency: consumerConcurrency,
		Logger:      log,
		Observe:     observe,
	}
	if cfg.Broker == brokerKafka {
		return kafka.NewConsumer(kafka.Config{
			Brokers:     cfg.Kafka,
			ClientID:    name,
			Environment: cfg.Environment,
			Logger:      log,
			Consumer:    kafka.ConsumerConfig{Group: cfg.Group},
			Tune:        dialer.tune,
		}, a, ccfg)
	}
	return rabbitmq.NewConsumer(cfg.ProxiedAMQP, cfg.Group, a, ccfg,
		rabbitmq.WithLogger(log),
		rabbitmq.WithConnectionName(name),
		rabbitmq.WithTopology(rabbitTopology(cfg)),
		rabbitmq.WithShardIndexes(primaryShards(index, cfg.Consumers, cfg.Shards)...))
}

// newQuickStartConsumer configures the consumer exactly as the README's
// "Quick start" writes it: Redis dedupe with a Namespace, retry.NewTable
// with a Group (migrated once, by the parent, at start-up), Topic, Dedupe,
// RetryTable and Concurrency 32; the Kafka adapter with Brokers, Environment
// and Group; RabbitMQ with the URL and group only (Declare made the default
// topology). The only additions are instrumentation that changes no
// behaviour: Observe (outcome counts) and, on Kafka, the cut dialer through
// which the connection-cut fault resets its connections.
func newQuickStartConsumer(ctx context.Context, cfg *Config, pool *pgxpool.Pool, rdb redis.UniversalClient,
	dialer *cutDialer, a *applier, observe func(consumer.Event)) (*consumer.Consumer, error) {
	dedupe, err := idempotency.NewRedis(rdb, idempotency.RedisConfig{Namespace: cfg.redisNamespace()})
	if err != nil {
		return nil, err
	}
	table, err := retry.NewTable(pool, retry.TableConfig{Group: cfg.Group})
	if err != nil {
		return nil, err
	}
	ccfg := consumer.Config{Topic: cfg.Topic, Dedupe: dedupe, RetryTable: table, Concurrency: quickStartConcurrency,
		Observe: observe}
	if cfg.Broker == brokerKafka {
		return kafka.NewConsumer(kafka.Config{Brokers: cfg.Kafka, Environment: cfg.Environment,
			Consumer: kafka.ConsumerConfig{Group: cfg.Group}, Tune: dialer.tune}, a, ccfg)
	}
	return rabbitmq.NewConsumer(cfg.ProxiedAMQP, cfg.Group, a, ccfg)
}

// newZeroConsumer leaves every optional consumer field at its zero value:
// consumer.Config{Topic} (no retry table, no dedupe store, no dead-letter
// path), the Kafka adapter with Brokers, Environment (it names the topic)
// and Group, RabbitMQ with the URL and group. Observe and the cut dialer
// are instrumentation, as in newQuickStartConsumer.
func newZeroConsumer(cfg *Config, dialer *cutDialer, a *applier, observe func(consumer.Event)) (*consumer.Consumer, error) {
	ccfg := consumer.Config{Topic: cfg.Topic, Observe: observe}
	if cfg.Broker == brokerKafka {
		return kafka.NewConsumer(kafka.Config{Brokers: cfg.Kafka, Environment: cfg.Environment,
			Consumer: kafka.ConsumerConfig{Group: cfg.Group}, Tune: dialer.tune}, a, ccfg)
	}
	return rabbitmq.NewConsumer(cfg.ProxiedAMQP, cfg.Group, a, ccfg)
}

// primaryShards spreads the shards over the consumer processes: process i
// (from 1) takes shards i-1, i-1+n, ...; the others it holds as standby.
func primaryShards(index, consumers, shards int) []int {
	if shards <= 1 {
		return nil
	}
	var out []int
	for s := index - 1; s < shards; s += consumers {
		out = append(out, s)
	}
	return out
}

// applier is the kitchen. Every application is recorded in soak_results,
// the campaign's ledger, with the applying process's name and pid. The
// effect itself depends on the profile:
//
//   - with store set (tuned profile) the message is recorded done in the
//     same transaction (DoneTx), so the effect and the dedupe record commit
//     together: a crash between them cannot apply the message twice (L20);
//   - without (quick-start and zero profiles) it is what the README tells a
//     user to write: an upsert of the order's state guarded by its sequence,
//     so a replayed older event never overwrites a newer one (L19, L20).
//     The ledger still sees every application, repeats included.
type applier struct {
	pool  *pgxpool.Pool
	store *idempotency.PostgresStore // nil: upsert the order's state
	name  string
	pid   int
	ctl   *controlWatcher
	seed  uint64
	log   *slog.Logger
}

func (a *applier) Handle(ctx context.Context, m *reliable.Message) error {
	c := a.ctl.Load()
	if c.Latency > 0 {
		// A slow downstream service: ±50% around the configured latency.
		d := time.Duration(float64(c.Latency) * (0.5 + rand.Float64()))
		if err := reliable.Sleep(ctx, d); err != nil {
			return reliable.Retryable(err)
		}
	}
	if m.Type == typePoison {
		return reliable.Permanent(errPoison)
	}
	if c.Outage {
		return reliable.Retryable(errOutage)
	}
	attempt := max(m.Delivery.Attempt, 1)
	// Only early attempts fail, so no message can use up its retry-table
	// attempts on injected failures alone.
	if attempt <= 2 && c.FailRate > 0 && roll(a.seed, m.ID, attempt) < c.FailRate {
		if _, err := a.pool.Exec(ctx, `INSERT INTO soak_injected (kind, msg_id, process) VALUES ($1, $2, $3)`,
			faultHandlerFailure, m.ID, a.name); err != nil {
			a.log.Warn("recording an injected failure", slog.String("error", err.Error()))
		}
		return reliable.Retryable(errInjected)
	}
	seq, err := strconv.Atoi(m.Headers["seq"])
	if err != nil {
		return reliable.Permanent(fmt.Errorf("soak: bad seq header %q", m.Headers["seq"]))
	}
	err = pgx.BeginFunc(ctx, a.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO soak_results (msg_id, key, seq, process, pid, attempt) VALUES ($1, $2, $3, $4, $5, $6)`,
			m.ID, m.Key, seq, a.name, a.pid, attempt); err != nil {
			return err
		}
		if a.store != nil {
			return a.store.DoneTx(ctx, tx, m.ID)
		}
		_, err := tx.Exec(ctx, `INSERT INTO soak_state (key, seq, status, msg_id) VALUES ($1, $2, $3, $4)
			ON CONFLICT (key) DO UPDATE SET seq = excluded.seq, status = excluded.status, msg_id = excluded.msg_id
			WHERE soak_state.seq < excluded.seq`, m.Key, seq, m.Type, m.ID)
		return err
	})
	if err != nil {
		return reliable.Retryable(fmt.Errorf("soak: apply %s: %w", m.ID, err))
	}
	return nil
}

// roll returns a number in [0, 1) fixed by the seed, the message and the
// attempt, so a campaign's injected failures repeat with its seed.
func roll(seed uint64, id string, attempt int) float64 {
	h := fnv.New64a()
	var b [16]byte
	binary.LittleEndian.PutUint64(b[:8], seed)
	binary.LittleEndian.PutUint64(b[8:], uint64(attempt))
	h.Write(b[:])
	h.Write([]byte(id))
	// FNV's high bits mix poorly for IDs that differ in their last bytes:
	// finish with splitmix64's mixer.
	x := h.Sum64()
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return float64(x>>11) / (1 << 53)
}
