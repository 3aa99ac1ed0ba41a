// Command containers starts one service in a Docker container for
// internal/testenv, when no endpoint is configured and a Docker engine
// answers. It is a module of its own so that testcontainers-go and the Docker
// client stay out of the SDK's module graph: testenv runs it as a subprocess
// (`go run .` in this directory) and never imports it.
//
// Usage: containers SERVICE, where SERVICE is kafka, rabbitmq, redis or
// postgres. It starts the container, prints the endpoints as
// RELIABLE_*=value lines (the variables testenv reads), then a line "ready",
// and keeps the container until its standard input closes (testenv holds it
// open for the life of the test binary), then removes it. testcontainers'
// reaper removes it too if this process is killed.
//
// The containers are single-node: Kafka has one broker (topics get
// replication factor 1), and there is no cluster control, so the fault tests
// (testenv.KafkaCluster, testenv.RabbitMQ) skip against them.
package main

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/testcontainers/testcontainers-go"
	tckafka "github.com/testcontainers/testcontainers-go/modules/kafka"
	tcpostgres "github.com/testcontainers/testcontainers-go/modules/postgres"
	tcrabbitmq "github.com/testcontainers/testcontainers-go/modules/rabbitmq"
	tcredis "github.com/testcontainers/testcontainers-go/modules/redis"
)

// Images used for the containers; the Kafka one is what the testcontainers
// module documents.
const (
	kafkaImage    = "confluentinc/confluent-local:7.5.0"
	rabbitMQImage = "rabbitmq:3.13-management-alpine"
	redisImage    = "redis:7-alpine"
	postgresImage = "postgres:16-alpine"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: containers kafka|rabbitmq|redis|postgres")
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	c, env, err := start(ctx, os.Args[1])
	cancel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "containers: %s: %v\n", os.Args[1], err)
		_ = testcontainers.TerminateContainer(c) // nil-safe
		os.Exit(1)
	}
	for _, kv := range env {
		fmt.Println(kv)
	}
	fmt.Println("ready")
	_, _ = io.Copy(io.Discard, os.Stdin) // until testenv's test binary exits
	ctx, cancel = context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := testcontainers.TerminateContainer(c, testcontainers.StopContext(ctx)); err != nil {
		fmt.Fprintf(os.Stderr, "containers: %s: remove: %v\n", os.Args[1], err)
	}
}

// start runs the container of service and returns its endpoints as
// KEY=value lines.
func start(ctx context.Context, service string) (testcontainers.Container, []string, error) {
	switch service {
	case "kafka":
		c, err := tckafka.Run(ctx, kafkaImage, tckafka.WithClusterID("reliable-testenv"))
		if err != nil {
			return c, nil, err
		}
		b, err := c.Brokers(ctx)
		return c, []string{"RELIABLE_KAFKA_BROKERS=" + strings.Join(b, ",")}, err
	case "rabbitmq":
		c, err := tcrabbitmq.Run(ctx, rabbitMQImage)
		if err != nil {
			return c, nil, err
		}
		amqp, err := c.AmqpURL(ctx)
		if err != nil {
			return c, nil, err
		}
		h, err := c.HttpURL(ctx)
		if err != nil {
			return c, nil, err
		}
		u, err := url.Parse(h)
		if err != nil {
			return c, nil, err
		}
		u.User = url.UserPassword(c.AdminUsername, c.AdminPassword)
		return c, []string{"RELIABLE_AMQP_URL=" + amqp,
			"RELIABLE_RABBITMQ_MANAGEMENT_URL=" + strings.TrimSuffix(u.String(), "/")}, nil
	case "redis":
		c, err := tcredis.Run(ctx, redisImage)
		if err != nil {
			return c, nil, err
		}
		s, err := c.ConnectionString(ctx)
		if err != nil {
			return c, nil, err
		}
		u, err := url.Parse(s)
		if err != nil {
			return c, nil, err
		}
		return c, []string{"RELIABLE_REDIS_ADDR=" + u.Host}, nil
	case "postgres":
		c, err := tcpostgres.Run(ctx, postgresImage,
			tcpostgres.WithDatabase("reliable"),
			tcpostgres.WithUsername("reliable"),
			tcpostgres.WithPassword("reliable"),
			tcpostgres.BasicWaitStrategies())
		if err != nil {
			return c, nil, err
		}
		dsn, err := c.ConnectionString(ctx, "sslmode=disable")
		return c, []string{"RELIABLE_POSTGRES_DSN=" + dsn}, err
	}
	return nil, nil, fmt.Errorf("unknown service %q (kafka, rabbitmq, redis or postgres)", service)
}
