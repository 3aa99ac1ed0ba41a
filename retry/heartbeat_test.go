package retry_test

import (
	"context"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/internal/testenv"
	"github.com/reliable-go/reliable/retry"
)

// poolThrough returns a pool to the test PostgreSQL whose connections pass
// through a fault proxy.
func poolThrough(t *testing.T, maxConns int32) (*pgxpool.Pool, *testenv.FaultProxy) {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(testenv.PostgresDSN(t))
	must(t, err)
	p := testenv.NewFaultProxy(t, net.JoinHostPort(cfg.ConnConfig.Host, strconv.Itoa(int(cfg.ConnConfig.Port))))
	cfg.ConnConfig.Host, cfg.ConnConfig.Port = p.Host(), p.Port()
	cfg.ConnConfig.ConnectTimeout = 2 * time.Second
	cfg.MaxConns = maxConns
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	must(t, err)
	t.Cleanup(func() { p.Up(); pool.Close() })
	return pool, p
}

// Issue 15 item 3 (L11): the lease heartbeat has a deadline. The retrier's
// database connection is black-holed while a handler runs; the heartbeat's
// renewal hangs. Before, the handler was cancelled 2.5 s after the black hole
// began, a second after its 1.5 s lease had expired: another retrier could
// take the key and replay its later entries meanwhile. Now the handler's
// context ends (after 1.0 s) while the lease is still live in the database,
// so nobody else can have taken the key yet.
func TestBlackholedHeartbeatCancelsTheHandlerBeforeTheLeaseExpires(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	must(t, b.table.Park(ctx, orderMsg("order-1", "placed"), nil))
	pool, proxy := poolThrough(t, 4)
	tbl, err := retry.NewTable(pool, b.cfg)
	must(t, err)

	const leaseTTL = 1500 * time.Millisecond
	type result struct {
		live    bool
		err     error
		elapsed time.Duration
	}
	cancelled := make(chan result, 1)
	h := reliable.HandlerFunc(func(hctx context.Context, _ *reliable.Message) error {
		holed := time.Now()
		proxy.Blackhole()
		<-hctx.Done()
		var live bool
		qctx, qcancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer qcancel()
		err := b.pool.QueryRow(qctx, `SELECT expires_at > now() FROM `+b.cfg.Table+`_leases`).Scan(&live)
		cancelled <- result{live, err, time.Since(holed)}
		return hctx.Err()
	})
	startRetrier(t, tbl, h, retry.RetrierConfig{LeaseTTL: leaseTTL})
	select {
	case r := <-cancelled:
		if r.err != nil {
			t.Fatalf("reading the lease: %v", r.err)
		}
		if !r.live {
			t.Fatalf("handler cancelled %s after the black hole began, after its lease expired: another retrier could have taken the key", r.elapsed)
		}
		t.Logf("handler cancelled %s after the black hole began, lease still live (TTL %s)", r.elapsed.Round(time.Millisecond), leaseTTL)
	case <-time.After(10 * time.Second):
		t.Fatal("handler still running 10 s after its database connection was black-holed (lease TTL 1.5 s)")
	}
	proxy.Up()
}
