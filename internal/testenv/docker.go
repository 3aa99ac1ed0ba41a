package testenv

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// Containers, the third way to find a service (see the package doc): when no
// endpoint is configured and a Docker engine answers, testenv starts the
// service in a container, once per test binary, on first use.
//
// testenv does not import testcontainers-go: it would put the Docker client
// and its dependencies into the module graph of every service that imports
// the SDK. The containers live in a module of their own,
// internal/testenv/containers, which testenv runs as a subprocess
// (`go run .` in that directory; the first run compiles it) with the
// service's name. The subprocess prints the endpoints, then keeps the
// container until its standard input, held open by this process, closes when
// the test binary exits. The containers are single-node: Kafka has one broker
// (topics get replication factor 1), and there is no cluster control
// (KafkaCluster and RabbitMQ skip).
//
// On a machine without Docker (or with RELIABLE_NO_DOCKER=1) nothing of this
// runs: dockerHealthy fails in microseconds and the test skips, or fails
// under RELIABLE_REQUIRE_SERVICES, saying how to start the local services.

// containersDir is the helper module's directory under the repository root.
const containersDir = "internal/testenv/containers"

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
		dockerErr = pingDocker(dockerHost())
	})
	return dockerErr
}

// dockerHost returns the Docker engine's address as DOCKER_HOST spells it:
// DOCKER_HOST itself, else the default socket.
func dockerHost() string {
	if h := os.Getenv("DOCKER_HOST"); h != "" {
		return h
	}
	return "unix:///var/run/docker.sock"
}

// pingDocker asks the engine at host (unix:///path or tcp://host:port) for
// GET /_ping, which answers OK when the engine runs.
func pingDocker(host string) error {
	u, err := url.Parse(host)
	if err != nil {
		return fmt.Errorf("DOCKER_HOST %q: %w", host, err)
	}
	tr := &http.Transport{}
	base := "http://" + u.Host
	switch u.Scheme {
	case "unix":
		if _, err := os.Stat(u.Path); err != nil {
			return fmt.Errorf("no Docker socket: %w", err)
		}
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", u.Path)
		}
		base = "http://docker"
	case "tcp":
	default:
		return fmt.Errorf("DOCKER_HOST %q: only unix:// and tcp:// are supported", host)
	}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	resp, err := c.Get(base + "/_ping")
	if err != nil {
		return fmt.Errorf("docker engine at %s: %w", host, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64))
	if resp.StatusCode != http.StatusOK || strings.TrimSpace(string(b)) != "OK" {
		return fmt.Errorf("docker engine at %s: /_ping answered %s %q", host, resp.Status, b)
	}
	return nil
}

// containerService names the helper's service that provides each key.
var containerService = map[string]string{
	EnvKafkaBrokers:          "kafka",
	EnvAMQPURL:               "rabbitmq",
	EnvRabbitMQManagementURL: "rabbitmq",
	EnvRedisAddr:             "redis",
	EnvPostgresDSN:           "postgres",
}

type started struct {
	once sync.Once
	env  map[string]string
	err  error
	keep io.WriteCloser // the helper's stdin: open while this process lives
}

var containers = map[string]*started{"kafka": {}, "rabbitmq": {}, "redis": {}, "postgres": {}}

// fromDocker returns the endpoint for key from a container, starting it on first use.
func fromDocker(key string) (string, error) {
	service := containerService[key]
	if service == "" {
		return "", fmt.Errorf("no container for %s", key)
	}
	if err := dockerHealthy(); err != nil {
		return "", fmt.Errorf("no Docker engine: %w", err)
	}
	s := containers[service]
	s.once.Do(func() {
		root := RepoRoot()
		if root == "" {
			s.err = errors.New("no repository root to find " + containersDir)
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		s.env, s.keep, s.err = runHelper(ctx, filepath.Join(root, containersDir), service)
	})
	if s.err != nil {
		return "", s.err
	}
	v := s.env[key]
	if v == "" {
		return "", fmt.Errorf("the %s container gave no %s", service, key)
	}
	return v, nil
}

// runHelper runs `go run . service` in dir and reads KEY=value lines until a
// line "ready". The returned writer is the helper's stdin: the helper keeps
// its container until it is closed (or this process exits).
func runHelper(ctx context.Context, dir, service string) (map[string]string, io.WriteCloser, error) {
	cmd := exec.Command("go", "run", ".", service)
	cmd.Dir = dir
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, nil, fmt.Errorf("%s container: go run in %s: %w", service, dir, err)
	}
	type result struct {
		env map[string]string
		err error
	}
	done := make(chan result, 1)
	go func() {
		env := map[string]string{}
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := strings.TrimSpace(sc.Text())
			if line == "ready" {
				done <- result{env: env}
				_, _ = io.Copy(io.Discard, stdout)
				return
			}
			if k, v, ok := strings.Cut(line, "="); ok {
				env[k] = v
			}
		}
		done <- result{err: errors.New("the helper ended before it was ready")}
	}()
	select {
	case r := <-done:
		if r.err == nil {
			go func() { _ = cmd.Wait() }() // reaps the helper when it ends
			return r.env, stdin, nil
		}
		err = r.err
	case <-ctx.Done():
		err = ctx.Err()
	}
	_ = stdin.Close()
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	return nil, nil, fmt.Errorf("%s container (go run . %s in %s): %w: %s", service, service, dir, err, strings.TrimSpace(stderr.String()))
}
