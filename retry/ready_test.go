package retry_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/retry"
)

// wantNotReady asserts Ready fails within its 2 s bound with reason.
func wantNotReady(t *testing.T, ready func(context.Context) error, reason string) {
	t.Helper()
	start := time.Now()
	err := ready(context.Background())
	if err == nil || !strings.Contains(err.Error(), reason) {
		t.Fatalf("Ready: %v, want an error saying %q", err, reason)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("Ready took %s, want at most its 2 s bound", took)
	}
}

// waitReady waits (bounded) for Ready to return nil.
func waitReady(t *testing.T, ready func(context.Context) error) {
	t.Helper()
	waitFor(t, 10*time.Second, "ready", func() bool { return ready(context.Background()) == nil })
}

// Issue 17: the retry table and the retrier report readiness with the
// reason: the retrier is not ready before Run, while its database is down
// or black-holed, while shutting down, and after Run returned.
func TestRetrierAndTableReadiness(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	pool, proxy := poolThrough(t, 6)
	tbl, err := retry.NewTable(pool, b.cfg)
	must(t, err)
	waitReady(t, tbl.Ready)

	release := make(chan struct{})
	inHandler := make(chan struct{}, 1)
	h := reliable.HandlerFunc(func(context.Context, *reliable.Message) error {
		inHandler <- struct{}{}
		<-release
		return nil
	})
	var r *retry.Retrier
	stop := startRetrier(t, tbl, h, retry.RetrierConfig{ShutdownTimeout: 10 * time.Second}, func(rr *retry.Retrier) {
		r = rr
		wantNotReady(t, rr.Ready, "not running")
	})
	waitReady(t, r.Ready)

	proxy.Down()
	wantNotReady(t, tbl.Ready, "database unreachable")
	wantNotReady(t, r.Ready, "database unreachable")
	proxy.Up()
	waitReady(t, r.Ready)
	proxy.Blackhole()
	wantNotReady(t, tbl.Ready, "database unreachable")
	wantNotReady(t, r.Ready, "database unreachable")
	proxy.Up()
	waitReady(t, r.Ready)

	// A replay in flight while Run's context ends: shutting down.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	must(t, b.table.Park(ctx, orderMsg("order-1", "placed"), nil))
	select {
	case <-inHandler:
	case <-ctx.Done():
		t.Fatal("handler not called")
	}
	stopped := make(chan struct{})
	go func() { stop(); close(stopped) }()
	waitFor(t, 5*time.Second, "shutting down", func() bool {
		err := r.Ready(ctx)
		return err != nil && strings.Contains(err.Error(), "shutting down")
	})
	close(release)
	<-stopped
	wantNotReady(t, r.Ready, "not running")
}
