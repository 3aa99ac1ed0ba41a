package testenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// PostgresServer controls the local PostgreSQL cluster that scripts/services.sh
// runs, for fault tests. Methods may be called from any goroutine and return
// errors rather than failing the test.
type PostgresServer struct {
	dsn    string
	port   string
	script string
	env    []string
}

// Postgres returns control over the local PostgreSQL cluster the test DSN (see
// PostgresDSN) points at. The test holds PostgreSQL exclusively until it ends:
// tests of other processes that hold the shared lock (PostgresPool) wait, since a
// restart cuts every session on the server. When the test ends the helper waits
// until the server accepts connections again.
//
// The test skips when the PostgreSQL of the DSN is not a local cluster that
// scripts/services.sh manages (a host other than loopback, a container, a port
// no Debian cluster of this machine listens on): testenv cannot restart it.
// When it is local but scripts/services.sh is missing the test skips, or fails
// under RELIABLE_REQUIRE_SERVICES=1; a restart that fails fails at Restart.
func Postgres(t testing.TB) *PostgresServer {
	t.Helper()
	dsn, src := find(t, "PostgreSQL", EnvPostgresDSN)
	if src != viaLocal {
		t.Skip("testenv: PostgreSQL runs in a container, not the local cluster of scripts/services.sh: no restart")
	}
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatalf("testenv: PostgreSQL: bad %s: %v", EnvPostgresDSN, err)
	}
	addr := net.JoinHostPort(cfg.Host, fmt.Sprint(cfg.Port))
	if !loopbackHost(cfg.Host) {
		t.Skipf("testenv: PostgreSQL at %s is not the local cluster of scripts/services.sh: no restart", addr)
	}
	if !localCluster(cfg.Port) {
		t.Skipf("testenv: no local Debian PostgreSQL cluster (pg_lsclusters) listens on %s, "+
			"so it is not one scripts/services.sh manages: no restart", addr)
	}
	script := servicesScript()
	if script == "" {
		unavailable(t, "testenv: cannot restart the local PostgreSQL at %s: scripts/services.sh not found (%s)",
			addr, EnvServicesScript)
	}
	lockService(t, "postgres", lockExclusive)
	probe(t, "PostgreSQL", EnvPostgresDSN, dsn, urlHostPort("5432"))
	p := &PostgresServer{dsn: dsn, port: fmt.Sprint(cfg.Port), script: script, env: scriptEnv()}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := p.WaitReady(ctx); err != nil {
			t.Errorf("testenv: PostgreSQL is not back after the test: %v", err)
		}
	})
	return p
}

// localCluster reports whether pg_lsclusters lists a cluster on port.
func localCluster(port uint16) bool {
	out, err := exec.Command("pg_lsclusters", "-h").Output()
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) >= 3 && f[2] == fmt.Sprint(port) {
			return true
		}
	}
	return false
}

// loopbackHost reports whether a DSN's host is this machine: a loopback
// address, localhost, or a Unix socket directory.
func loopbackHost(h string) bool {
	if h == "localhost" || strings.HasPrefix(h, "/") {
		return true
	}
	if ip := net.ParseIP(h); ip != nil {
		return ip.IsLoopback()
	}
	return false
}

// ErrNoLocalPostgres is returned by Restart when no local cluster listens on the
// DSN's port (scripts/services.sh postgres-restart exits 3).
var ErrNoLocalPostgres = errors.New("testenv: no local PostgreSQL cluster on the DSN's port")

// DSN returns the connection URL of the server.
func (p *PostgresServer) DSN() string { return p.dsn }

// Restart restarts the server with a fast shutdown (open transactions roll back,
// every session ends, replication connections included; the WAL is flushed, so
// nothing committed is lost) and waits until it accepts connections. Takes 1-3 s.
func (p *PostgresServer) Restart(ctx context.Context) error {
	err := runScript(ctx, p.script, p.env, "postgres-restart", p.port)
	var exitErr *exec.ExitError
	if errors.As(err, &exitErr) && exitErr.ExitCode() == 3 {
		return fmt.Errorf("%w: %w", ErrNoLocalPostgres, err)
	}
	if err != nil {
		return err
	}
	return p.WaitReady(ctx)
}

// WaitReady waits until a connection can be opened and answers a query.
func (p *PostgresServer) WaitReady(ctx context.Context) error {
	var lastErr error
	for {
		lastErr = p.ping(ctx)
		if lastErr == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for PostgreSQL: %w (last error: %v)", ctx.Err(), lastErr)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func (p *PostgresServer) ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, p.dsn)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	return conn.Ping(ctx)
}

// RestartPostgres restarts the local PostgreSQL of Postgres(t) once and fails t if
// that does not work. For a restart at a chosen moment, call Postgres(t) first and
// Restart later.
func RestartPostgres(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := Postgres(t).Restart(ctx); err != nil {
		t.Fatalf("testenv: restarting PostgreSQL: %v", err)
	}
}
