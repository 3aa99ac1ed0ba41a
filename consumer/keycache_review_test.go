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

// TestKeyParkedFromAnotherTopicBlocksItInThisOne: the retry table blocks a
// key for its whole group, whatever the topic (its lane is the key), so
// two consumers of one group and table on two topics keep a key's order
// across them: a key parked by the "orders" consumer holds the key's
// messages on "payments" behind it, as Table.Blocked per message did. The
// payments consumer owns its partition throughout (a delivery of another
// key stays unsettled), so no load runs; its listener is down, so only
// an announcement could tell it. The package doc's argument ("a key maps to
// one partition or queue") does not hold across topics.
func TestKeyParkedFromAnotherTopicBlocksItInThisOne(t *testing.T) {
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
	deaf, err := retry.NewTable(pool, table.Config())
	if err != nil {
		t.Fatal(err)
	}

	broker := reliabletest.NewBroker(reliabletest.BrokerOptions{Partitions: 1})
	broker.CreateTopic("orders")
	broker.CreateTopic("payments")
	evOrders := newEvents()
	runConsumer(t, broker.Subscriber(group, reliabletest.SubscriberOptions{}), reliable.HandlerFunc(func(context.Context, *reliable.Message) error {
		return errors.New("downstream unavailable")
	}), consumer.Config{Topic: "orders", RetryTable: table, DisableRetrier: true, Logger: quiet, Observe: evOrders.observe})

	var handled handledLog
	evPay := newEvents()
	holding, letGo := make(chan struct{}), make(chan struct{})
	defer close(letGo)
	runConsumer(t, broker.Subscriber(group, reliabletest.SubscriberOptions{}), reliable.HandlerFunc(func(hctx context.Context, m *reliable.Message) error {
		if m.ID == "pay-hold" {
			close(holding)
			select {
			case <-letGo:
			case <-hctx.Done():
			}
			return nil
		}
		handled.add(m.ID)
		return nil
	}), consumer.Config{Topic: "payments", RetryTable: deaf, DisableRetrier: true, Logger: quiet, Observe: evPay.observe})

	publish(t, broker, &reliable.Message{ID: "pay-hold", Topic: "payments", Key: "order-9"})
	select {
	case <-holding:
	case <-ctx.Done():
		t.Fatal("the payments consumer never handled its first message")
	}
	publish(t, broker, &reliable.Message{ID: "ord-1", Topic: "orders", Key: "order-1"})
	evOrders.await(t, "ord-1", consumer.OutcomeParked)
	if blocked, err := table.Blocked(ctx, "order-1"); err != nil || !blocked {
		t.Fatalf("order-1 blocked = %v, %v; want blocked by the parked orders message", blocked, err)
	}
	publish(t, broker, &reliable.Message{ID: "pay-1", Topic: "payments", Key: "order-1"})
	deadline := time.After(10 * time.Second)
	for len(evPay.outcomes("pay-1")) == 0 {
		select {
		case <-evPay.ch:
		case <-deadline:
			t.Fatal("no outcome for pay-1 in 10s")
		}
	}
	if handled.has("pay-1") {
		t.Fatalf("pay-1 (key order-1) was handled (outcomes %v) while order-1 is blocked in the group's table by ord-1: "+
			"the key's order across topics is broken", evPay.outcomes("pay-1"))
	}
	evPay.await(t, "pay-1", consumer.OutcomeParked)
}
