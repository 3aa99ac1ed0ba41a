package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/reliable-go/reliable/examples/internal/env"
	"github.com/reliable-go/reliable/internal/testenv"
)

// The same demo on the real services (the CI runs it): a real Kafka cluster
// through the sarama adapter, the orders and their outbox, the kitchen and
// the retry table in PostgreSQL, the dedupe records in Redis. Skipped when
// the services are not configured, unless RELIABLE_REQUIRE_SERVICES=1.
func TestDemoOnRealKafkaPostgresRedis(t *testing.T) {
	cfg := testConfig(100)
	cfg.Broker, cfg.Store, cfg.Dedupe = "kafka", "postgres", "redis"
	cfg.KafkaBrokers = strings.Join(testenv.Kafka(t), ",")
	cfg.PostgresDSN = testenv.PostgresDSN(t)
	cfg.RedisAddr = testenv.RedisAddr(t)
	cfg.Schema = testenv.UniqueName(t, "demo")
	t.Cleanup(func() { dropSchema(t, cfg) })
	runDemo(t, cfg)
}

// On RabbitMQ, with the dedupe record written in the kitchen's own
// PostgreSQL transaction.
func TestDemoOnRealRabbitMQPostgres(t *testing.T) {
	cfg := testConfig(100)
	cfg.Broker, cfg.Store, cfg.Dedupe = "rabbitmq", "postgres", "postgres"
	cfg.AMQPURL = testenv.AMQPURL(t)
	cfg.PostgresDSN = testenv.PostgresDSN(t)
	cfg.Schema = testenv.UniqueName(t, "demo")
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
