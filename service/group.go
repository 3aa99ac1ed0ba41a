package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// Component is a long-running part of a service: *consumer.Consumer,
// *outbox.Relay, *retry.Retrier. Run works until ctx ends, then finishes
// what it must and returns; nil means it stopped because ctx ended.
type Component interface {
	Run(ctx context.Context) error
}

// ReadinessChecker is implemented by components that can tell whether they
// do their work right now. Ready returns nil when ready, else an error that
// says why not (the broker or the database is unreachable, still joining the
// consumer group, shutting down).
type ReadinessChecker interface {
	Ready(ctx context.Context) error
}

// DefaultGrace is Kubernetes' default terminationGracePeriodSeconds.
const DefaultGrace = 30 * time.Second

// Config configures a Group. The zero value is valid.
type Config struct {
	// Grace bounds the whole shutdown, from the moment Run's context ends
	// until Run returns. Defaults to DefaultGrace. Keep it at or below the
	// platform's grace period, and each component's own shutdown timeout
	// (consumer.Config.ShutdownTimeout) below it.
	Grace time.Duration
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Group runs components together. Add them, then call Run once.
type Group struct {
	cfg Config

	mu      sync.Mutex
	members []*member
	started bool
	state   string // "", "running", "stopping", "stopped"
}

type member struct {
	name string
	c    Component
	done chan struct{}
	err  error
}

// New returns an empty group.
func New(cfg Config) *Group {
	if cfg.Grace <= 0 {
		cfg.Grace = DefaultGrace
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Group{cfg: cfg}
}

// Add adds a component under a name used in logs, errors and readiness
// reports. It panics after Run started.
func (g *Group) Add(name string, c Component) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.started {
		panic("service: Add after Run")
	}
	g.members = append(g.members, &member{name: name, c: c, done: make(chan struct{})})
}

// Run starts every component and returns when all have stopped. It stops
// them all when ctx ends or when any one of them returns on its own (a
// component that stops early leaves the service incomplete). They stop
// together: each sees its context end at the same moment, and Run waits for
// them up to Config.Grace. The error joins the errors of the components that
// failed, and names those still running when the grace period ran out.
func (g *Group) Run(ctx context.Context) error {
	g.mu.Lock()
	if g.started {
		g.mu.Unlock()
		return errors.New("service: Run called twice")
	}
	g.started = true
	g.state = "running"
	members := append([]*member(nil), g.members...)
	g.mu.Unlock()
	if len(members) == 0 {
		return errors.New("service: no components")
	}

	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	first := make(chan *member, len(members))
	for _, m := range members {
		go func() {
			defer close(m.done)
			m.err = m.c.Run(runCtx)
			first <- m
		}()
	}
	var early *member
	select {
	case <-ctx.Done():
	case early = <-first:
		// select picks at random when both are ready: a component that
		// returned once the service's context had ended stopped with it.
		if ctx.Err() != nil {
			early = nil
		}
	}
	if early == nil {
		g.cfg.Logger.Info("service: stopping", slog.Duration("grace", g.cfg.Grace))
	} else {
		g.cfg.Logger.Error("service: a component stopped on its own; stopping the others",
			slog.String("component", early.name), slog.Any("error", early.err))
	}
	g.setState("stopping")
	stop()

	deadline := time.NewTimer(g.cfg.Grace)
	defer deadline.Stop()
	var errs []error
	if early != nil && early.err == nil {
		errs = append(errs, fmt.Errorf("service: %s stopped before the service did", early.name))
	}
	var late []string
	expired := false
	for _, m := range members {
		if !expired {
			select {
			case <-m.done:
			case <-deadline.C:
				expired = true
			}
		}
		select {
		case <-m.done:
			if m.err != nil {
				errs = append(errs, fmt.Errorf("service: %s: %w", m.name, m.err))
			}
		default:
			late = append(late, m.name)
		}
	}
	g.setState("stopped")
	if len(late) > 0 {
		errs = append(errs, fmt.Errorf("service: still running after the %s grace period: %s", g.cfg.Grace, strings.Join(late, ", ")))
	}
	return errors.Join(errs...)
}

func (g *Group) setState(s string) {
	g.mu.Lock()
	g.state = s
	g.mu.Unlock()
}

// Ready returns nil when the group runs and every component that reports
// readiness is ready; otherwise an error naming each component that is not,
// and why.
func (g *Group) Ready(ctx context.Context) error {
	g.mu.Lock()
	state := g.state
	members := append([]*member(nil), g.members...)
	g.mu.Unlock()
	switch state {
	case "":
		return errors.New("not started")
	case "stopping", "stopped":
		return errors.New("shutting down")
	}
	var errs []error
	for _, m := range members {
		select {
		case <-m.done:
			errs = append(errs, fmt.Errorf("%s: stopped", m.name))
			continue
		default:
		}
		if rc, ok := m.c.(ReadinessChecker); ok {
			if err := rc.Ready(ctx); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", m.name, err))
			}
		}
	}
	return errors.Join(errs...)
}

// Live returns nil while Run has not ended, and no component stopped.
func (g *Group) Live() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.state == "stopped" {
		return errors.New("stopped")
	}
	return nil
}
