package main

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/consumer"
	"github.com/reliable-go/reliable/examples/internal/env"
	"github.com/reliable-go/reliable/examples/kitchen"
	"github.com/reliable-go/reliable/examples/orders"
	"github.com/reliable-go/reliable/idempotency"
	"github.com/reliable-go/reliable/observability"
	"github.com/reliable-go/reliable/outbox"
	"github.com/reliable-go/reliable/reliabletest"
	"github.com/reliable-go/reliable/retry"
)

// retryBackoff spaces the retries of parked events. It is far shorter than
// the retry package's default (seconds to minutes) so the demo converges in
// seconds; a real service keeps the default.
var retryBackoff = reliable.Backoff{Initial: 100 * time.Millisecond, Max: time.Second, Multiplier: 2}

// stores are the services' state: orders with their outbox, the kitchen's
// display and ledger, the dedupe records and the retry table.
type stores struct {
	label       string
	dedupeLabel string

	orders      orders.Store
	kitchen     kitchen.Store
	dedupe      idempotency.Store
	retry       consumer.RetryTable
	kitchenPool *pgxpool.Pool // nil unless PostgreSQL

	// runRelay publishes the order events until ctx ends.
	runRelay func(ctx context.Context, pub reliable.Publisher) error
	// runRetrier replays parked events through h until ctx ends.
	runRetrier func(ctx context.Context, h reliable.Handler) error
	// backlog counts events not yet published plus entries in the retry
	// table.
	backlog func(ctx context.Context) (unpublished, parked, dead int64, err error)
	// watch registers the stores' gauges (retry-table depth, outbox age)
	// with tel; nil for the in-memory stores, which have no such gauges.
	watch func(tel *observability.Telemetry) error

	closers []func()
}

func (s *stores) close() {
	for i := len(s.closers) - 1; i >= 0; i-- {
		s.closers[i]()
	}
}

func newStores(ctx context.Context, cfg config, runID string, log *slog.Logger) (_ *stores, err error) {
	s := &stores{}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	var pool *pgxpool.Pool
	if cfg.Store == "postgres" || cfg.Dedupe == "postgres" {
		if pool, err = env.OpenPostgres(ctx, cfg.PostgresDSN, "", 4); err != nil {
			return nil, err
		}
		// Start from an empty schema, so the summary counts this run only.
		err = env.DropSchema(ctx, pool, cfg.Schema)
		pool.Close()
		if err != nil {
			return nil, fmt.Errorf("postgres: reset schema %s: %w", cfg.Schema, err)
		}
		if pool, err = env.OpenPostgres(ctx, cfg.PostgresDSN, cfg.Schema, 24); err != nil {
			return nil, err
		}
		s.closers = append(s.closers, pool.Close)
		s.kitchenPool = pool
	}

	switch cfg.Dedupe {
	case "memory":
		s.dedupe = idempotency.NewMemory()
		s.dedupeLabel = "in memory (NOT DURABLE)"
	case "redis":
		client := redis.NewClient(&redis.Options{Addr: cfg.RedisAddr})
		s.closers = append(s.closers, func() { _ = client.Close() })
		if err := client.Ping(ctx).Err(); err != nil {
			return nil, fmt.Errorf("redis %s: %w", cfg.RedisAddr, err)
		}
		if s.dedupe, err = idempotency.NewRedis(client, idempotency.RedisConfig{Namespace: group + "-" + runID}); err != nil {
			return nil, err
		}
		s.dedupeLabel = "Redis at " + cfg.RedisAddr
	case "postgres":
		pg, err := idempotency.NewPostgres(pool, idempotency.PostgresConfig{Namespace: group})
		if err != nil {
			return nil, err
		}
		if err := pg.Migrate(ctx); err != nil {
			return nil, err
		}
		s.dedupe = pg
		s.dedupeLabel = "PostgreSQL, recorded in the kitchen's own transaction (exactly-once effect)"
	}

	switch cfg.Store {
	case "memory":
		ostore := orders.NewMemoryStore()
		table := reliabletest.NewRetryTable()
		table.Backoff = retryBackoff
		s.label = "in memory (NOT DURABLE): orders with an in-memory outbox, kitchen display, retry table"
		s.orders, s.kitchen, s.retry = ostore, kitchen.NewMemoryStore(), table
		s.runRelay = func(ctx context.Context, pub reliable.Publisher) error {
			ostore.RunRelay(ctx, pub, log)
			return nil
		}
		s.runRetrier = func(ctx context.Context, h reliable.Handler) error {
			table.RunRetrier(ctx, h, 50*time.Millisecond)
			return nil
		}
		s.backlog = func(context.Context) (int64, int64, int64, error) {
			dead := int64(len(table.Dead()))
			return int64(ostore.Pending()), int64(table.Len()) - dead, dead, nil
		}
	case "postgres":
		ostore := orders.NewPostgresStore(pool)
		if err := ostore.Migrate(ctx); err != nil {
			return nil, err
		}
		pgDedupe, _ := s.dedupe.(*idempotency.PostgresStore)
		ks := kitchen.NewPostgresStore(pool, pgDedupe)
		if err := ks.Migrate(ctx); err != nil {
			return nil, err
		}
		table, err := retry.NewTable(pool, retry.TableConfig{Group: group, Backoff: retryBackoff, Logger: log})
		if err != nil {
			return nil, err
		}
		if err := table.Migrate(ctx); err != nil {
			return nil, err
		}
		s.label = fmt.Sprintf("PostgreSQL schema %s: orders + outbox in one transaction, kitchen display, retry table", cfg.Schema)
		s.orders, s.kitchen, s.retry = ostore, ks, table
		s.runRelay = func(ctx context.Context, pub reliable.Publisher) error {
			relay, err := outbox.NewRelay(pool, pub, outbox.Config{PollInterval: 200 * time.Millisecond, Logger: log})
			if err != nil {
				return err
			}
			return relay.Run(ctx)
		}
		s.runRetrier = func(ctx context.Context, h reliable.Handler) error {
			r, err := retry.NewRetrier(table, h, retry.RetrierConfig{PollInterval: 50 * time.Millisecond, Logger: log})
			if err != nil {
				return err
			}
			return r.Run(ctx)
		}
		s.watch = func(tel *observability.Telemetry) error {
			if _, err := tel.WatchRetryTable(table); err != nil {
				return err
			}
			_, err := tel.WatchOutbox(pool, "orders")
			return err
		}
		s.backlog = func(ctx context.Context) (int64, int64, int64, error) {
			ob, err := outbox.ReadStatus(ctx, pool)
			if err != nil {
				return 0, 0, 0, err
			}
			st, err := table.Status(ctx)
			if err != nil {
				return 0, 0, 0, err
			}
			return ob.Pending + ob.Dead, st.Pending, st.Dead, nil
		}
	}
	return s, nil
}

// counter counts the consumer's outcomes, for the fault report.
type counter struct {
	mu sync.Mutex
	n  map[consumer.Outcome]int
}

func (c *counter) observe(e consumer.Event) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = make(map[consumer.Outcome]int)
	}
	c.n[e.Outcome]++
}

func (c *counter) get(o consumer.Outcome) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[o]
}
