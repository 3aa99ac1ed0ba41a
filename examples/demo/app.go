package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/consumer"
	"github.com/reliable-go/reliable/examples/kitchen"
	"github.com/reliable-go/reliable/examples/orders"
	"github.com/reliable-go/reliable/observability"
)

// app is both services running in one process on one broker.
type app struct {
	cfg   config
	log   *slog.Logger
	runID string

	broker  *broker
	stores  *stores
	orders  *orders.Service
	kitchen *kitchen.Kitchen
	faults  *faults
	outcome counter
	tel     *observability.Telemetry

	ordersURL, kitchenURL string

	bgCancel context.CancelFunc
	bg       sync.WaitGroup

	mu           sync.Mutex
	stopConsumer func() error
	restarts     int
}

// start connects the broker and the stores and starts the order service
// (HTTP API and relay), the kitchen (HTTP display, consumer, retrier).
func start(ctx context.Context, cfg config, log *slog.Logger) (_ *app, err error) {
	var b [4]byte
	_, _ = rand.Read(b[:])
	a := &app{cfg: cfg, log: log, runID: hex.EncodeToString(b[:]), faults: newFaults(cfg)}
	defer func() {
		if err != nil {
			a.close()
		}
	}()
	if a.stores, err = newStores(ctx, cfg, a.runID, log); err != nil {
		return nil, err
	}
	if a.broker, err = newBroker(ctx, cfg, a.runID, log); err != nil {
		return nil, err
	}
	a.orders = orders.NewService(a.stores.orders, a.broker.topic)

	bgCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	a.bgCancel = cancel
	ordersLn, err := net.Listen("tcp", cfg.OrdersAddr)
	if err != nil {
		return nil, fmt.Errorf("order service: %w (choose another address with -orders-addr)", err)
	}
	a.ordersURL = "http://" + ordersLn.Addr().String()
	a.serve(bgCtx, ordersLn, orders.Handler(a.orders, log))

	client := &orders.Client{BaseURL: a.ordersURL, HTTP: &http.Client{Timeout: 5 * time.Second}}
	a.kitchen = kitchen.New(a.stores.kitchen, a.faults.source(client), log)
	kitchenLn, err := net.Listen("tcp", cfg.KitchenAddr)
	if err != nil {
		return nil, fmt.Errorf("kitchen display: %w (choose another address with -kitchen-addr)", err)
	}
	a.kitchenURL = "http://" + kitchenLn.Addr().String() + "/"
	metrics, err := a.startTelemetry()
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", metrics)
	mux.Handle("/", a.kitchen.Handler())
	a.serve(bgCtx, kitchenLn, mux)

	pub := a.tel.Publisher(a.broker.pub)
	a.goBG(bgCtx, "outbox relay", func(ctx context.Context) error { return a.stores.runRelay(ctx, pub) })
	a.goBG(bgCtx, "retrier", func(ctx context.Context) error {
		return a.stores.runRetrier(ctx, consumer.Deduplicated(a.stores.dedupe, a.handler()))
	})
	if err := a.startConsumer(); err != nil {
		return nil, err
	}
	return a, nil
}

// startTelemetry sets up the OpenTelemetry metrics served at /metrics on the
// kitchen's address: publish and consumer figures, the kitchen group's lag
// per partition, and with PostgreSQL the retry-table depth and outbox age.
func (a *app) startTelemetry() (http.Handler, error) {
	mp, handler, err := observability.NewPrometheus()
	if err != nil {
		return nil, err
	}
	if a.tel, err = observability.New(observability.Config{MeterProvider: mp, Logger: a.log}); err != nil {
		return nil, err
	}
	if a.broker.lag != nil {
		if _, err := a.tel.WatchLag(group, a.broker.lag); err != nil {
			return nil, err
		}
	}
	if a.stores.watch != nil {
		if err := a.stores.watch(a.tel); err != nil {
			return nil, err
		}
	}
	return handler, nil
}

// handler is the kitchen's handler with the demo's injected faults.
func (a *app) handler() reliable.Handler { return a.faults.handler(a.kitchen) }

func (a *app) serve(ctx context.Context, ln net.Listener, h http.Handler) {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	a.bg.Add(1)
	go func() {
		defer a.bg.Done()
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.Error("demo: HTTP server", slog.String("error", err.Error()))
		}
	}()
	context.AfterFunc(ctx, func() {
		shutdown, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown) // the page's event streams end with Close below
		_ = srv.Close()
	})
}

func (a *app) goBG(ctx context.Context, name string, run func(context.Context) error) {
	a.bg.Add(1)
	go func() {
		defer a.bg.Done()
		if err := run(ctx); err != nil && ctx.Err() == nil {
			a.log.Error("demo: "+name+" stopped", slog.String("error", err.Error()))
		}
	}()
}

// startConsumer starts a kitchen consumer with a new subscriber.
func (a *app) startConsumer() error {
	sub, err := a.broker.newSub()
	if err != nil {
		return fmt.Errorf("kitchen subscriber: %w", err)
	}
	c, err := consumer.New(sub, a.handler(), consumer.Config{
		Topic:           a.broker.topic,
		Environment:     environment,
		Dedupe:          a.stores.dedupe,
		RetryTable:      a.stores.retry,
		Concurrency:     a.cfg.Concurrency,
		ShutdownTimeout: 15 * time.Second,
		Logger:          a.log,
		Observe: func(e consumer.Event) {
			a.outcome.observe(e)
			a.tel.Observe(e)
		},
		DisableRetrier: true, // the demo runs its own, to inject faults into it
	})
	if err != nil {
		_ = sub.Close()
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	a.mu.Lock()
	a.stopConsumer = func() error { cancel(); return <-done }
	a.mu.Unlock()
	return nil
}

// restartConsumer stops the kitchen's consumer, as a deploy would, and
// starts a new one: what was in flight is finished or redelivered.
func (a *app) restartConsumer() error {
	a.mu.Lock()
	stop := a.stopConsumer
	a.stopConsumer = nil
	a.restarts++
	a.mu.Unlock()
	if stop != nil {
		if err := stop(); err != nil {
			a.log.Warn("demo: consumer stopped with an error", slog.String("error", err.Error()))
		}
	}
	return a.startConsumer()
}

// close stops everything: consumer, relay, retrier, servers, broker, stores.
func (a *app) close() {
	a.mu.Lock()
	stop := a.stopConsumer
	a.stopConsumer = nil
	a.mu.Unlock()
	if stop != nil {
		_ = stop()
	}
	if a.bgCancel != nil {
		a.bgCancel()
	}
	a.bg.Wait()
	if a.broker != nil {
		a.broker.close()
	}
	if a.stores != nil {
		a.stores.close()
	}
}
