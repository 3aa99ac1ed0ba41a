package main

import (
	"context"
	"testing"
	"time"

	"github.com/reliable-go/reliable/examples/internal/env"
)

// The same demo on the real services (the CI runs it): a real Kafka cluster
// through the sarama adapter, the orders and their outbox, the kitchen and
// the retry table in PostgreSQL, the dedupe records in Redis. Skipped when
// the services are not configured, unless RELIABLE_REQUIRE_SERVICES=1.
func TestDemoOnRealKafkaPostgresRedis(t *testing.T) {
	v := env.Require(t, env.KafkaBrokers, env.PostgresDSN, env.RedisAddr)
	cfg := testConfig(100)
	cfg.Broker, cfg.Store, cfg.Dedupe = "kafka", "postgres", "redis"
	cfg.KafkaBrokers, cfg.PostgresDSN, cfg.RedisAddr = v[0], v[1], v[2]
	t.Cleanup(func() { dropSchema(t, cfg) })
	runDemo(t, cfg)
}

// On RabbitMQ, with the dedupe record written in the kitchen's own
// PostgreSQL transaction.
func TestDemoOnRealRabbitMQPostgres(t *testing.T) {
	v := env.Require(t, env.AMQPURL, env.PostgresDSN)
	cfg := testConfig(100)
	cfg.Broker, cfg.Store, cfg.Dedupe = "rabbitmq", "postgres", "postgres"
	cfg.AMQPURL, cfg.PostgresDSN = v[0], v[1]
	t.Cleanup(func() { dropSchema(t, cfg) })
	runDemo(t, cfg)
}

func dropSchema(t *testing.T, cfg config) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pool, err := env.OpenPostgres(ctx, cfg.PostgresDSN, "", 1)
	if err != nil {
		t.Log(err)
		return
	}
	defer pool.Close()
	if err := env.DropSchema(ctx, pool, cfg.Schema); err != nil {
		t.Log(err)
	}
}
