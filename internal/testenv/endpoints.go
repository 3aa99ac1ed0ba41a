package testenv

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"testing"
)

// source tells where an endpoint came from.
type source int

const (
	viaLocal  source = iota // environment variable or env file (scripts/services.sh)
	viaDocker               // testcontainers
)

// resolve returns the value of key or skips/fails t. addrs extracts the host:port
// addresses to probe from the value; one answering is enough.
func resolve(t testing.TB, service, key string, addrs func(string) ([]string, error)) (string, source) {
	t.Helper()
	integration(t)
	if v, src := Lookup(key); v != "" {
		as, err := addrs(v)
		if err != nil {
			t.Fatalf("testenv: %s: bad %s: %v", service, src, err)
		}
		var errs []error
		for _, a := range as {
			err := reachable(a)
			if err == nil {
				return v, viaLocal
			}
			errs = append(errs, err)
		}
		unavailable(t, "testenv: %s at %s (%s) does not answer: %v; %s",
			service, redact(v), src, errors.Join(errs...), howToStart)
		return "", viaLocal
	}
	v, err := fromDocker(key)
	if err == nil {
		return v, viaDocker
	}
	_, envPath := envFile()
	unavailable(t, "testenv: no %s: %s is not set, no env file at %s, and no container (%v); %s",
		service, key, envPath, err, howToStart)
	return "", viaLocal
}

func redact(v string) string {
	if u, err := url.Parse(v); err == nil && u.User != nil {
		return u.Redacted()
	}
	return v
}

func hostPorts(v string) ([]string, error) {
	var out []string
	for _, a := range strings.Split(v, ",") {
		a = strings.TrimSpace(a)
		if a == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(a); err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	if len(out) == 0 {
		return nil, errors.New("empty address list")
	}
	return out, nil
}

func urlHostPort(defaultPort string) func(string) ([]string, error) {
	return func(v string) ([]string, error) {
		u, err := url.Parse(v)
		if err != nil {
			return nil, err
		}
		if u.Host == "" {
			return nil, fmt.Errorf("no host in %q", redact(v))
		}
		if u.Port() == "" {
			return []string{net.JoinHostPort(u.Hostname(), defaultPort)}, nil
		}
		return []string{u.Host}, nil
	}
}

func kafkaBrokers(t testing.TB) ([]string, source) {
	t.Helper()
	v, src := resolve(t, "Kafka", EnvKafkaBrokers, hostPorts)
	b, _ := hostPorts(v)
	return b, src
}

// Kafka returns the bootstrap addresses of the Kafka cluster (three brokers with
// replication factor 3 and min.insync.replicas=2 when started by
// scripts/services.sh). The test holds a shared lock on Kafka until it ends, so
// fault tests of other packages wait for it.
func Kafka(t testing.TB) []string {
	t.Helper()
	b, _ := kafkaBrokers(t)
	lockService(t, "kafka", lockShared)
	return b
}

// AMQPURL returns the AMQP 0-9-1 URL of RabbitMQ, e.g.
// amqp://reliable:reliable@127.0.0.1:5672/. The test holds a shared lock on RabbitMQ.
func AMQPURL(t testing.TB) string {
	t.Helper()
	v, _ := resolve(t, "RabbitMQ", EnvAMQPURL, urlHostPort("5672"))
	lockService(t, "rabbitmq", lockShared)
	return v
}

// RabbitMQManagementURL returns the base URL of the RabbitMQ management HTTP API
// with credentials, e.g. http://reliable:reliable@127.0.0.1:15672. The test holds a
// shared lock on RabbitMQ.
func RabbitMQManagementURL(t testing.TB) string {
	t.Helper()
	v, _ := resolve(t, "RabbitMQ management API", EnvRabbitMQManagementURL, urlHostPort("15672"))
	lockService(t, "rabbitmq", lockShared)
	return strings.TrimSuffix(v, "/")
}

// RedisAddr returns the host:port of Redis.
func RedisAddr(t testing.TB) string {
	t.Helper()
	v, _ := resolve(t, "Redis", EnvRedisAddr, hostPorts)
	return v
}

// PostgresDSN returns a PostgreSQL connection URL, e.g.
// postgres://reliable:reliable@127.0.0.1:5432/reliable?sslmode=disable. The role
// may create databases. Tests share the database: use UniqueName for tables or
// schemas.
func PostgresDSN(t testing.TB) string {
	t.Helper()
	v, _ := resolve(t, "PostgreSQL", EnvPostgresDSN, urlHostPort("5432"))
	return v
}
