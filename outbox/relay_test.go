package outbox_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/outbox"
	"github.com/reliable-go/reliable/reliabletest"
)

// quiet discards logs unless RELIABLE_TEST_LOG is set, which sends them to
// stderr (for diagnosing a failing fault test).
var quiet = func() *slog.Logger {
	if os.Getenv("RELIABLE_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}()

// testConfig is a relay config with short intervals for tests.
func testConfig() outbox.Config {
	return outbox.Config{
		PollInterval:   200 * time.Millisecond,
		LeaseTTL:       3 * time.Second,
		PublishTimeout: time.Second,
		Backoff:        reliable.Backoff{Initial: 20 * time.Millisecond, Max: 200 * time.Millisecond},
		Logger:         quiet,
	}
}

// startRelay runs a relay until the test ends.
func startRelay(t *testing.T, pool *pgxpool.Pool, pub reliable.Publisher, cfg outbox.Config) *outbox.Relay {
	t.Helper()
	r, err := outbox.NewRelay(pool, pub, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("relay Run: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Errorf("relay did not stop")
		}
	})
	return r
}

// addTx adds msgs in one committed transaction.
func addTx(ctx context.Context, pool *pgxpool.Pool, msgs ...*reliable.Message) error {
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		return outbox.Add(ctx, tx, msgs...)
	})
}

func msg(topic, key, body string) *reliable.Message {
	return &reliable.Message{Topic: topic, Key: key, Type: "order.event", Payload: []byte(body)}
}

// firstSeen dedupes msgs by ID, as a consumer's idempotency store does, and
// returns the IDs per key in the order first seen, plus the duplicate count.
func firstSeen(msgs []*reliable.Message) (map[string][]string, int) {
	seen := map[string]bool{}
	perKey := map[string][]string{}
	dups := 0
	for _, m := range msgs {
		if seen[m.ID] {
			dups++
			continue
		}
		seen[m.ID] = true
		perKey[m.Key] = append(perKey[m.Key], m.ID)
	}
	return perKey, dups
}

func TestAddRollbackPublishesNothingCommitPublishesExactlyTheTx(t *testing.T) {
	t.Parallel()
	db := newTestDB(t, 8)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	broker := reliabletest.NewBroker(reliabletest.BrokerOptions{})
	broker.CreateTopic("orders")

	// Rolled back: the business change and its message vanish together.
	tx, err := db.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rolledBack := msg("orders", "o-1", "placed")
	if err := outbox.Add(ctx, tx, rolledBack); err != nil {
		t.Fatal(err)
	}
	if rolledBack.ID == "" {
		t.Fatal("Add did not set the message ID")
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}

	committed := []*reliable.Message{msg("orders", "o-2", "placed"), msg("orders", "o-2", "paid"), msg("orders", "", "no key")}
	committed[2].Headers = map[string]string{"tenant": "t1"}
	if err := addTx(ctx, db.pool, committed...); err != nil {
		t.Fatal(err)
	}
	startRelay(t, db.pool, broker.Publisher(), testConfig())
	waitFor(t, 10*time.Second, "3 messages", func() bool { return len(broker.Messages("orders")) >= 3 })
	waitFor(t, 10*time.Second, "outbox empty", func() bool { return db.count(t, `SELECT count(*) FROM reliable_outbox`) == 0 })
	time.Sleep(300 * time.Millisecond) // nothing else may arrive

	got := broker.Messages("orders")
	if len(got) != 3 {
		t.Fatalf("broker has %d messages, want exactly the 3 committed", len(got))
	}
	byID := map[string]*reliable.Message{}
	for _, m := range got {
		byID[m.ID] = m
	}
	for _, want := range committed {
		m := byID[want.ID]
		if m == nil {
			t.Fatalf("committed message %s missing", want)
		}
		if string(m.Payload) != string(want.Payload) || m.Key != want.Key || m.Type != want.Type || m.Topic != want.Topic ||
			m.Headers["tenant"] != want.Headers["tenant"] || !m.Time.Equal(want.Time.Truncate(time.Microsecond)) {
			t.Errorf("published %+v, want %+v", m, want)
		}
	}
	if byID[rolledBack.ID] != nil {
		t.Fatal("rolled-back message was published")
	}
	perKey, _ := firstSeen(got)
	if ids := perKey["o-2"]; len(ids) != 2 || ids[0] != committed[0].ID || ids[1] != committed[1].ID {
		t.Fatalf("o-2 published as %v, want placed then paid", ids)
	}
}

