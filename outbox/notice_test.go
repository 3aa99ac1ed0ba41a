package outbox_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/reliable-go/reliable/reliabletest"
)

// Issue 15 item 5: the relay's statements raise no warnings. PostgreSQL
// sends each warning it logs to the client too, so the test collects the
// notices of the relay's connections while it claims, publishes, marks and
// renews. Before, every pipelined batch began with SET LOCAL, and the server
// logged "SET LOCAL can only be used in transaction blocks" per batch.
func TestRelayRaisesNoServerWarnings(t *testing.T) {
	t.Parallel()
	db := newTestDB(t, 8)
	cfg, err := pgxpool.ParseConfig(db.dsn)
	must(t, err)
	cfg.ConnConfig.RuntimeParams["search_path"] = db.schema
	var (
		mu      sync.Mutex
		notices []string
	)
	cfg.ConnConfig.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) {
		mu.Lock()
		notices = append(notices, n.Severity+": "+n.Message)
		mu.Unlock()
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	must(t, err)
	t.Cleanup(pool.Close)

	broker := reliabletest.NewBroker(reliabletest.BrokerOptions{})
	broker.CreateTopic("orders")
	rcfg := testConfig()
	rcfg.LeaseTTL, rcfg.PublishTimeout = 1500*time.Millisecond, 500*time.Millisecond // renewals every 500ms
	relay := startRelay(t, pool, broker.Publisher(), rcfg)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := range 20 {
		must(t, addTx(ctx, db.pool, msg("orders", "order-"+string(rune('a'+i%5)), "x")))
	}
	waitFor(t, 20*time.Second, "20 rows published and marked", func() bool {
		return relay.Stats().Published == 20 && db.count(t, `SELECT count(*) FROM reliable_outbox`) == 0
	})
	time.Sleep(1200 * time.Millisecond) // two lease renewals
	mu.Lock()
	defer mu.Unlock()
	if len(notices) > 0 {
		t.Fatalf("%d server warnings, e.g. %q", len(notices), notices[0])
	}
}
