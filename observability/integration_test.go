package observability_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/adapters/kafka"
	"github.com/reliable-go/reliable/consumer"
	"github.com/reliable-go/reliable/internal/testenv"
	"github.com/reliable-go/reliable/outbox"
	"github.com/reliable-go/reliable/retry"
)

// One trace spans the producer and the consumer through a real Kafka
// cluster: the traceparent travels as a record header.
func TestTraceThroughKafka(t *testing.T) {
	brokers := testenv.Kafka(t)
	topic := testenv.UniqueName(t, "orders")
	testenv.CreateTopic(t, brokers, topic, 2)
	b := setup(t)
	ctx := testenv.Context(t, 60*time.Second)

	prod, err := kafka.NewProducer(kafka.Config{Brokers: brokers, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	pub := b.tel.Publisher(prod)
	defer pub.Close()
	reqCtx, req := b.tp.Tracer("test").Start(ctx, "POST /orders")
	msg := &reliable.Message{Topic: topic, Key: "order-1", Type: "order.placed"}
	if err := pub.Publish(reqCtx, msg); err != nil {
		t.Fatal(err)
	}
	req.End()

	sub, err := kafka.NewSubscriber(kafka.Config{Brokers: brokers, Logger: quiet,
		Consumer: kafka.ConsumerConfig{Group: testenv.UniqueName(t, "kitchen")}})
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	handled := make(chan struct{})
	c, err := consumer.New(sub, b.tel.Handler(reliable.HandlerFunc(func(ctx context.Context, m *reliable.Message) error {
		if m.ID == msg.ID {
			once.Do(func() { close(handled) })
		}
		return nil
	})), consumer.Config{Topic: topic, Logger: quiet, Observe: b.tel.Observe})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	ran := make(chan error, 1)
	go func() { ran <- c.Run(runCtx) }()
	select {
	case <-handled:
	case <-ctx.Done():
		t.Fatal("message not consumed")
	}
	stop()
	if err := <-ran; err != nil {
		t.Fatal(err)
	}

	spans := b.spans.Ended()
	send := spansNamed(spans, "send "+topic)
	proc := spansNamed(spans, "process "+topic)
	if len(send) != 1 || len(proc) != 1 {
		t.Fatalf("%d send and %d process spans", len(send), len(proc))
	}
	if proc[0].Parent().SpanID() != send[0].SpanContext().SpanID() || proc[0].SpanContext().TraceID() != req.SpanContext().TraceID() {
		t.Fatalf("the consumer span is not the producer span's child in the request's trace")
	}
	if got := sample(b.scrape(t), "reliable_consumer_deliveries_total", `outcome="handled"`); got != "1" {
		t.Errorf("handled deliveries = %q, want 1", got)
	}
}

// The metrics endpoint shows the retry table's depth and the outbox's
// oldest pending row, read from the real PostgreSQL (L18). The Kafka lag
// half is in package kafkalag (TestWatchKafkaLag).
func TestWatchRealSources(t *testing.T) {
	b := setup(t)
	ctx := testenv.Context(t, 60*time.Second)
	group := testenv.UniqueName(t, "kitchen")

	// PostgreSQL: a retry table with one pending entry, an outbox with one
	// pending row, in a schema of their own.
	pool := pgSchema(t, ctx)
	table, err := retry.NewTable(pool, retry.TableConfig{Group: group, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if err := table.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	m := &reliable.Message{ID: reliable.NewID(), Topic: "orders", Key: "o-1"}
	m.Delivery.Attempt = 1
	if err := table.Park(ctx, m, errors.New("replica lag")); err != nil {
		t.Fatal(err)
	}
	if _, err := b.tel.WatchRetryTable(table); err != nil {
		t.Fatal(err)
	}
	if err := outbox.Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		return outbox.Add(ctx, tx, &reliable.Message{Topic: "orders", Key: "o-1"})
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.tel.WatchOutbox(pool, "orders"); err != nil {
		t.Fatal(err)
	}

	text := b.scrape(t)
	for _, c := range []struct {
		name   string
		labels []string
		want   string
	}{
		{"reliable_retry_entries", []string{`state="pending"`}, "1"},
		{"reliable_retry_blocked_keys", nil, "1"},
		{"reliable_outbox_pending", []string{`outbox="orders"`}, "1"},
		{"reliable_outbox_dead", nil, "0"},
	} {
		if got := sample(text, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %q, want %s", c.name, c.labels, got, c.want)
		}
	}
	if got := sample(text, "reliable_outbox_oldest_pending_age_seconds"); got == "" || got == "0" {
		t.Errorf("outbox oldest pending age = %q, want > 0", got)
	}
	if sample(text, "reliable_observe_errors_total") != "" {
		t.Errorf("a watched source failed:\n%s", grep(text, "reliable_observe_errors_total"))
	}
}

// pgSchema returns a pool on a new schema, dropped when t ends.
func pgSchema(t *testing.T, ctx context.Context) *pgxpool.Pool {
	dsn := testenv.PostgresDSN(t)
	schema := testenv.UniqueName(t, "obs")
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if c, err := pgx.Connect(ctx, dsn); err == nil {
			_, _ = c.Exec(ctx, "DROP SCHEMA "+schema+" CASCADE")
			_ = c.Close(ctx)
		}
	})
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.RuntimeParams["search_path"] = schema
	cfg.MaxConns = 4
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

func grep(text, prefix string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
