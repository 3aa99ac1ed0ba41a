package main

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/IBM/sarama"

	"github.com/reliable-go/reliable/internal/testenv"
)

// names fills the run's derived names from cfg.RunID.
func (c *Config) names() {
	c.Schema = "soak_" + c.RunID
	c.Topic = "soak-orders-" + c.RunID
	c.Group = "kitchen"
	c.Environment = "soak"
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
	if cfg.AMQPURL, _ = testenv.Lookup(testenv.EnvAMQPURL); cfg.AMQPURL != "" {
		cfg.Shards = 64 // delete every shard queue a run may have had
		_ = deleteRabbitTopology(cfg)
	}
	return errors.Join(errs...)
}
