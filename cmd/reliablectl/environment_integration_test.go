package main

import (
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/adapters/kafka"
	"github.com/reliable-go/reliable/adapters/rabbitmq"
	"github.com/reliable-go/reliable/internal/testenv"
)

// --environment means the same on both brokers (issue 16): names given are
// the application's, and reliablectl finds the objects the adapters made
// with that Environment (kafka.Config.Environment, rabbitmq.WithEnvironment);
// $RELIABLE_ENVIRONMENT sets it too; without it the same names are not
// found, and the error says why.
func TestEnvironmentFlag(t *testing.T) {
	envName := testenv.UniqueName(t, "env")

	t.Run("Kafka", func(t *testing.T) {
		brokers, env := kafkaEnv(t)
		cfg := kafka.Config{Brokers: brokers, Environment: envName}
		testenv.CreateTopic(t, brokers, cfg.BrokerName("orders.dlt"), 1)
		testenv.CreateTopic(t, brokers, "other_"+envName+".orders.dlt", 1)
		p, err := kafka.NewProducer(cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		ctx := testenv.Context(t, 30*time.Second)
		m := &reliable.Message{Topic: "orders.dlt", Key: "o-1", Payload: []byte("{}"),
			Headers: map[string]string{kafka.HeaderDeadLetterTopic: cfg.BrokerName("orders")}}
		if err := p.Publish(ctx, m); err != nil {
			t.Fatal(err)
		}
		r := cli(t, env, "dlt", "list", "--environment", envName, "--topic", "orders.dlt", "-o", "json")
		r.expect(t, exitOK, "")
		if !strings.Contains(r.stdout, m.ID) {
			t.Fatalf("dlt list --environment does not find the adapter's record:\n%s", r.stdout)
		}
		env[envEnvironment] = envName
		r = cli(t, env, "dlt", "topics", "-o", "json")
		r.expect(t, exitOK, "")
		if !strings.Contains(r.stdout, `"`+envName+`.orders.dlt"`) || strings.Contains(r.stdout, "other_"+envName) {
			t.Fatalf("dlt topics in $%s=%s:\n%s", envEnvironment, envName, r.stdout)
		}
		delete(env, envEnvironment)
		cli(t, env, "dlt", "list", "--topic", "orders.dlt").expect(t, exitFailure, "or give --environment")
		cli(t, env, "audit", "kafka", "--environment", envName, "--topic", "orders.dlt").expect(t, exitOK, "")
	})

	t.Run("RabbitMQ", func(t *testing.T) {
		url := testenv.AMQPURL(t)
		ctx := testenv.Context(t, 30*time.Second)
		if err := rabbitmq.Declare(ctx, url, "orders", []string{"kitchen"}, rabbitmq.WithEnvironment(envName)); err != nil {
			t.Fatal(err)
		}
		topic := rabbitmq.EnvironmentName(envName, "orders")
		t.Cleanup(func() {
			conn, err := amqp.Dial(url)
			if err != nil {
				return
			}
			defer conn.Close()
			ch, _ := conn.Channel()
			for _, q := range []string{rabbitmq.QueueName(topic, "kitchen"), rabbitmq.DeadLetterQueueName(topic, "kitchen")} {
				_, _ = ch.QueueDelete(q, false, false, false)
			}
			_ = ch.ExchangeDelete(topic, false, false)
			_ = ch.ExchangeDelete(topic+".dlx", false, false)
		})
		env := map[string]string{envAMQPURL: url, envManagementURL: testenv.RabbitMQManagementURL(t)}
		r := cli(t, env, "dlq", "list", "--environment", envName, "--topic", "orders", "--group", "kitchen")
		r.expect(t, exitOK, "")
		if !strings.Contains(r.stdout, envName+".orders.kitchen.dlq: 0 messages") {
			t.Fatalf("dlq list --environment:\n%s", r.stdout)
		}
		cli(t, env, "audit", "rabbitmq", "--environment", envName, "--topic", "orders", "--group", "kitchen").expect(t, exitOK, "")
		env[envEnvironment] = envName
		cli(t, env, "dlq", "list", "--topic", "orders", "--group", "kitchen").expect(t, exitOK, "")
		delete(env, envEnvironment)
		cli(t, env, "dlq", "list", "--topic", "orders", "--group", "kitchen").expect(t, exitFailure, "or give --environment")
	})
}
