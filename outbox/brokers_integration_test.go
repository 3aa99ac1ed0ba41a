package outbox_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/adapters/kafka"
	"github.com/reliable-go/reliable/adapters/rabbitmq"
	"github.com/reliable-go/reliable/idempotency"
	"github.com/reliable-go/reliable/internal/testenv"
	"github.com/reliable-go/reliable/outbox"
)

// The outbox on the real brokers: the relay publishes through each adapter's
// drop-in durable producer (kafka.NewProducer, rabbitmq.NewProducer), and a
// real subscriber of the same adapter verifies what arrived.

// childPublisher builds the publisher of the relay child process.
func childPublisher(kind, endpoint string) (reliable.Publisher, error) {
	switch kind {
	case "kafka":
		return kafka.NewProducer(kafka.Config{Brokers: strings.Split(endpoint, ","), Logger: quiet})
	case "rabbitmq":
		return rabbitmq.NewProducer(endpoint)
	default:
		return &filePublisher{path: endpoint}, nil
	}
}

// brokerKit is one real broker with a fresh topic.
type brokerKit struct {
	kind, endpoint, topic string
	subscribe             func(t *testing.T, ctx context.Context) (<-chan *reliable.Delivery, func())
}

func kafkaKit(t *testing.T, brokers []string) *brokerKit {
	topic := testenv.UniqueName(t, "outbox")
	testenv.CreateTopic(t, brokers, topic, 8)
	return &brokerKit{kind: "kafka", endpoint: strings.Join(brokers, ","), topic: topic,
		subscribe: func(t *testing.T, ctx context.Context) (<-chan *reliable.Delivery, func()) {
			sub, err := kafka.NewSubscriber(kafka.Config{Brokers: brokers, Logger: quiet,
				Consumer: kafka.ConsumerConfig{Group: testenv.UniqueName(t, "verify")}})
			if err != nil {
				t.Fatal(err)
			}
			ch, err := sub.Subscribe(ctx, topic)
			if err != nil {
				t.Fatal(err)
			}
			return ch, func() { _ = sub.Close() }
		}}
}

func rabbitKit(t *testing.T, url string) *brokerKit {
	topic := testenv.UniqueName(t, "outbox")
	ctx := testenv.Context(t, 30*time.Second)
	if err := rabbitmq.Declare(ctx, url, topic, []string{"verify"}); err != nil {
		t.Fatal(err)
	}
	return &brokerKit{kind: "rabbitmq", endpoint: url, topic: topic,
		subscribe: func(t *testing.T, ctx context.Context) (<-chan *reliable.Delivery, func()) {
			sub, err := rabbitmq.NewSubscriber(url, "verify")
			if err != nil {
				t.Fatal(err)
			}
			ch, err := sub.Subscribe(ctx, topic)
			if err != nil {
				t.Fatal(err)
			}
			return ch, func() { _ = sub.Close() }
		}}
}

func (k *brokerKit) publisher(t *testing.T) reliable.Publisher {
	t.Helper()
	p, err := childPublisher(k.kind, k.endpoint)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

// consumer acks every delivery and applies each message ID once, through an
// idempotency store, as the SDK's consumer does (L20).
type consumer struct {
	mu      sync.Mutex
	all     []*reliable.Message
	applied map[string][]string // key -> IDs in applied order
	count   int
	dups    int
	store   *idempotency.MemoryStore
}

func (k *brokerKit) consume(t *testing.T) *consumer {
	ctx, cancel := context.WithCancel(context.Background())
	ch, closeSub := k.subscribe(t, ctx)
	c := &consumer{applied: map[string][]string{}, store: idempotency.NewMemory()}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for d := range ch {
			m := d.Message
			c.mu.Lock()
			c.all = append(c.all, m)
			st, err := c.store.Begin(ctx, m.ID)
			if err == nil && st == idempotency.StatusNew {
				c.applied[m.Key] = append(c.applied[m.Key], m.ID)
				c.count++
				_ = c.store.Done(ctx, m.ID)
			} else if st == idempotency.StatusDone {
				c.dups++
			}
			c.mu.Unlock()
			_ = d.Ack(ctx)
		}
	}()
	t.Cleanup(func() {
		cancel()
		closeSub()
		<-done
	})
	return c
}

func (c *consumer) distinct() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.count
}

