package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

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
)

// consumerConcurrency is each consumer process's key lanes.
const consumerConcurrency = 16

// runConsumer consumes the topic through the SDK's full pipeline until ctx
// ends: PostgreSQL dedupe, the ordered retry table with its retrier, key
// lanes. Its PostgreSQL (and RabbitMQ) connections go through the parent's
// proxy.
func runConsumer(ctx context.Context, cfg *Config, name string, index int, log *slog.Logger) error {
	pool, err := openPool(ctx, cfg.ProxiedDSN, cfg.Schema, name, consumerConcurrency+12)
	if err != nil {
		return err
	}
	defer pool.Close()
	store, err := newDedupe(pool, cfg)
	if err != nil {
		return err
	}
	table, err := newRetryTable(pool, cfg, log)
	if err != nil {
		return err
	}
	ctl := startControlWatcher(ctx, cfg.Dir, Control{FailRate: cfg.FailRate})
	dialer := newCutDialer()
	go watchCuts(ctx, ctl, dialer, log)

	a := &applier{pool: pool, store: store, name: name, ctl: ctl, seed: cfg.Seed, log: log}
	var outcomes [consumer.OutcomeUnsettled + 1]atomic.Int64
	ccfg := consumer.Config{
		Topic:       cfg.Topic,
		Environment: cfg.Environment,
		Dedupe:      store,
		RetryTable:  table,
		Retrier:     retry.RetrierConfig{PollInterval: 250 * time.Millisecond, LeaseTTL: 5 * time.Second},
		Concurrency: consumerConcurrency,
		Logger:      log,
		Observe: func(e consumer.Event) {
			if e.Outcome > 0 && int(e.Outcome) < len(outcomes) {
				outcomes[e.Outcome].Add(1)
			}
		},
	}
	var c *consumer.Consumer
	switch cfg.Broker {
	case brokerKafka:
		c, err = consumer.NewKafka(kafka.Config{
			Brokers:     cfg.Kafka,
			ClientID:    name,
			Environment: cfg.Environment,
			Logger:      log,
			Consumer:    kafka.ConsumerConfig{Group: cfg.Group},
			Tune:        dialer.tune,
		}, a, ccfg)
	default:
		c, err = consumer.NewRabbitMQ(cfg.ProxiedAMQP, cfg.Group, a, ccfg,
			rabbitmq.WithLogger(log),
			rabbitmq.WithConnectionName(name),
			rabbitmq.WithTopology(rabbitTopology(cfg)),
			rabbitmq.WithShardIndexes(primaryShards(index, cfg.Consumers, cfg.Shards)...))
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

// applier is the kitchen: it applies an order event to soak_results and
// records the message as done in the same transaction (DoneTx), so the
// effect and the dedupe record commit together: a crash between them cannot
// apply the message twice (L20).
type applier struct {
	pool  *pgxpool.Pool
	store *idempotency.PostgresStore
	name  string
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
		if _, err := tx.Exec(ctx, `INSERT INTO soak_results (msg_id, key, seq, process, attempt) VALUES ($1, $2, $3, $4, $5)`,
			m.ID, m.Key, seq, a.name, attempt); err != nil {
			return err
		}
		return a.store.DoneTx(ctx, tx, m.ID)
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
