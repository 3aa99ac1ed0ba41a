package testenv

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/testcontainers/testcontainers-go"
	tckafka "github.com/testcontainers/testcontainers-go/modules/kafka"
	tcpostgres "github.com/testcontainers/testcontainers-go/modules/postgres"
	tcrabbitmq "github.com/testcontainers/testcontainers-go/modules/rabbitmq"
	tcredis "github.com/testcontainers/testcontainers-go/modules/redis"
)

// Containers started with testcontainers-go when no endpoint is configured and a
// Docker engine answers. Each is started once per test binary, on first use, and
// removed by testcontainers' reaper when the binary exits. They are single-node:
// Kafka has one broker (topics get replication factor 1), and there is no cluster
// control (KafkaCluster and RabbitMQ skip).

// Images used for the containers; the Kafka one is what the testcontainers module
// documents.
const (
	DockerKafkaImage    = "confluentinc/confluent-local:7.5.0"
	DockerRabbitMQImage = "rabbitmq:3.13-management-alpine"
	DockerRedisImage    = "redis:7-alpine"
	DockerPostgresImage = "postgres:16-alpine"
)

var (
	dockerOnce sync.Once
	dockerErr  error
)

// dockerHealthy reports whether a Docker engine answers (checked once per process).
func dockerHealthy() error {
	dockerOnce.Do(func() {
		if truthy(os.Getenv(EnvNoDocker)) {
			dockerErr = errors.New(EnvNoDocker + " is set")
			return
		}
		defer func() {
			if r := recover(); r != nil {
				dockerErr = fmt.Errorf("testcontainers: %v", r)
			}
		}()
		p, err := testcontainers.NewDockerProvider()
		if err != nil {
			dockerErr = err
			return
		}
		defer p.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		dockerErr = p.Health(ctx)
	})
	return dockerErr
}

type onceValue struct {
	once sync.Once
	val  string
	err  error
}

var dockerValues = map[string]*onceValue{
	EnvKafkaBrokers:          {},
	EnvAMQPURL:               {},
	EnvRabbitMQManagementURL: {},
	EnvRedisAddr:             {},
	EnvPostgresDSN:           {},
}

var rabbitOnce struct {
	once       sync.Once
	amqp, mgmt string
	err        error
}

// fromDocker returns the endpoint for key from a container, starting it on first use.
func fromDocker(key string) (string, error) {
	if err := dockerHealthy(); err != nil {
		return "", fmt.Errorf("no Docker engine: %w", err)
	}
	ov := dockerValues[key]
	if ov == nil {
		return "", fmt.Errorf("no container for %s", key)
	}
	ov.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		ov.val, ov.err = startContainer(ctx, key)
	})
	return ov.val, ov.err
}

func startContainer(ctx context.Context, key string) (string, error) {
	switch key {
	case EnvKafkaBrokers:
		c, err := tckafka.Run(ctx, DockerKafkaImage, tckafka.WithClusterID("reliable-testenv"))
		if err != nil {
			return "", fmt.Errorf("kafka container: %w", err)
		}
		b, err := c.Brokers(ctx)
		if err != nil {
			return "", err
		}
		return strings.Join(b, ","), nil
	case EnvAMQPURL, EnvRabbitMQManagementURL:
		rabbitOnce.once.Do(func() {
			c, err := tcrabbitmq.Run(ctx, DockerRabbitMQImage)
			if err != nil {
				rabbitOnce.err = fmt.Errorf("rabbitmq container: %w", err)
				return
			}
			if rabbitOnce.amqp, rabbitOnce.err = c.AmqpURL(ctx); rabbitOnce.err != nil {
				return
			}
			var h string
			if h, rabbitOnce.err = c.HttpURL(ctx); rabbitOnce.err != nil {
				return
			}
			u, err := url.Parse(h)
			if err != nil {
				rabbitOnce.err = err
				return
			}
			u.User = url.UserPassword(c.AdminUsername, c.AdminPassword)
			rabbitOnce.mgmt = strings.TrimSuffix(u.String(), "/")
		})
		if key == EnvAMQPURL {
			return rabbitOnce.amqp, rabbitOnce.err
		}
		return rabbitOnce.mgmt, rabbitOnce.err
	case EnvRedisAddr:
		c, err := tcredis.Run(ctx, DockerRedisImage)
		if err != nil {
			return "", fmt.Errorf("redis container: %w", err)
		}
		s, err := c.ConnectionString(ctx)
		if err != nil {
			return "", err
		}
		u, err := url.Parse(s)
		if err != nil {
			return "", err
		}
		return u.Host, nil
	case EnvPostgresDSN:
		c, err := tcpostgres.Run(ctx, DockerPostgresImage,
			tcpostgres.WithDatabase("reliable"),
			tcpostgres.WithUsername("reliable"),
			tcpostgres.WithPassword("reliable"),
			tcpostgres.BasicWaitStrategies())
		if err != nil {
			return "", fmt.Errorf("postgres container: %w", err)
		}
		return c.ConnectionString(ctx, "sslmode=disable")
	}
	return "", fmt.Errorf("no container for %s", key)
}