// check asserts every message of want was applied once, per key in order.
func (c *consumer) check(t *testing.T, want map[string][]string) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for k, ids := range want {
		n += len(ids)
		if fmt.Sprint(c.applied[k]) != fmt.Sprint(ids) {
			t.Fatalf("key %s applied as %v, want %v", k, c.applied[k], ids)
		}
	}
	if c.count != n {
		t.Fatalf("applied %d messages, want %d", c.count, n)
	}
}

func eachBroker(t *testing.T, f func(t *testing.T, k *brokerKit)) {
	t.Run("kafka", func(t *testing.T) {
		t.Parallel()
		f(t, kafkaKit(t, testenv.Kafka(t)))
	})
	t.Run("rabbitmq", func(t *testing.T) {
		t.Parallel()
		f(t, rabbitKit(t, testenv.AMQPURL(t)))
	})
}

func TestRealBrokersRollbackPublishesNothingCommitExactlyTheTx(t *testing.T) {
	eachBroker(t, func(t *testing.T, k *brokerKit) {
		db := newTestDB(t, 8)
		ctx := testenv.Context(t, 60*time.Second)
		c := k.consume(t)
		startRelay(t, db.pool, k.publisher(t), testConfig())

		tx, err := db.pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		rolledBack := msg(k.topic, "o-1", "placed")
		if err := outbox.Add(ctx, tx, rolledBack); err != nil {
			t.Fatal(err)
		}
		if err := tx.Rollback(ctx); err != nil {
			t.Fatal(err)
		}
		committed := []*reliable.Message{msg(k.topic, "o-2", "placed"), msg(k.topic, "o-2", "paid"), msg(k.topic, "o-3", "placed")}
		if err := addTx(ctx, db.pool, committed...); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 30*time.Second, "3 messages consumed", func() bool { return c.distinct() >= 3 })
		time.Sleep(time.Second) // nothing else may arrive
		c.check(t, map[string][]string{"o-2": {committed[0].ID, committed[1].ID}, "o-3": {committed[2].ID}})
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, m := range c.all {
			if m.ID == rolledBack.ID {
				t.Fatal("rolled-back message reached the broker")
			}
			if m.Topic != k.topic || m.Type != "order.event" {
				t.Fatalf("delivered %s type %q", m, m.Type)
			}
		}
	})
}

// kill -9 of the relay process right after the broker confirmed and before
// the rows were deleted; after a restart the rows go out again, the
// consumer's dedupe absorbs the repeats, nothing is lost (L03, L20).
func TestRealBrokersRelayKilledBetweenConfirmAndMark(t *testing.T) {
	eachBroker(t, func(t *testing.T, k *brokerKit) {
		db := newTestDB(t, 8)
		ctx := testenv.Context(t, 120*time.Second)
		want := map[string][]string{}
		for i := range 40 {
			m := msg(k.topic, fmt.Sprintf("o-%d", i%4), fmt.Sprint(i))
			if err := addTx(ctx, db.pool, m); err != nil {
				t.Fatal(err)
			}
			want[m.Key] = append(want[m.Key], m.ID)
		}
		cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), childEnv+"=kill-after-confirm", childDSNEnv+"="+db.dsn,
			childSchemaEnv+"="+db.schema, childBrokerEnv+"="+k.kind, childFileEnv+"="+k.endpoint)
		out, err := cmd.CombinedOutput()
		var exitErr *exec.ExitError
		if !errors.As(err, &exitErr) || exitErr.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("child relay did not die by SIGKILL: %v\n%s", err, out)
		}
		if n := db.count(t, `SELECT count(*) FROM reliable_outbox`); n != 40 {
			t.Fatalf("%d rows pending after the kill, want 40", n)
		}
		c := k.consume(t)
		waitFor(t, 30*time.Second, "the killed relay's messages on the broker", func() bool { return c.distinct() > 0 })
		time.Sleep(2 * time.Second) // let the rest of its batch arrive
		before := c.distinct()

		startRelay(t, db.pool, k.publisher(t), testConfig())
		waitFor(t, 60*time.Second, "all 40 applied", func() bool { return c.distinct() == 40 })
		waitFor(t, 30*time.Second, "repeats delivered", func() bool {
			c.mu.Lock()
			defer c.mu.Unlock()
			return c.dups >= before
		})
		c.check(t, want)
		t.Logf("%s: the killed relay got %d messages confirmed; after restart all 40 applied once in order, %d repeats absorbed",
			k.kind, before, c.dups)
	})
}

