package outbox_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/outbox"
	"github.com/reliable-go/reliable/reliabletest"
)

// countingPublisher counts confirmed messages.
type countingPublisher struct {
	reliable.Publisher
	n atomic.Int64
}

func (p *countingPublisher) Publish(ctx context.Context, msgs ...*reliable.Message) error {
	err := p.Publisher.Publish(ctx, msgs...)
	if err == nil {
		p.n.Add(int64(len(msgs)))
	}
	return err
}

// downPublisher fails every publish, writing nothing, while down is set: a
// broker that is unreachable.
type downPublisher struct {
	reliable.Publisher
	down  atomic.Bool
	calls atomic.Int64
}

func (p *downPublisher) Publish(ctx context.Context, msgs ...*reliable.Message) error {
	p.calls.Add(1)
	if p.down.Load() {
		return fmt.Errorf("dial tcp 127.0.0.1:9092: connection refused: %w", reliable.ErrNotConfirmed)
	}
	return p.Publisher.Publish(ctx, msgs...)
}

// Broker down while orders keep committing: rows accumulate, no row is
// charged an attempt (an outage kills nothing), the relay backs off instead
// of hammering the broker, and once the broker is back everything drains in
// order (L03, L09).
func TestBrokerDownRowsAccumulateThenDrainInOrder(t *testing.T) {
	t.Parallel()
	db := newTestDB(t, 8)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	broker := reliabletest.NewBroker(reliabletest.BrokerOptions{})
	broker.CreateTopic("orders")
	pub := &downPublisher{Publisher: broker.Publisher()}
	pub.down.Store(true)
	cfg := testConfig()
	cfg.MaxAttempts = 2 // an outage must not count against rows at all
	relay := startRelay(t, db.pool, pub, cfg)

	var order []*reliable.Message
	outage := 3 * time.Second
	start := time.Now()
	for i := 0; time.Since(start) < outage; i++ {
		m := msg("orders", fmt.Sprintf("o-%d", i%10), fmt.Sprint(i))
		if err := addTx(ctx, db.pool, m); err != nil {
			t.Fatal(err)
		}
		order = append(order, m)
		time.Sleep(20 * time.Millisecond)
	}
	if n := db.count(t, `SELECT count(*) FROM reliable_outbox`); n != int64(len(order)) {
		t.Fatalf("%d rows pending during the outage, want %d", n, len(order))
	}
	if n := len(broker.Messages("orders")); n != 0 {
		t.Fatalf("%d messages reached a broker that was down", n)
	}
	calls := pub.calls.Load()
	if calls > 40 {
		t.Errorf("%d publish calls in %s of outage: the relay did not back off", calls, outage)
	}
	// L18: the backlog is visible as pending rows and the oldest one's age.
	st, err := outbox.ReadStatus(ctx, db.pool)
	if err != nil {
		t.Fatal(err)
	}
	if st.Pending != int64(len(order)) || st.Dead != 0 || st.OldestPending < outage/2 {
		t.Fatalf("status during outage: %+v", st)
	}

	pub.down.Store(false)
	waitFor(t, 20*time.Second, "backlog drained", func() bool { return db.count(t, `SELECT count(*) FROM reliable_outbox`) == 0 })
	seen, _ := firstSeen(broker.Messages("orders"))
	want := map[string][]string{}
	for _, m := range order {
		want[m.Key] = append(want[m.Key], m.ID)
	}
	for k, ids := range want {
		if fmt.Sprint(seen[k]) != fmt.Sprint(ids) {
			t.Fatalf("key %s drained as %v, want %v", k, seen[k], ids)
		}
	}
	if s := relay.Stats(); s.Outages == 0 || s.Dead != 0 || s.Published < uint64(len(order)) {
		t.Fatalf("stats %+v", s)
	}
	t.Logf("%d rows accumulated over %s, drained in order; %d publish calls during the outage", len(order), outage, calls)
}

