package main

import (
	"context"
	"database/sql"
	"fmt"
	"log"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wkafka "github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"
	wsql "github.com/ThreeDotsLabs/watermill-sql/v3/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/components/forwarder"
	"github.com/ThreeDotsLabs/watermill/message"
	_ "github.com/jackc/pgx/v5/stdlib"
)

// The forwarder's topic in PostgreSQL (one table per topic).
const forwarderTopic = "outbox_forwarder"

// clockWMPublisher notes the confirm time of every message the watermill
// Kafka publisher returned nil for.
type clockWMPublisher struct {
	message.Publisher
	clock *confirmClock
}

func (p *clockWMPublisher) Publish(topic string, msgs ...*message.Message) error {
	if err := p.Publisher.Publish(topic, msgs...); err != nil {
		return err
	}
	ids := make([]string, len(msgs))
	for i, m := range msgs {
		ids[i] = m.UUID
	}
	p.clock.confirm(ids)
	return nil
}

func (b *bench) sqlDB() *sql.DB {
	db, err := sql.Open("pgx", b.dsn+"&search_path="+b.schema)
	b.must(err)
	db.SetMaxOpenConns(16)
	return db
}

// wmAdd commits msgs through watermill's forwarder publisher in one
// transaction: the outbox write.
func (b *bench) wmAdd(ctx context.Context, db *sql.DB, topic string, msgs ...*message.Message) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	sqlPub, err := wsql.NewPublisher(tx, wsql.PublisherConfig{SchemaAdapter: wsql.DefaultPostgreSQLSchema{}}, watermill.NopLogger{})
	if err != nil {
		return err
	}
	pub := forwarder.NewPublisher(sqlPub, forwarder.PublisherConfig{ForwarderTopic: forwarderTopic})
	if err := pub.Publish(topic, msgs...); err != nil {
		return err
	}
	return tx.Commit()
}

func (b *bench) wmMessage(i int) *message.Message {
	m := message.NewMessage(watermill.NewUUID(), b.payload)
	m.Metadata.Set("key", fmt.Sprintf("order-%d", i%*flagKeys))
	return m
}

// wmForwarder starts the forwarder: SQL subscriber (polling every 10ms when
// idle) to a durable Kafka publisher.
func (b *bench) wmForwarder(ctx context.Context, db *sql.DB, clock *confirmClock) (stop func()) {
	logger := watermill.NopLogger{}
	sub, err := wsql.NewSubscriber(db, wsql.SubscriberConfig{
		SchemaAdapter:    wsql.DefaultPostgreSQLSchema{},
		OffsetsAdapter:   wsql.DefaultPostgreSQLOffsetsAdapter{},
		InitializeSchema: true,
		PollInterval:     10 * time.Millisecond,
		ConsumerGroup:    "forwarder",
	}, logger)
	b.must(err)
	kpub, err := wkafka.NewPublisher(wkafka.PublisherConfig{
		Brokers: b.brokers,
		Marshaler: wkafka.NewWithPartitioningMarshaler(func(_ string, m *message.Message) (string, error) {
			return m.Metadata.Get("key"), nil
		}),
		OverwriteSaramaConfig: saramaConfig(),
	}, logger)
	b.must(err)
	fwd, err := forwarder.NewForwarder(sub, &clockWMPublisher{Publisher: kpub, clock: clock}, logger,
		forwarder.Config{ForwarderTopic: forwarderTopic})
	b.must(err)
	fctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = fwd.Run(fctx) }()
	<-fwd.Running()
	return func() {
		cancel()
		_ = fwd.Close()
		<-done
		_ = kpub.Close()
		_ = sub.Close()
	}
}

// wmInitSchema creates the forwarder's table before prefilling.
func (b *bench) wmInitSchema(ctx context.Context, db *sql.DB) {
	for _, q := range (wsql.DefaultPostgreSQLSchema{}).SchemaInitializingQueries(forwarderTopic) {
		_, err := db.ExecContext(ctx, q.Query, q.Args...)
		b.must(err)
	}
	for _, q := range (wsql.DefaultPostgreSQLOffsetsAdapter{}).SchemaInitializingQueries(forwarderTopic) {
		_, err := db.ExecContext(ctx, q.Query, q.Args...)
		b.must(err)
	}
}

func (b *bench) watermillThroughput(ctx context.Context) float64 {
	topic := b.topic("wm_bench_tp")
	db := b.sqlDB()
	defer db.Close()
	b.wmInitSchema(ctx, db)
	n := *flagWMN
	fill := time.Now()
	const perTx = 500
	var wg sync.WaitGroup
	sem := make(chan struct{}, 4)
	for start := 0; start < n; start += perTx {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			var msgs []*message.Message
			for i := start; i < min(start+perTx, n); i++ {
				msgs = append(msgs, b.wmMessage(i))
			}
			b.must(b.wmAdd(ctx, db, topic, msgs...))
		})
	}
	wg.Wait()
	log.Printf("watermill: prefilled %d rows in %s", n, time.Since(fill).Round(time.Millisecond))
	clock := newClock(n)
	start := time.Now()
	stop := b.wmForwarder(ctx, db, clock)
	select {
	case <-clock.done:
	case <-time.After(10 * time.Minute):
		log.Fatal("watermill throughput run timed out")
	}
	elapsed := clock.last.Sub(start)
	stop()
	log.Printf("watermill: %d confirmed in %s", n, elapsed.Round(time.Millisecond))
	// The latency run uses a fresh forwarder table: drop this one's rows.
	_, err := db.ExecContext(ctx, `TRUNCATE watermill_`+forwarderTopic)
	b.must(err)
	return float64(n) / elapsed.Seconds()
}

func (b *bench) watermillLatency(ctx context.Context) latency {
	topic := b.topic("wm_bench_lat")
	db := b.sqlDB()
	defer db.Close()
	b.wmInitSchema(ctx, db)
	clock := newClock(-1)
	stop := b.wmForwarder(ctx, db, clock)
	defer stop()
	time.Sleep(time.Second)
	n := offer(ctx, *flagRate, *flagDuration, clock, func(ctx context.Context, i int) (string, error) {
		m := b.wmMessage(i)
		return m.UUID, b.wmAdd(ctx, db, topic, m)
	})
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		clock.mu.Lock()
		c := clock.count
		clock.mu.Unlock()
		if c >= n {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	l := clock.latencies(time.Now())
	log.Printf("watermill latency: %d messages at %d/s: p50 %s p99 %s max %s, %d unconfirmed after 30s", l.n, *flagRate, l.p50, l.p99, l.max, l.missing)
	return l
}