// Two relays at once, 10k rows over 100 keys from concurrent transactions;
// the consumer on the real broker sees every message in commit order per key
// (L08, L12).
func TestRealBrokersTwoRelaysTenThousandRows(t *testing.T) {
	if testing.Short() {
		t.Skip("long")
	}
	eachBroker(t, func(t *testing.T, k *brokerKit) {
		db := newTestDB(t, 24)
		ctx := testenv.Context(t, 180*time.Second)
		if _, err := db.pool.Exec(ctx, `CREATE TABLE ledger (key text, n int, msg_id text, PRIMARY KEY (key, n))`); err != nil {
			t.Fatal(err)
		}
		c := k.consume(t)
		for i := range 2 {
			cfg := testConfig()
			cfg.Instance = fmt.Sprintf("relay-%d", i)
			cfg.MaxKeys = 60
			cfg.LeaseTTL = 10 * time.Second
			cfg.PublishTimeout = 4 * time.Second
			startRelay(t, db.pool, k.publisher(t), cfg)
		}
		const keys, perTx, txs, writers = 100, 5, 2000, 16
		var wg sync.WaitGroup
		errs := make(chan error, writers)
		for w := range writers {
			wg.Go(func() {
				rng := rand.New(rand.NewPCG(uint64(w), 2))
				for range txs / writers {
					key := fmt.Sprintf("order-%d", rng.IntN(keys))
					err := pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
						msgs := make([]*reliable.Message, perTx)
						for i := range msgs {
							msgs[i] = msg(k.topic, key, "e")
						}
						if err := outbox.Add(ctx, tx, msgs...); err != nil {
							return err
						}
						for _, m := range msgs {
							if _, err := tx.Exec(ctx, `INSERT INTO ledger
								SELECT $1, coalesce(max(n), 0) + 1, $2 FROM ledger WHERE key = $1`, key, m.ID); err != nil {
								return err
							}
						}
						return nil
					})
					if err != nil {
						errs <- err
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		const total = txs * perTx
		waitFor(t, 150*time.Second, "10k messages consumed", func() bool { return c.distinct() >= total })
		rows, err := db.pool.Query(ctx, `SELECT key, msg_id FROM ledger ORDER BY key, n`)
		if err != nil {
			t.Fatal(err)
		}
		want := map[string][]string{}
		for rows.Next() {
			var key, id string
			if err := rows.Scan(&key, &id); err != nil {
				t.Fatal(err)
			}
			want[key] = append(want[key], id)
		}
		c.check(t, want)
		t.Logf("%s: %d messages applied in commit order per key, %d repeats", k.kind, total, c.dups)
	})
}

// orderWriter commits one order event every interval over keys, from one
// goroutine, so commit order is the order of its loop, and records each
// key's message IDs in that order: the ledger the consumer is checked
// against.
type orderWriter struct {
	mu   sync.Mutex
	want map[string][]string
	stop chan struct{}
	done sync.WaitGroup
	once sync.Once
}

func startOrderWriter(t *testing.T, ctx context.Context, pool *pgxpool.Pool, topic string, keys int, interval time.Duration) *orderWriter {
	w := &orderWriter{want: map[string][]string{}, stop: make(chan struct{})}
	w.done.Go(func() {
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-w.stop:
				return
			case <-tick.C:
			}
			m := msg(topic, fmt.Sprintf("order-%d", i%keys), fmt.Sprint(i))
			if err := addTx(ctx, pool, m); err != nil {
				t.Error(err)
				return
			}
			w.mu.Lock()
			w.want[m.Key] = append(w.want[m.Key], m.ID)
			w.mu.Unlock()
		}
	})
	t.Cleanup(w.Stop)
	return w
}

// Stop ends the writer and waits for its last commit.
func (w *orderWriter) Stop() {
	w.once.Do(func() { close(w.stop); w.done.Wait() })
}

// consumeAll consumes k's topic until every order of w (stopped) arrived,
// and checks each was applied once, in commit order per key.
func (k *brokerKit) consumeAll(t *testing.T, w *orderWriter) *consumer {
	t.Helper()
	w.Stop()
	total := 0
	for _, ids := range w.want {
		total += len(ids)
	}
	c := k.consume(t)
	waitFor(t, time.Minute, "every order consumed", func() bool { return c.distinct() >= total })
	c.check(t, w.want)
	return c
}