// poisonPublisher fails the messages whose payload is listed, while letting
// the rest of the batch through: a per-message failure.
type poisonPublisher struct {
	reliable.Publisher
	mu     sync.Mutex
	poison map[string]error // payload -> error
}

func (p *poisonPublisher) setPoison(payload string, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err == nil {
		delete(p.poison, payload)
	} else {
		p.poison[payload] = err
	}
}

func (p *poisonPublisher) Publish(ctx context.Context, msgs ...*reliable.Message) error {
	p.mu.Lock()
	var ok []*reliable.Message
	var failed []reliable.MessageError
	for _, m := range msgs {
		if err := p.poison[string(m.Payload)]; err != nil {
			failed = append(failed, reliable.MessageError{MessageID: m.ID, Err: err})
		} else {
			ok = append(ok, m)
		}
	}
	p.mu.Unlock()
	if len(ok) > 0 {
		if err := p.Publisher.Publish(ctx, ok...); err != nil {
			return err
		}
	}
	if len(failed) > 0 {
		return &reliable.PublishError{Failed: failed}
	}
	return nil
}

type deadSink struct {
	mu   sync.Mutex
	rows []outbox.DeadRow
}

func (s *deadSink) Notify(_ context.Context, r outbox.DeadRow) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rows = append(s.rows, r)
	return nil
}

func (s *deadSink) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.rows)
}

// A permanent failure (message too large, L13) makes a row dead at once; a
// row that keeps failing while others succeed becomes dead after
// MaxAttempts. Either way the notifier hears of it, the row's key is blocked
// (later rows wait, in order) while other keys go on, and an operator's
// Retry or Discard resumes the key (L09, L11).
func TestDeadRowsBlockTheirKeyUntilRetriedOrDiscarded(t *testing.T) {
	t.Parallel()
	db := newTestDB(t, 8)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	broker := reliabletest.NewBroker(reliabletest.BrokerOptions{})
	broker.CreateTopic("orders")
	pub := &poisonPublisher{Publisher: broker.Publisher(), poison: map[string]error{
		"too-big": &reliable.MessageTooLargeError{Size: 2 << 20, Max: 1 << 20},
		"flaky":   errors.New("partition leader unavailable"),
	}}
	sink := &deadSink{}
	cfg := testConfig()
	cfg.MaxAttempts = 3
	cfg.Notifier = sink
	startRelay(t, db.pool, pub, cfg)

	a1, a2 := msg("orders", "a", "too-big"), msg("orders", "a", "after-a")
	b1, b2 := msg("orders", "b", "flaky"), msg("orders", "b", "after-b")
	for _, m := range []*reliable.Message{a1, a2, b1, b2} {
		if err := addTx(ctx, db.pool, m); err != nil {
			t.Fatal(err)
		}
	}
	// Keep other keys flowing so b1's failures are per-message, not an outage.
	stop := make(chan struct{})
	var feeder sync.WaitGroup
	feeder.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			_ = addTx(ctx, db.pool, msg("orders", fmt.Sprintf("c-%d", i), "fine"))
		}
	})
	defer func() { close(stop); feeder.Wait() }()

	waitFor(t, 20*time.Second, "two dead rows", func() bool { return sink.len() == 2 })
	st, err := outbox.ReadStatus(ctx, db.pool)
	if err != nil {
		t.Fatal(err)
	}
	if st.Dead != 2 {
		t.Fatalf("status %+v, want 2 dead", st)
	}
	dead, err := outbox.DeadRows(ctx, db.pool, 10)
	if err != nil || len(dead) != 2 {
		t.Fatalf("dead rows %v, %v", dead, err)
	}
	byMsg := map[string]outbox.DeadRow{}
	for _, r := range sink.rows {
		byMsg[r.Message.ID] = r
	}
	if r := byMsg[a1.ID]; r.Attempts != 1 || !errors.Is(r.Err, reliable.ErrMessageTooLarge) || !r.KeyBlocked {
		t.Fatalf("too-big notified as %+v, want dead after 1 attempt", r)
	}
	if r := byMsg[b1.ID]; r.Attempts != 3 {
		t.Fatalf("flaky notified as %+v, want dead after 3 attempts", r)
	}
	time.Sleep(500 * time.Millisecond)
	for _, m := range broker.Messages("orders") {
		if m.Key == "a" || m.Key == "b" {
			t.Fatalf("%s published although its key is blocked by a dead row", m)
		}
	}
	if err := outbox.Retry(ctx, db.pool, 1<<40); !errors.Is(err, outbox.ErrNotFound) {
		t.Fatalf("Retry of a missing row: %v", err)
	}

	// The operator discards the too-big message and fixes the flaky one.
	ids := map[string]int64{}
	for _, r := range dead {
		ids[r.Message.ID] = r.ID
	}
	if err := outbox.Discard(ctx, db.pool, ids[a1.ID]); err != nil {
		t.Fatal(err)
	}
	pub.setPoison("flaky", nil)
	if err := outbox.Retry(ctx, db.pool, ids[b1.ID]); err != nil {
		t.Fatal(err)
	}
	if err := outbox.Retry(ctx, db.pool, ids[b1.ID]); err != nil && !errors.Is(err, outbox.ErrNotDead) && !errors.Is(err, outbox.ErrNotFound) {
		t.Fatalf("second Retry: %v", err)
	}
	waitFor(t, 10*time.Second, "keys a and b resumed", func() bool {
		seen, _ := firstSeen(broker.Messages("orders"))
		return len(seen["a"]) == 1 && len(seen["b"]) == 2
	})
	seen, _ := firstSeen(broker.Messages("orders"))
	if seen["a"][0] != a2.ID || seen["b"][0] != b1.ID || seen["b"][1] != b2.ID {
		t.Fatalf("a: %v, b: %v", seen["a"], seen["b"])
	}
	if n := db.count(t, `SELECT count(*) FROM reliable_outbox_archive WHERE discarded AND msg_id = $1`, a1.ID); n != 1 {
		t.Fatalf("discarded row not archived")
	}
}

