package outbox_test

import (
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/internal/testenv"
	"github.com/reliable-go/reliable/outbox"
	"github.com/reliable-go/reliable/reliabletest"
)

// gatePublisher holds every Publish call while its gate is shut.
type gatePublisher struct {
	reliable.Publisher
	gate    atomic.Pointer[chan struct{}]
	entered chan struct{}
}

func (p *gatePublisher) shut() (open func()) {
	g := make(chan struct{})
	p.gate.Store(&g)
	return func() { close(g) }
}

func (p *gatePublisher) Publish(ctx context.Context, msgs ...*reliable.Message) error {
	if g := p.gate.Load(); g != nil {
		select {
		case p.entered <- struct{}{}:
		default:
		}
		select {
		case <-*g:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return p.Publisher.Publish(ctx, msgs...)
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func relayNotReady(t *testing.T, r *outbox.Relay, reason string) {
	t.Helper()
	start := time.Now()
	err := r.Ready(context.Background())
	if err == nil || !strings.Contains(err.Error(), reason) {
		t.Fatalf("Ready: %v, want an error saying %q", err, reason)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("Ready took %s, want at most its 2 s bound", took)
	}
	t.Logf("not ready: %v", err)
}

// Issue 17: the relay reports readiness with the reason: not running,
// the database down or black-holed, a broker outage in progress, shutting
// down; ready again as soon as each heals.
func TestRelayReadiness(t *testing.T) {
	t.Parallel()
	db := newTestDB(t, 8)
	cfg, err := pgxpool.ParseConfig(db.dsn)
	must(t, err)
	proxy := testenv.NewFaultProxy(t, net.JoinHostPort(cfg.ConnConfig.Host, strconv.Itoa(int(cfg.ConnConfig.Port))))
	cfg.ConnConfig.Host, cfg.ConnConfig.Port = proxy.Host(), proxy.Port()
	cfg.ConnConfig.ConnectTimeout = time.Second
	cfg.ConnConfig.RuntimeParams["search_path"] = db.schema
	cfg.MaxConns = 8
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	must(t, err)
	t.Cleanup(func() { proxy.Up(); pool.Close() })

	broker := reliabletest.NewBroker(reliabletest.BrokerOptions{})
	broker.CreateTopic("orders")
	pub := &gatePublisher{Publisher: broker.Publisher(), entered: make(chan struct{}, 1)}
	rcfg := testConfig()
	rcfg.ShutdownTimeout = 10 * time.Second
	r, err := outbox.NewRelay(pool, pub, rcfg)
	must(t, err)
	relayNotReady(t, r, "not running")

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	ready := func() bool { return r.Ready(context.Background()) == nil }
	waitFor(t, 10*time.Second, "ready once running", ready)

	proxy.Down()
	relayNotReady(t, r, "database unreachable")
	proxy.Up()
	waitFor(t, 10*time.Second, "ready after the database came back", ready)
	proxy.Blackhole()
	relayNotReady(t, r, "database unreachable")
	proxy.Up()
	waitFor(t, 10*time.Second, "ready after the black hole", ready)

	// The broker fails every call for a while: an outage, then healed.
	actx, acancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer acancel()
	fails := make([]error, 8)
	for i := range fails {
		fails[i] = errors.New("broker unavailable")
	}
	broker.FailPublishes(fails...)
	must(t, addTx(actx, db.pool, msg("orders", "order-1", "placed")))
	waitFor(t, 10*time.Second, "not ready during the broker outage", func() bool {
		err := r.Ready(context.Background())
		return err != nil && strings.Contains(err.Error(), "broker outage in progress")
	})
	waitFor(t, 20*time.Second, "ready once the broker confirms again", ready)
	if n := len(broker.Messages("orders")); n != 1 {
		t.Fatalf("%d messages published, want 1", n)
	}

	// A publish in flight while Run's context ends: shutting down.
	open := pub.shut()
	must(t, addTx(actx, db.pool, msg("orders", "order-1", "paid")))
	select {
	case <-pub.entered:
	case <-actx.Done():
		t.Fatal("the relay did not publish the last row")
	}
	cancel()
	waitFor(t, 5*time.Second, "shutting down", func() bool {
		err := r.Ready(context.Background())
		return err != nil && strings.Contains(err.Error(), "shutting down")
	})
	open()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	done <- nil
	relayNotReady(t, r, "not running")
}
