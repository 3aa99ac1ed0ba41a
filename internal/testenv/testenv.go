// Package testenv finds, or starts, the real services that integration tests run
// against: a 3-broker Kafka cluster, RabbitMQ, Redis and PostgreSQL.
//
// Each endpoint is looked up in this order:
//
//  1. an environment variable (RELIABLE_KAFKA_BROKERS, RELIABLE_AMQP_URL,
//     RELIABLE_RABBITMQ_MANAGEMENT_URL, RELIABLE_REDIS_ADDR, RELIABLE_POSTGRES_DSN);
//  2. the env file that `scripts/services.sh up` writes, <repo>/.cache/services.env
//     (the repository root is found by walking up to go.mod), or the file named by
//     RELIABLE_ENV_FILE;
//  3. a container, when a Docker engine answers (started by the helper module
//     internal/testenv/containers, run as a subprocess: see docker.go);
//  4. otherwise the test is skipped with a message that says how to get the
//     services, except when RELIABLE_REQUIRE_SERVICES is true (1, true, yes, on;
//     see Required), as in CI, where it fails.
//
// Endpoints from 1 and 2 are probed with a TCP dial, so a stale env file whose
// services are no longer running skips (or fails under RELIABLE_REQUIRE_SERVICES)
// instead of hanging. With -short every integration test is skipped.
//
// Fault tests use KafkaCluster (stop, kill -9 and restart brokers; KillAll and
// CrashAll kill -9 the whole cluster at once) and RabbitMQ (restart or kill -9 the
// server, force-close connections) and Postgres (restart PostgreSQL; RestartPostgres
// is the one-call form). They need the local services of
// scripts/services.sh. Because the test binaries of several packages run at the same
// time, testenv serializes them through lock files: Kafka(t), AMQPURL(t),
// RabbitMQManagementURL(t), PostgresDSN(t) and PostgresPool(t) take a shared lock on
// their service for the duration of the test, KafkaCluster(t), RabbitMQ(t) and
// Postgres(t) an exclusive one, so a fault test never
// kills a broker under another package's test (and waits until those finish).
// Packages with their own broker-control helpers should call KafkaCluster(t) or
// RabbitMQ(t) in them to take part in this.
//
// Other variables: RELIABLE_LOCK_TIMEOUT (how long to wait for a lock, default 15m),
// RELIABLE_NO_DOCKER=1 (never start containers), RELIABLE_ENV_FILE (env file path).
//
// Local cluster facts (scripts/services.sh): Apache Kafka 4.4.0 (or 3.9.1, see
// RELIABLE_KAFKA_VERSION) in KRaft mode, nodes
// 1, 2, 3 on 127.0.0.1:19092..19094 (controllers on 19192..19194),
// default.replication.factor=3, min.insync.replicas=2, no auto topic creation,
// broker.session.timeout.ms=6000 (a killed broker is fenced within ~6 s),
// replica.lag.time.max.ms=10000. RabbitMQ 3.10 with the management and
// consistent-hash exchange plugins, user reliable/reliable (administrator).
package testenv

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Environment variables read by testenv (and written to the env file by
// scripts/services.sh).
const (
	EnvKafkaBrokers          = "RELIABLE_KAFKA_BROKERS"
	EnvKafkaNodes            = "RELIABLE_KAFKA_NODES"
	EnvAMQPURL               = "RELIABLE_AMQP_URL"
	EnvRabbitMQManagementURL = "RELIABLE_RABBITMQ_MANAGEMENT_URL"
	EnvRedisAddr             = "RELIABLE_REDIS_ADDR"
	EnvPostgresDSN           = "RELIABLE_POSTGRES_DSN"
	EnvServicesScript        = "RELIABLE_SERVICES_SCRIPT"
	EnvServicesDir           = "RELIABLE_SERVICES_DIR"
	EnvRequireServices       = "RELIABLE_REQUIRE_SERVICES"
	EnvEnvFile               = "RELIABLE_ENV_FILE"
	EnvNoDocker              = "RELIABLE_NO_DOCKER"
)

const howToStart = "start the services with `make services` (scripts/services.sh up) or set " +
	"RELIABLE_* endpoints; see internal/testenv"

// Required reports whether a missing service or tool fails tests instead of
// skipping them: RELIABLE_REQUIRE_SERVICES set to a true value (1, true, yes, on;
// any case, surrounding blanks ignored), as in CI. It is the one parser of that
// variable: every test that decides to skip for a missing service or tool asks
// Required (or calls Unavailable).
func Required() bool { return truthy(os.Getenv(EnvRequireServices)) }

// truthy reports whether v is one of the usual true values of a flag variable.
func truthy(v string) bool {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "1", "true", "yes", "on", "y", "t":
		return true
	}
	return false
}

// Unavailable skips t because something it needs (a service, a tool such as java,
// a jar) is missing, or fails it when Required: in CI a missing dependency must not
// pass silently as a skip.
func Unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	unavailable(t, format, args...)
}