// Archive mode keeps sent rows for the retention, then cleanup deletes them
// in bounded batches; unused key-lock rows and stale leases go too (L17).
func TestArchiveAndRetentionCleanupInBatches(t *testing.T) {
	t.Parallel()
	db := newTestDB(t, 8)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	broker := reliabletest.NewBroker(reliabletest.BrokerOptions{})
	broker.CreateTopic("orders")
	cfg := testConfig()
	cfg.Sent = outbox.Archive
	cfg.Retention = time.Hour
	cfg.CleanupBatchSize = 7
	relay := startRelay(t, db.pool, broker.Publisher(), cfg)
	for i := range 50 {
		if err := addTx(ctx, db.pool, msg("orders", fmt.Sprintf("o-%d", i%5), "x")); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 10*time.Second, "all archived", func() bool {
		return db.count(t, `SELECT count(*) FROM reliable_outbox_archive`) == 50
	})
	if n := db.count(t, `SELECT count(*) FROM reliable_outbox`); n != 0 {
		t.Fatalf("%d rows left pending", n)
	}
	// Within retention nothing goes.
	if _, err := relay.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	if n := db.count(t, `SELECT count(*) FROM reliable_outbox_archive`); n != 50 {
		t.Fatalf("cleanup deleted rows within retention: %d left", n)
	}
	// Age 30 rows past the retention, and the key-lock rows past a minute.
	if _, err := db.pool.Exec(ctx, `UPDATE reliable_outbox_archive SET sent_at = now() - interval '2 hours'
		WHERE id IN (SELECT id FROM reliable_outbox_archive ORDER BY id LIMIT 30)`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.pool.Exec(ctx, `UPDATE reliable_outbox_keys SET locked_at = now() - interval '2 minutes'`); err != nil {
		t.Fatal(err)
	}
	n, err := relay.Cleanup(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if left := db.count(t, `SELECT count(*) FROM reliable_outbox_archive`); left != 20 {
		t.Fatalf("%d archived rows left, want 20", left)
	}
	if left := db.count(t, `SELECT count(*) FROM reliable_outbox_keys`); left != 0 {
		t.Fatalf("%d key-lock rows left", left)
	}
	t.Logf("cleanup deleted %d rows in batches of %d", n, cfg.CleanupBatchSize)
}

func TestConfigValidateListsEveryProblem(t *testing.T) {
	t.Parallel()
	err := outbox.Config{MaxKeys: -1, BatchSize: -2, LeaseTTL: 4 * time.Second, PublishTimeout: 3 * time.Second, Sent: 9}.Validate()
	var ce *reliable.ConfigError
	if !errors.As(err, &ce) || !errors.Is(err, reliable.ErrInvalidConfig) || len(ce.Problems) != 4 {
		t.Fatalf("Validate = %v, want 4 problems", err)
	}
	if err := (outbox.Config{}).Validate(); err != nil {
		t.Fatalf("zero config: %v", err)
	}
}

// L06: a destination that stops confirming while others work (a Kafka
// partition without leader during an election, a queue whose node restarts)
// must cost its rows nothing, however long it lasts: the found bug was a
// relay that charged them, so after the brokers came back from an outage
// rows of the partitions that elected leaders last ended dead and blocked
// their keys. Meanwhile the other keys keep flowing, and when the
// destination is back its rows go out in order.
func TestUnconfirmedDestinationNeverKillsRowsWhileOthersFlow(t *testing.T) {
	t.Parallel()
	db := newTestDB(t, 8)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	broker := reliabletest.NewBroker(reliabletest.BrokerOptions{})
	broker.CreateTopic("orders")
	notConfirmed := fmt.Errorf("kafka: stopped waiting for the acknowledgement: %w: %w", reliable.ErrNotConfirmed, context.DeadlineExceeded)
	pub := &poisonPublisher{Publisher: broker.Publisher(), poison: map[string]error{"stuck-1": notConfirmed}}
	sink := &deadSink{}
	cfg := testConfig()
	cfg.MaxAttempts = 2
	cfg.Notifier = sink
	relay := startRelay(t, db.pool, pub, cfg)

	s1, s2 := msg("orders", "s", "stuck-1"), msg("orders", "s", "stuck-2")
	if err := addTx(ctx, db.pool, s1, s2); err != nil {
		t.Fatal(err)
	}
	for i := range 40 {
		if err := addTx(ctx, db.pool, msg("orders", fmt.Sprintf("c-%d", i), "fine")); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond) // two seconds of other keys flowing past the stuck one
	}
	waitFor(t, 20*time.Second, "the other keys published", func() bool { return len(broker.Messages("orders")) == 40 })
	st := relay.Stats()
	if sink.len() != 0 || st.Dead != 0 || st.Failures < 3 {
		t.Fatalf("relay %+v, dead notified %d: want several uncharged failures and no dead row", st, sink.len())
	}
	if n := db.count(t, `SELECT coalesce(max(attempts), 0) FROM reliable_outbox`); n != 0 {
		t.Fatalf("a row was charged %d attempts for a destination that did not confirm", n)
	}
	pub.setPoison("stuck-1", nil)
	waitFor(t, 20*time.Second, "the stuck key published", func() bool { return len(broker.Messages("orders")) >= 42 })
	got, _ := firstSeen(broker.Messages("orders"))
	if fmt.Sprint(got["s"]) != fmt.Sprint([]string{s1.ID, s2.ID}) {
		t.Fatalf("key s published as %v, want %v then %v", got["s"], s1.ID, s2.ID)
	}
	t.Logf("relay %+v", relay.Stats())
}
