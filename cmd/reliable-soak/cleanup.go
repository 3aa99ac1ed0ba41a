package main

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/IBM/sarama"
	"github.com/redis/go-redis/v9"

	"github.com/reliable-go/reliable/internal/testenv"
)

// names fills the run's derived names from cfg.RunID.
func (c *Config) names() {
	c.Schema = "soak_" + c.RunID
	c.Topic = "soak-orders-" + c.RunID
	c.Group = "kitchen"
	c.Environment = "soak"
}

// redisNamespace is the quick-start profile's dedupe namespace. The README
// uses the group; the run's ID is added so that its records can be deleted
// at teardown without touching another run's.
func (c *Config) redisNamespace() string { return c.Group + "-" + c.RunID }

// redisKeyPrefix is idempotency.RedisConfig's default KeyPrefix.
const redisKeyPrefix = "reliable:idem:"

// deleteRedisRecords deletes the dedupe records of the run's namespace.
func deleteRedisRecords(ctx context.Context, addr, namespace string) error {
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	defer rdb.Close()
	iter := rdb.Scan(ctx, 0, redisKeyPrefix+namespace+":*", 1000).Iterator()
	var batch []string
	for iter.Next(ctx) {
		if batch = append(batch, iter.Val()); len(batch) == 1000 {
			if err := rdb.Unlink(ctx, batch...).Err(); err != nil {
				return err
			}
			batch = batch[:0]
		}
	}
	if err := iter.Err(); err != nil {
		return err
	}
	if len(batch) > 0 {
		return rdb.Unlink(ctx, batch...).Err()
	}
	return nil
}

// cleanRun deletes what a kept run left behind (its schema, Kafka topic,
// RabbitMQ queues and exchanges): reliable-soak -clean <run id>.
func cleanRun(ctx context.Context, runID string) error {
	cfg := &Config{RunID: strings.TrimPrefix(runID, "soak_")}
	cfg.names()
	var errs []error
	if cfg.PostgresDSN, _ = testenv.Lookup(testenv.EnvPostgresDSN); cfg.PostgresDSN != "" {
		if err := dropSchema(ctx, cfg); err != nil {
			errs = append(errs, fmt.Errorf("drop schema %s: %w", cfg.Schema, err))
		}
	}
	if v, _ := testenv.Lookup(testenv.EnvKafkaBrokers); v != "" {
		admin, err := sarama.NewClusterAdmin(strings.Split(v, ","), testenv.SaramaConfig())
		if err == nil {
			err = admin.DeleteTopic(cfg.Environment + "." + cfg.Topic)
			_ = admin.Close()
		}
		if err != nil && !errors.Is(err, sarama.ErrUnknownTopicOrPartition) {
			errs = append(errs, fmt.Errorf("delete topic: %w", err))
		}
	}
	if addr, _ := testenv.Lookup(testenv.EnvRedisAddr); addr != "" {
		if err := deleteRedisRecords(ctx, addr, cfg.redisNamespace()); err != nil {
			errs = append(errs, fmt.Errorf("delete redis records: %w", err))
		}
	}
	if cfg.AMQPURL, _ = testenv.Lookup(testenv.EnvAMQPURL); cfg.AMQPURL != "" {
		cfg.Shards = 64 // delete every shard queue a run may have had
		_ = deleteRabbitTopology(cfg)
	}
	return errors.Join(errs...)
}