// unavailable skips t, or fails it when services are required.
func unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if Required() {
		t.Fatalf("%s (%s is set, so this is a failure)", msg, EnvRequireServices)
	}
	t.Skip(msg)
}

// integration skips t in -short mode.
func integration(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test: skipped with -short")
	}
}

// RepoRoot returns the repository's root: the nearest directory above the
// working directory (a package directory under `go test`) whose go.mod is the
// SDK's own (module github.com/reliable-go/reliable). The examples, the soak
// campaign, reliablectl and the benchmarks are modules of their own in
// subdirectories, and their tests must find the same .cache/services.env and
// scripts. Without such a go.mod it returns the nearest directory holding any
// go.mod, or "" if none.
func RepoRoot() string {
	dir, err := os.Getwd()
	if err != nil {
		return ""
	}
	nearest := ""
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil {
			if modulePath(b) == rootModule {
				return dir
			}
			if nearest == "" {
				nearest = dir
			}
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return nearest
		}
		dir = parent
	}
}

// rootModule is the SDK's module path.
const rootModule = "github.com/reliable-go/reliable"

// modulePath returns the path of the module line of a go.mod file.
func modulePath(gomod []byte) string {
	for _, line := range strings.Split(string(gomod), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "module" {
			return strings.Trim(f[1], `"`)
		}
	}
	return ""
}

var (
	envFileOnce sync.Once
	envFileVals map[string]string
	envFilePath string
)

// envFile returns the values of the env file, parsed once per process.
func envFile() (map[string]string, string) {
	envFileOnce.Do(func() {
		path := os.Getenv(EnvEnvFile)
		if path == "" {
			if root := RepoRoot(); root != "" {
				path = filepath.Join(root, ".cache", "services.env")
			}
		}
		envFilePath = path
		if path == "" {
			return
		}
		f, err := os.Open(path)
		if err != nil {
			return
		}
		defer f.Close()
		envFileVals = ParseEnv(f)
	})
	return envFileVals, envFilePath
}

// ParseEnv parses KEY=VALUE lines as written by scripts/services.sh: blank lines and
// # comments are ignored, an "export " prefix is allowed, and one level of matching
// single or double quotes around the value is removed.
func ParseEnv(r interface{ Read([]byte) (int, error) }) map[string]string {
	vals := map[string]string{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		line = strings.TrimPrefix(line, "export ")
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if len(v) >= 2 && (v[0] == '\'' || v[0] == '"') && v[len(v)-1] == v[0] {
			v = v[1 : len(v)-1]
		}
		vals[k] = v
	}
	return vals
}

// Lookup returns the value of key from the environment or else the env file, and
// where it came from ("" when neither has it).
func Lookup(key string) (value, source string) {
	if v := os.Getenv(key); v != "" {
		return v, "environment variable " + key
	}
	vals, path := envFile()
	if v := vals[key]; v != "" {
		return v, key + " in " + path
	}
	return "", ""
}

// reachable dials addr (host:port) once with a short timeout.
func reachable(addr string) error {
	c, err := net.DialTimeout("tcp", addr, 3*time.Second)
	if err != nil {
		return err
	}
	return c.Close()
}

// UniqueName returns a name for a topic, queue, exchange, consumer group, table or
// database that no other test or run uses: prefix, the test name and 8 random hex
// digits, joined by underscores, lower case, only [a-z0-9_], at most 60 characters
// (so it is a valid unquoted PostgreSQL identifier and a valid Kafka topic name).
func UniqueName(t testing.TB, prefix string) string {
	t.Helper()
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatalf("testenv.UniqueName: %v", err)
	}
	suffix := hex.EncodeToString(b[:])
	clean := func(s string) string {
		var sb strings.Builder
		underscore := false
		for _, r := range strings.ToLower(s) {
			ok := r >= 'a' && r <= 'z' || r >= '0' && r <= '9'
			if ok {
				sb.WriteRune(r)
				underscore = false
			} else if !underscore && sb.Len() > 0 {
				sb.WriteByte('_')
				underscore = true
			}
		}
		return strings.Trim(sb.String(), "_")
	}
	p := clean(prefix)
	name := clean(strings.TrimPrefix(t.Name(), "Test"))
	const maxLen = 60
	room := maxLen - len(suffix) - 2 - len(p)
	if room < 0 {
		p = p[:maxLen-len(suffix)-2]
		room = 0
	}
	if len(name) > room {
		name = strings.Trim(name[len(name)-room:], "_")
	}
	parts := make([]string, 0, 3)
	for _, s := range []string{p, name, suffix} {
		if s != "" {
			parts = append(parts, s)
		}
	}
	out := strings.Join(parts, "_")
	if out[0] >= '0' && out[0] <= '9' {
		out = "t" + out
	}
	return out
}

// Context returns a context that ends after d or when the test ends, whichever
// comes first.
func Context(t testing.TB, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
