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
	viaDocker               // a container (internal/testenv/containers)
)

// find returns the configured value of key (environment, env file, or a container)
// or skips/fails t when there is none. It does not probe the endpoint.
func find(t testing.TB, service, key string) (string, source) {
	t.Helper()
	integration(t)
	if v, _ := Lookup(key); v != "" {
		return v, viaLocal
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

// probe skips/fails t unless one of the addresses in value v answers. addrs
// extracts the host:port addresses from v.
func probe(t testing.TB, service, key, v string, addrs func(string) ([]string, error)) {
	t.Helper()
	_, src := Lookup(key)
	if src == "" {
		src = "container"
	}
	as, err := addrs(v)
	if err != nil {
		t.Fatalf("testenv: %s: bad %s: %v", service, src, err)
	}
	var errs []error
	for _, a := range as {
		err := reachable(a)
		if err == nil {
			return
		}
		errs = append(errs, err)
	}
	unavailable(t, "testenv: %s at %s (%s) does not answer: %v; %s",
		service, redact(v), src, errors.Join(errs...), howToStart)
}

// resolve finds the value of key, holds the service lock (when lock is not "") in
// shared mode, and then probes it: after the lock, so that a test started while a
// fault test of another package has the service down waits instead of skipping.
func resolve(t testing.TB, service, key, lock string, addrs func(string) ([]string, error)) (string, source) {
	t.Helper()
	v, src := find(t, service, key)
	if lock != "" {
		lockService(t, lock, lockShared)
	}
	probe(t, service, key, v, addrs)
	return v, src
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

// Kafka returns the bootstrap addresses of the Kafka cluster (three brokers with
// replication factor 3 and min.insync.replicas=2 when started by
// scripts/services.sh). The test holds a shared lock on Kafka until it ends, so
// fault tests of other packages wait for it.
func Kafka(t testing.TB) []string {
	t.Helper()
	v, _ := resolve(t, "Kafka", EnvKafkaBrokers, "kafka", hostPorts)
	b, _ := hostPorts(v)
	return b
}

// AMQPURL returns the AMQP 0-9-1 URL of RabbitMQ, e.g.
// amqp://reliable:reliable@127.0.0.1:5672/. The test holds a shared lock on RabbitMQ.
func AMQPURL(t testing.TB) string {
	t.Helper()
	v, _ := resolve(t, "RabbitMQ", EnvAMQPURL, "rabbitmq", urlHostPort("5672"))
	return v
}

// RabbitMQManagementURL returns the base URL of the RabbitMQ management HTTP API
// with credentials, e.g. http://reliable:reliable@127.0.0.1:15672. The test holds a
// shared lock on RabbitMQ.
func RabbitMQManagementURL(t testing.TB) string {
	t.Helper()
	v, _ := resolve(t, "RabbitMQ management API", EnvRabbitMQManagementURL, "rabbitmq", urlHostPort("15672"))
	return strings.TrimSuffix(v, "/")
}

// RedisAddr returns the host:port of Redis.
func RedisAddr(t testing.TB) string {
	t.Helper()
	v, _ := resolve(t, "Redis", EnvRedisAddr, "", hostPorts)
	return v
}

// PostgresDSN returns a PostgreSQL connection URL, e.g.
// postgres://reliable:reliable@127.0.0.1:5432/reliable?sslmode=disable. The role
// may create databases. Tests share the database: use UniqueName for tables or
// schemas.
func PostgresDSN(t testing.TB) string {
	t.Helper()
	// The shared lock: a test that restarts PostgreSQL (Postgres(t)) waits for it.
	v, _ := resolve(t, "PostgreSQL", EnvPostgresDSN, "postgres", urlHostPort("5432"))
	return v
}
