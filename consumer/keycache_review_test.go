package consumer_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/consumer"
	"github.com/reliable-go/reliable/internal/testenv"
	"github.com/reliable-go/reliable/reliabletest"
	"github.com/reliable-go/reliable/retry"
)

// deafTracer keeps the blocked-key listener from ever listening (a LISTEN
// connection that keeps reconnecting): no announcement reaches the cache,
// so whatever the cache knows it knows from its loads and its own marks.
type deafTracer struct{}

func (deafTracer) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	if strings.HasPrefix(d.SQL, "LISTEN") {
		<-ctx.Done()
	}
	return ctx
}

func (deafTracer) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// forwardSubscriber passes the broker's deliveries on and closes got once
// the consumer took the delivery with ID want.
type forwardSubscriber struct {
	*reliabletest.Subscriber
	want string
	got  chan struct{}
}

func (s *forwardSubscriber) Subscribe(ctx context.Context, topic string) (<-chan *reliable.Delivery, error) {
	in, err := s.Subscriber.Subscribe(ctx, topic)
	if err != nil {
		return nil, err
	}
	out := make(chan *reliable.Delivery)
	go func() {
		defer close(out)
		for d := range in {
			select {
			case out <- d:
			case <-ctx.Done():
				return
			}
			if d.Message.ID == s.want {
				close(s.got)
			}
		}
	}()
	return out, nil
}

// embeddedTable is a retry table a user wrapped (to add a method, count
// calls): it embeds *retry.Table, so the consumer uses a KeyCache for it.
type embeddedTable struct{ *retry.Table }

// TestDeadLetterIntoTheRetryTableMarksTheKey: a poison message dead-lettered
// into the consumer's own retry table blocks its key, so the key's next
// message, delivered while the poison one was being handled, is parked
// behind it, not handled (L09, L11). The cache must learn of the dead entry
// from the dead-lettering itself, as it does for parks, and not only from
// the listener's announcement: here the listener never listens. Two ways
// of configuring the same table: a wrapper that embeds *retry.Table as the
// RetryTable (DeadLetter defaults to it), and DeadLetter given as a second
// *retry.Table value of the same table and group.
func TestDeadLetterIntoTheRetryTableMarksTheKey(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  func(tbl *retry.Table, pool *pgxpool.Pool) (consumer.RetryTable, consumer.DeadLetterer)
	}{
		{"EmbeddedRetryTable", func(tbl *retry.Table, _ *pgxpool.Pool) (consumer.RetryTable, consumer.DeadLetterer) {
			return embeddedTable{tbl}, nil
		}},
		{"SecondTableValue", func(tbl *retry.Table, pool *pgxpool.Pool) (consumer.RetryTable, consumer.DeadLetterer) {
			dl, err := retry.NewTable(pool, tbl.Config())
			if err != nil {
				t.Fatal(err)
			}
			return tbl, dl
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			group := shortName("g_")
			table := retryTable(t, pgPool(t), group)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			pcfg, err := pgxpool.ParseConfig(testenv.PostgresDSN(t))
			if err != nil {
				t.Fatal(err)
			}
			pcfg.MaxConns = 8
			pcfg.ConnConfig.Tracer = deafTracer{}
			pool, err := pgxpool.NewWithConfig(ctx, pcfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(pool.Close)
			mine, err := retry.NewTable(pool, table.Config())
			if err != nil {
				t.Fatal(err)
			}
			rt, dl := tc.cfg(mine, pool)

			broker := reliabletest.NewBroker(reliabletest.BrokerOptions{Partitions: 1})
			broker.CreateTopic("orders")
			sub := &forwardSubscriber{Subscriber: broker.Subscriber(group, reliabletest.SubscriberOptions{}), want: "next", got: make(chan struct{})}
			var handled handledLog
			ev := newEvents()
			runConsumer(t, sub, reliable.HandlerFunc(func(hctx context.Context, m *reliable.Message) error {
				if m.ID == "poison" {
					// The key's next message is delivered while this one is
					// unsettled: the partition stayed ours, no new load.
					select {
					case <-sub.got:
					case <-hctx.Done():
						return hctx.Err()
					}
					return reliable.Permanent(errors.New("cannot parse"))
				}
				handled.add(m.ID)
				return nil
			}), consumer.Config{Topic: "orders", RetryTable: rt, DeadLetter: dl, DisableRetrier: true, Logger: quiet, Observe: ev.observe})

			publish(t, broker,
				&reliable.Message{ID: "poison", Topic: "orders", Key: "order-1"},
				&reliable.Message{ID: "next", Topic: "orders", Key: "order-1"})
			ev.await(t, "poison", consumer.OutcomeDeadLettered)
			deadline := time.After(10 * time.Second)
			for len(ev.outcomes("next")) == 0 {
				select {
				case <-ev.ch:
				case <-deadline:
					t.Fatal("no outcome for the key's next message in 10s")
				}
			}
			if got := entriesOf(t, table, "order-1"); len(got) == 0 || got[0] != "poison" {
				t.Fatalf("order-1's blocking entries = %v, want the dead poison message first", got)
			}
			if handled.has("next") {
				t.Fatalf("the key's next message was handled (outcomes %v) while the dead poison message blocks the key in the table: order broken",
					ev.outcomes("next"))
			}
			ev.await(t, "next", consumer.OutcomeParked)
		})
	}
}