func TestAddRejectsInvalidMessagesWritingNothing(t *testing.T) {
	t.Parallel()
	db := newTestDB(t, 4)
	ctx := context.Background()
	err := addTx(ctx, db.pool, msg("orders", "k", "ok"), &reliable.Message{Key: "k"})
	if !errors.Is(err, reliable.ErrInvalidMessage) {
		t.Fatalf("err = %v, want ErrInvalidMessage", err)
	}
	if n := db.count(t, `SELECT count(*) FROM reliable_outbox`); n != 0 {
		t.Fatalf("%d rows written", n)
	}
}

// blockingPublisher holds every Publish that contains a message of key until
// release is closed.
type blockingPublisher struct {
	reliable.Publisher
	key     string
	entered chan struct{}
	release chan struct{}
	once    sync.Once
}

func (p *blockingPublisher) Publish(ctx context.Context, msgs ...*reliable.Message) error {
	for _, m := range msgs {
		if m.Key == p.key {
			p.once.Do(func() { close(p.entered) })
			select {
			case <-p.release:
			case <-ctx.Done():
				return ctx.Err()
			}
			break
		}
	}
	return p.Publisher.Publish(ctx, msgs...)
}

// A second relay must never take a key whose head row is in flight at the
// first relay, even though that row is not locked by any transaction: with
// FOR UPDATE SKIP LOCKED on rows alone, relay B would skip the locked head
// and publish the key's next row first (L08).
func TestSecondRelayNeverTakesAKeyInFlightElsewhere(t *testing.T) {
	t.Parallel()
	db := newTestDB(t, 16)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	broker := reliabletest.NewBroker(reliabletest.BrokerOptions{})
	broker.CreateTopic("orders")
	placed, paid := msg("orders", "hot", "placed"), msg("orders", "hot", "paid")
	if err := addTx(ctx, db.pool, placed); err != nil {
		t.Fatal(err)
	}
	if err := addTx(ctx, db.pool, paid); err != nil {
		t.Fatal(err)
	}

	blockA := &blockingPublisher{Publisher: broker.Publisher(), key: "hot", entered: make(chan struct{}), release: make(chan struct{})}
	cfgA := testConfig()
	cfgA.Instance = "relay-a"
	cfgA.PublishTimeout = 1200 * time.Millisecond // below LeaseTTL/2
	startRelay(t, db.pool, blockA, cfgA)
	<-blockA.entered // A publishes "placed" and hangs before the confirm

	cfgB := testConfig()
	cfgB.Instance = "relay-b"
	startRelay(t, db.pool, broker.Publisher(), cfgB)
	for i := range 20 {
		if err := addTx(ctx, db.pool, msg("orders", fmt.Sprintf("other-%d", i), "x")); err != nil {
			t.Fatal(err)
		}
	}
	// B works: it relays the other keys, and must leave "hot" alone.
	waitFor(t, 10*time.Second, "other keys relayed", func() bool { return len(broker.Messages("orders")) >= 20 })
	for _, m := range broker.Messages("orders") {
		if m.Key == "hot" {
			t.Fatalf("relay B published %s while relay A had the key's head in flight", m)
		}
	}
	close(blockA.release)
	waitFor(t, 15*time.Second, "hot relayed", func() bool {
		perKey, _ := firstSeen(broker.Messages("orders"))
		return len(perKey["hot"]) == 2
	})
	perKey, _ := firstSeen(broker.Messages("orders"))
	if got := perKey["hot"]; got[0] != placed.ID || got[1] != paid.ID {
		t.Fatalf("hot published out of order: %v", got)
	}
}
