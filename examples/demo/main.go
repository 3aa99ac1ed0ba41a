// Command demo runs the example order service and kitchen display service in
// one process on an embedded broker, sends them a burst of orders with
// injected faults, and prints a summary read from the data: orders created,
// orders displayed, final states correct, events lost, applied twice and
// applied out of order. The kitchen page stays up until Ctrl-C.
//
//	go run ./examples/demo                 # in-process Kafka (kfake), in-memory stores: NOT DURABLE
//	go run ./examples/demo -exit           # exit after the summary; non-zero when a figure is wrong
//	go run ./examples/demo -broker=kafka -store=postgres -dedupe=redis
//	go run ./examples/demo -broker=rabbitmq -store=postgres
//
// Real services are found through RELIABLE_KAFKA_BROKERS, RELIABLE_AMQP_URL,
// RELIABLE_POSTGRES_DSN and RELIABLE_REDIS_ADDR (or .cache/services.env, as
// written by scripts/services.sh). Run with -h for every flag.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	cfg, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

// errFigures is returned when a figure of the summary is wrong.
var errFigures = errors.New("the summary shows lost, duplicated or misordered events")

// run is the whole demo: start, generate, wait for the kitchen to catch up,
// print the summary, then serve the page until ctx ends (or return at once
// with cfg.Exit).
func run(ctx context.Context, cfg config, stdout, stderr io.Writer) error {
	level := slog.LevelError
	if cfg.Verbose {
		level = slog.LevelInfo
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	began := time.Now()
	a, err := start(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer func() {
		// A broker that went away can hold up a client's Close; never let
		// that keep the demo from exiting.
		closed := make(chan struct{})
		go func() { a.close(); close(closed) }()
		select {
		case <-closed:
		case <-time.After(30 * time.Second):
			log.Error("demo: shutdown took over 30s; exiting anyway")
		}
	}()
	fmt.Fprintf(stdout, "reliable demo: %d orders through %s\n", cfg.Orders, a.broker.label)
	fmt.Fprintf(stdout, "  kitchen display: %s (watch it fill up)\n", a.kitchenURL)
	if err := a.generate(ctx); err != nil {
		return fmt.Errorf("generate orders: %w", err)
	}
	f, err := a.waitSettled(ctx)
	if err != nil {
		return fmt.Errorf("read the stores: %w", err)
	}
	a.printSummary(stdout, f, time.Since(began))
	if cfg.inspect != nil {
		if err := cfg.inspect(a); err != nil {
			return err
		}
	}
	if !f.ok() {
		return errFigures
	}
	if cfg.Exit {
		return nil
	}
	fmt.Fprintln(stdout, "\n  The page stays up: press Ctrl-C to stop.")
	<-ctx.Done()
	return nil
}
