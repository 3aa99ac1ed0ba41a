package testenv

import (
	"context"
	"errors"
	"fmt"
	"os"
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
	if err := errors.Join(errs...); err != nil {
		return err
	}
	// The process is gone before its listening socket is (the sandbox's
	// network stack closes it a moment later): wait for the ports too.
	for _, id := range ids {
		for reachable(c.BrokerAddr(id)) == nil {
			select {
			case <-ctx.Done():
				return fmt.Errorf("kafka broker %d still accepts connections after kill -9: %w", id, ctx.Err())
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	return nil
}

// StartAll starts every broker that is not running, all at once, and waits until
// the cluster is whole.
//
// At once matters: a combined KRaft node serves clients only after it registered
// with a controller quorum (two of the three nodes), and gives up after a while
// without one, so after KillAll starting one node at a time (kafka-start N, which
// waits for that node's port) never gets past the first. StartAll runs the
// script's kafka-start-all, which starts the missing nodes together and never
// switches the cluster's version (kafka-up would replace a cluster of another
// version than RELIABLE_KAFKA_VERSION asks for, deleting its data).
func (c *Cluster) StartAll(ctx context.Context) error {
	if err := runScript(ctx, c.script, c.env, "kafka-start-all"); err != nil {
		return err
	}
	return c.WaitHealthy(ctx)
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
