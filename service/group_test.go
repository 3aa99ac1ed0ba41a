package service_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/reliable-go/reliable/service"
)

var quiet = slog.New(slog.DiscardHandler)

// fake is a component that runs until ctx ends, then takes stopTime to
// stop; notReady is its readiness error.
type fake struct {
	stopTime time.Duration
	runErr   error
	started  atomic.Bool
	stopped  atomic.Bool
	notReady atomic.Pointer[error]
	early    chan error // when set, Run returns what it receives
}

func (f *fake) Run(ctx context.Context) error {
	f.started.Store(true)
	select {
	case <-ctx.Done():
	case err := <-f.early:
		return err
	}
	time.Sleep(f.stopTime)
	f.stopped.Store(true)
	return f.runErr
}

func (f *fake) Ready(context.Context) error {
	if p := f.notReady.Load(); p != nil {
		return *p
	}
	return nil
}

func TestComponentsStopTogetherWithinTheGrace(t *testing.T) {
	g := service.New(service.Config{Grace: 2 * time.Second, Logger: quiet})
	a, b := &fake{stopTime: 300 * time.Millisecond}, &fake{stopTime: 300 * time.Millisecond}
	g.Add("consumer", a)
	g.Add("relay", b)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	for !a.started.Load() || !b.started.Load() {
		time.Sleep(time.Millisecond)
	}
	start := time.Now()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// Stopped in parallel: about 300 ms, not 600.
	if d := time.Since(start); d > 550*time.Millisecond || !a.stopped.Load() || !b.stopped.Load() {
		t.Fatalf("stopped in %s (a %v, b %v)", d, a.stopped.Load(), b.stopped.Load())
	}
}

func TestGraceExceededNamesTheLateComponent(t *testing.T) {
	g := service.New(service.Config{Grace: 200 * time.Millisecond, Logger: quiet})
	g.Add("fast", &fake{})
	g.Add("slow relay", &fake{stopTime: 5 * time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	start := time.Now()
	err := g.Run(ctx)
	if d := time.Since(start); d > time.Second {
		t.Fatalf("Run took %s with a 200ms grace", d)
	}
	if err == nil || !strings.Contains(err.Error(), "slow relay") || strings.Contains(err.Error(), "fast") {
		t.Fatalf("err = %v, want it to name only the slow relay", err)
	}
}

// A component that returns because the service's context ended is not one
// that "stopped before the service did", however the two events race: Run
// saw both ready at once and picked the component at random (a CI run
// failed TestGraceExceededNamesTheLateComponent so: "fast stopped before the
// service did"). Before the fix, about half of these runs failed.
func TestComponentStoppingWithTheServiceIsNotEarly(t *testing.T) {
	for i := range 200 {
		g := service.New(service.Config{Grace: time.Second, Logger: quiet})
		// Many components: the first have returned by the time Run has
		// started the last and selects, so both cases are ready.
		for j := range 50 {
			g.Add(fmt.Sprint("fast ", j), &fake{})
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := g.Run(ctx); err != nil {
			t.Fatalf("run %d: Run with the context ended before it started: %v, want nil", i, err)
		}
	}
}

func TestAComponentStoppingEarlyStopsTheOthers(t *testing.T) {
	g := service.New(service.Config{Logger: quiet})
	failing := &fake{early: make(chan error, 1)}
	other := &fake{}
	g.Add("consumer", failing)
	g.Add("relay", other)
	failing.early <- errors.New("subscription ended")
	err := g.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "consumer: subscription ended") || !other.stopped.Load() {
		t.Fatalf("err = %v, relay stopped %v", err, other.stopped.Load())
	}
}

func TestReadinessOverHTTP(t *testing.T) {
	g := service.New(service.Config{Logger: quiet})
	a, b := &fake{}, &fake{}
	g.Add("kitchen consumer", a)
	g.Add("outbox relay", b)
	srv := httptest.NewServer(g.Handler())
	defer srv.Close()
	get := func(path string) (int, string) {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	if code, body := get("/readyz"); code != 503 || !strings.Contains(body, "not started") {
		t.Fatalf("before Run: %d %q", code, body)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	for !a.started.Load() || !b.started.Load() {
		time.Sleep(time.Millisecond)
	}
	if code, body := get("/readyz"); code != 200 {
		t.Fatalf("running: %d %q", code, body)
	}
	down := errors.New("kafka: no broker reachable")
	a.notReady.Store(&down)
	if code, body := get("/readyz"); code != 503 || !strings.Contains(body, "kitchen consumer: kafka: no broker reachable") || strings.Contains(body, "outbox relay") {
		t.Fatalf("broker down: %d %q", code, body)
	}
	if code, _ := get("/livez"); code != 200 {
		t.Fatalf("livez while running: %d", code)
	}
	cancel()
	<-done
	if code, body := get("/readyz"); code != 503 || !strings.Contains(body, "shutting down") {
		t.Fatalf("after Run: %d %q", code, body)
	}
	if code, _ := get("/livez"); code != 503 {
		t.Fatalf("livez after Run: %d", code)
	}
}
