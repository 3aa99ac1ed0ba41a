package outbox_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/internal/testenv"
	"github.com/reliable-go/reliable/outbox"
)

// outageDuration is how long the broker stays down; 30s unless
// OUTBOX_TEST_OUTAGE says otherwise (a Go duration).
func outageDuration(t *testing.T) time.Duration {
	if v := os.Getenv("OUTBOX_TEST_OUTAGE"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	return 30 * time.Second
}

// brokerOutage: orders keep committing while the broker is down; rows
// accumulate in the outbox, no row dies, and once the broker is back the
// backlog drains, in order per key (L03, L06, L09, L23).
func brokerOutage(t *testing.T, k *brokerKit, down, up func(ctx context.Context) error) {
	db := newTestDB(t, 8)
	ctx := testenv.Context(t, 5*time.Minute)
	cfg := testConfig()
	cfg.LeaseTTL = 10 * time.Second
	cfg.PublishTimeout = 4 * time.Second
	cfg.Backoff = reliable.Backoff{Initial: 100 * time.Millisecond, Max: 2 * time.Second}
	cfg.MaxAttempts = 2 // an outage must charge no row
	relay := startRelay(t, db.pool, k.publisher(t), cfg)

	// One writer commits an order event every 50ms over 20 keys.
	w := startOrderWriter(t, ctx, db.pool, k.topic, 20, 50*time.Millisecond)

	waitFor(t, 30*time.Second, "relaying before the outage", func() bool { return relay.Stats().Published >= 20 })
	if err := down(ctx); err != nil {
		t.Fatal(err)
	}
	outage := outageDuration(t)
	start := time.Now()
	time.Sleep(outage)
	st, err := outbox.ReadStatus(ctx, db.pool)
	if err != nil {
		t.Fatal(err)
	}
	if st.Pending < int64(outage/(50*time.Millisecond))/2 || st.Dead != 0 {
		t.Fatalf("after %s down: %+v, want the orders of the outage pending and none dead", outage, st)
	}
	t.Logf("after %s down: %d rows pending, oldest %s, %d dead; relay %d outages", outage, st.Pending,
		st.OldestPending.Round(time.Millisecond), st.Dead, relay.Stats().Outages)
	back := time.Now() // restarting takes a while; the relay drains as soon as it can
	if err := up(ctx); err != nil {
		t.Fatal(err)
	}
	// Progress every 15s, so a stuck drain shows where it stuck.
	lastLog := time.Now()
	waitFor(t, 3*time.Minute, "backlog drained", func() bool {
		s, err := outbox.ReadStatus(ctx, db.pool)
		if time.Since(lastLog) > 15*time.Second {
			lastLog = time.Now()
			t.Logf("draining %s after restart: status %+v err %v; relay %+v", time.Since(back).Round(time.Second), s, err, relay.Stats())
		}
		return err == nil && s.Pending < 5
	})
	t.Logf("backlog drained %s after the broker restart began (%s after it went down)",
		time.Since(back).Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	w.Stop()
	waitFor(t, time.Minute, "outbox empty", func() bool { return db.count(t, `SELECT count(*) FROM reliable_outbox`) == 0 })
	if s := relay.Stats(); s.Dead != 0 || s.Outages == 0 {
		t.Fatalf("relay stats %+v: want outages and no dead rows", s)
	}
	c := k.consumeAll(t, w)
	t.Logf("%s: %d orders, all delivered in order per key, %d repeats", k.kind, c.distinct(), c.dups)
}

func TestKafkaClusterDownRowsAccumulateThenDrainInOrder(t *testing.T) {
	if testing.Short() {
		t.Skip("long")
	}
	cluster := testenv.KafkaCluster(t)
	k := kafkaKit(t, cluster.Brokers())
	// Two of three brokers down: acks=all with min.insync.replicas=2 cannot
	// be met, so nothing can be confirmed.
	brokerOutage(t, k, func(ctx context.Context) error {
		for _, id := range []int32{2, 3} {
			if err := cluster.KillBroker(ctx, id); err != nil {
				return err
			}
		}
		return nil
	}, func(ctx context.Context) error {
		for _, id := range []int32{2, 3} {
			if err := cluster.StartBroker(ctx, id); err != nil {
				return err
			}
		}
		return nil
	})
}

func TestRabbitMQDownRowsAccumulateThenDrainInOrder(t *testing.T) {
	if testing.Short() {
		t.Skip("long")
	}
	server := testenv.RabbitMQ(t)
	k := rabbitKit(t, server.AMQPURL())
	brokerOutage(t, k, server.Stop, func(ctx context.Context) error {
		if err := server.Start(ctx); err != nil {
			return err
		}
		return server.WaitReady(ctx)
	})
}
