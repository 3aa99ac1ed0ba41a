package testenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Crash faults: kill -9 of a whole service, as a power cut of its process would
// leave it (what the kernel already holds in its page cache survives; an fsync
// the process did not make is not needed for that).

// errNoProcess means the service's process was not found.
var errNoProcess = errors.New("process not found")

// KillAll kills every broker of the cluster with SIGKILL at the same moment (no
// controlled shutdown, no leader moves, the controller quorum is lost with them)
// and returns once all are gone. Start them again with StartAll, or let the test's
// end do it.
func (c *Cluster) KillAll(ctx context.Context) error {
	ids := c.BrokerIDs()
	c.mu.Lock()
	for _, id := range ids {
		c.touched[id] = true
	}
	c.mu.Unlock()
	// Signal all first, then let the script confirm each is gone and clean up
	// its pid file: one by one, the script would leave the last brokers time
	// to take over.
	var errs []error
	for _, id := range ids {
		pid, err := c.brokerPID(id)
		if errors.Is(err, errNoProcess) {
			continue // not running
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if err := killPID(pid); err != nil {
			errs = append(errs, fmt.Errorf("kill -9 kafka broker %d (pid %d): %w", id, pid, err))
		}
	}
	for _, id := range ids {
		if err := c.KillBroker(ctx, id); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// StartAll starts every broker that is not running, all at once, and waits until
// the cluster is whole.
//
// At once matters: a combined KRaft node serves clients only after it registered
// with a controller quorum (two of the three nodes), and gives up after a while
// without one. scripts/services.sh starts one node per call under its lock and
// waits for that node's port, so after KillAll three calls in a row never get
// past the first. StartAll therefore launches the nodes itself, the way the
// script's kafka_start does, and then lets the script confirm each one.
func (c *Cluster) StartAll(ctx context.Context) error {
	for _, id := range c.BrokerIDs() {
		if _, err := c.brokerPID(id); err == nil {
			continue // running
		}
		if err := c.launch(id); err != nil {
			// The script below starts it, one node at a time: enough
			// when at least one other node runs.
			c.t.Logf("testenv: %v; starting it through the script", err)
		}
	}
	for _, id := range c.BrokerIDs() {
		if err := c.StartBroker(ctx, id); err != nil { // a no-op for a running node
			return err
		}
	}
	return c.WaitHealthy(ctx)
}

// launch starts broker id in the background as scripts/services.sh's kafka_start
// does (same java command, pid file and log), without waiting for it.
func (c *Cluster) launch(id int32) error {
	dir, _ := Lookup(EnvServicesDir)
	if dir == "" {
		return fmt.Errorf("start kafka broker %d: %s is not set", id, EnvServicesDir)
	}
	kdir := filepath.Join(dir, "kafka")
	done, _ := filepath.Glob(filepath.Join(kdir, "libs-*", ".complete"))
	if len(done) == 0 {
		return fmt.Errorf("start kafka broker %d: no complete libs-* directory under %s", id, kdir)
	}
	libs := filepath.Dir(done[0])
	node := filepath.Join(kdir, "n"+strconv.Itoa(int(id)))
	conf := filepath.Join(kdir, "config", "n"+strconv.Itoa(int(id))+".properties")
	if _, err := os.Stat(conf); err != nil {
		return fmt.Errorf("start kafka broker %d: %w", id, err)
	}
	logPath := filepath.Join(node, "server.log")
	_ = os.Rename(logPath, logPath+".1")
	logFile, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer logFile.Close()
	heap := strings.Fields(os.Getenv("RELIABLE_KAFKA_HEAP"))
	if len(heap) == 0 {
		heap = []string{"-Xms128m", "-Xmx512m"}
	}
	args := []string{"bash", "-c", `echo $$ >"$1"; shift; exec "$@"`, "_", filepath.Join(node, "pid"), "java"}
	args = append(args, heap...)
	args = append(args, "-XX:+UseSerialGC", "-XX:+ExitOnOutOfMemoryError", "-Xss512k",
		"-Djava.awt.headless=true", "-Djava.net.preferIPv4Stack=true",
		"-Dlog4j.configuration=file:"+filepath.Join(kdir, "config", "log4j.properties"),
		"-cp", filepath.Join(libs, "*"), "kafka.Kafka", conf)
	// setsid: the broker must outlive this test process.
	cmd := exec.Command("setsid", args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start kafka broker %d: %w", id, err)
	}
	go func() { _ = cmd.Wait() }() // reap it if it exits while this process runs
	return nil
}

// CrashAll is KillAll and then StartAll: the whole cluster crashes and comes back.
func (c *Cluster) CrashAll(ctx context.Context) error {
	if err := c.KillAll(ctx); err != nil {
		return err
	}
	return c.StartAll(ctx)
}

// brokerPID reads the pid file scripts/services.sh keeps for broker id and checks
// that the process is that broker.
func (c *Cluster) brokerPID(id int32) (int, error) {
	dir, _ := Lookup(EnvServicesDir)
	if dir == "" {
		return 0, fmt.Errorf("kafka broker %d: %s is not set, cannot find its pid file", id, EnvServicesDir)
	}
	b, err := os.ReadFile(filepath.Join(dir, "kafka", "n"+strconv.Itoa(int(id)), "pid"))
	if errors.Is(err, os.ErrNotExist) {
		return 0, errNoProcess
	}
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, fmt.Errorf("kafka broker %d: bad pid file: %w", id, err)
	}
	cmd, err := cmdline(pid)
	if err != nil || !strings.Contains(cmd, "kafka.Kafka") || !strings.Contains(cmd, "n"+strconv.Itoa(int(id))+".properties") {
		return 0, errNoProcess
	}
	return pid, nil
}

// RabbitMQQueueSettle is how long a quorum queue must exist before a kill -9 of
// the local RabbitMQ (3.10) for it to come back. Measured: a queue declared just
// before 300 confirmed publishes and killed at once never got a leader again
// after the restart (basic.get timed out for 60 s; 0 of 300 messages readable,
// in 2 runs of 2), with a 3 s or 10 s pause between declare and kill it came
// back with all 300 (probably because the Ra directory of queues, a DETS table, is
// written to disk lazily; not investigated further). Fault tests that declare queues right before Kill wait
// this long first; real deployments declare queues long before any crash.
const RabbitMQQueueSettle = 5 * time.Second

// Kill kills the RabbitMQ server (its Erlang VM) with SIGKILL and returns once
// its AMQP port is closed. Nothing is flushed or closed cleanly: clients see their
// connections reset. Start brings it back (also done when the test ends). See
// RabbitMQQueueSettle for queues declared just before.
func (r *RabbitMQServer) Kill(ctx context.Context) error {
	pid, err := rabbitPID()
	if err != nil {
		return fmt.Errorf("kill -9 rabbitmq: %w", err)
	}
	if err := killPID(pid); err != nil {
		return fmt.Errorf("kill -9 rabbitmq (pid %d): %w", pid, err)
	}
	for {
		_, perr := cmdline(pid)
		if perr != nil && reachable(urlHost(r.amqpURL, "5672")) != nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("rabbitmq (pid %d) still running after kill -9: %w", pid, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Crash kills the server with SIGKILL and starts it again; it returns when AMQP
// and the management API answer.
func (r *RabbitMQServer) Crash(ctx context.Context) error {
	if err := r.Kill(ctx); err != nil {
		return err
	}
	return r.Start(ctx)
}

// urlHost returns host:port of an AMQP URL (port def when it has none).
func urlHost(u, def string) string {
	as, err := urlHostPort(def)(u)
	if err != nil || len(as) == 0 {
		return "127.0.0.1:" + def
	}
	return as[0]
}
