package main

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/adapters/kafka"
	"github.com/reliable-go/reliable/adapters/rabbitmq"
	"github.com/reliable-go/reliable/outbox"
	"github.com/reliable-go/reliable/producer"
)

// runRelay relays the outbox to the broker until ctx ends. Its PostgreSQL
// (and RabbitMQ) connections go through the parent's proxy, so a connection
// cut hits it. The relay ID is the process name: a relay restarted after a
// kill -9 takes its own leases back at once.
func runRelay(ctx context.Context, cfg *Config, name string, log *slog.Logger) error {
	pool, err := openPool(ctx, cfg.ProxiedDSN, cfg.Schema, name, 8)
	if err != nil {
		return err
	}
	defer pool.Close()
	dialer := newCutDialer()
	go watchCuts(ctx, startControlWatcher(ctx, cfg.Dir, Control{}), dialer, log)
	pub, err := newPublisher(cfg, name, dialer, log)
	if err != nil {
		return err
	}
	defer func() {
		if err := pub.Close(); err != nil {
			log.Warn("closing the publisher", slog.String("error", err.Error()))
		}
	}()
	mode, err := outbox.ParseMode(cfg.RelayMode)
	if err != nil {
		return err
	}
	relay, err := outbox.NewRelay(pool, pub, outbox.Config{Instance: name, Logger: log, Mode: mode, Slot: cfg.slot()})
	if err != nil {
		return err
	}
	if err := relay.Run(ctx); err != nil {
		return err
	}
	s := relay.Stats()
	log.Info("relay stopped", slog.String("stats", fmt.Sprintf("%+v", s)))
	return nil
}

// newPublisher returns the SDK's durable producer for the campaign's broker.
// Kafka connections go through dialer, so a connection cut can reset them.
func newPublisher(cfg *Config, name string, dialer *cutDialer, log *slog.Logger) (reliable.Publisher, error) {
	switch cfg.Broker {
	case brokerKafka:
		return kafka.NewProducer(kafka.Config{
			Brokers:     cfg.Kafka,
			ClientID:    name,
			Environment: cfg.Environment,
			Logger:      log,
			Producer:    kafka.ProducerConfig{Source: "soak-orders"},
			Tune:        dialer.tune,
		})
	default:
		return rabbitmq.NewProducer(cfg.ProxiedAMQP,
			rabbitmq.WithLogger(log),
			rabbitmq.WithConnectionName(name),
			rabbitmq.WithTopology(rabbitTopology(cfg)),
			rabbitmq.WithProducerConfig(producer.Config{Environment: cfg.Environment, Source: "soak-orders"}))
	}
}

// rabbitTopology shards the group's queue so that several consumer
// processes each own some keys, in order (single active consumer per shard).
func rabbitTopology(cfg *Config) rabbitmq.Topology {
	return rabbitmq.Topology{Shards: cfg.Shards}
}
