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
	"github.com/reliable-go/reliable/reliabletest"
)

// heldConfirms is an in-memory AsyncPublisher (a test fake over
// reliabletest's broker) that holds the confirms of one key until release
// is closed, like a partition whose leader is being elected while the
// others confirm. Publish, the batch path, holds the whole call the same
// way, as a real batch waits for its slowest message.
type heldConfirms struct {
	reliable.Publisher
	key     string
	release chan struct{}
	entered chan struct{} // closed when a message of key was first handed over
	once    sync.Once
	async   bool
}

func (p *heldConfirms) holds(msgs ...*reliable.Message) bool {
	for _, m := range msgs {
		if m.Key == p.key {
			p.once.Do(func() { close(p.entered) })
			return true
		}
	}
	return false
}

func (p *heldConfirms) Publish(ctx context.Context, msgs ...*reliable.Message) error {
	if p.holds(msgs...) {
		select {
		case <-p.release:
		case <-ctx.Done():
			return fmt.Errorf("held: %w: %w", reliable.ErrNotConfirmed, ctx.Err())
		}
	}
	return p.Publisher.Publish(ctx, msgs...)
}

func (p *heldConfirms) PublishAsync(_ context.Context, msg *reliable.Message, done func(*reliable.Message, error)) error {
	if !p.async {
		return errors.ErrUnsupported
	}
	msg.EnsureID()
	held := p.holds(msg)
	go func() {
		if held {
			<-p.release
		}
		done(msg, p.Publisher.Publish(context.Background(), msg))
	}()
	return nil
}

// TestSlowConfirmDoesNotHoldOtherKeys: with a publisher that confirms each
// message on its own, the rows published in the same batch as a row whose
// confirm is held (a partition without leader) are confirmed and marked at
// once, instead of waiting for it until PublishTimeout; the held key keeps
// its order. With the batch path (async false) the same test fails: every
// row of the batch waits for the held one.
func TestSlowConfirmDoesNotHoldOtherKeys(t *testing.T) {
	t.Parallel()
	db := newTestDB(t, 8)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	broker := reliabletest.NewBroker(reliabletest.BrokerOptions{})
	broker.CreateTopic("orders")
	pub := &heldConfirms{Publisher: broker.Publisher(), key: "slow", release: make(chan struct{}),
		entered: make(chan struct{}), async: true}
	cfg := testConfig()
	cfg.PublishTimeout = 3 * time.Second // far above the others' latency, even on a loaded machine
	cfg.LeaseTTL = 10 * time.Second
	relay := startRelay(t, db.pool, pub, cfg)

	// One transaction, so the relay claims the keys together and the held
	// row shares its batch with the others.
	s1, s2 := msg("orders", "slow", "slow-1"), msg("orders", "slow", "slow-2")
	batch := []*reliable.Message{s1, s2}
	for i := range 30 {
		batch = append(batch, msg("orders", fmt.Sprintf("k-%d", i), "fine"))
	}
	if err := addTx(ctx, db.pool, batch...); err != nil {
		t.Fatal(err)
	}
	committed := time.Now()
	select {
	case <-pub.entered:
	case <-ctx.Done():
		t.Fatal("the held row was never published")
	}
	waitFor(t, 10*time.Second, "the other keys published", func() bool { return len(broker.Messages("orders")) >= 30 })
	took := time.Since(committed)
	// Rows confirmed while the held one waits are marked too, not just sent.
	waitFor(t, 5*time.Second, "the other keys marked", func() bool {
		return db.count(t, `SELECT count(*) FROM reliable_outbox`) == 2
	})
	if took >= cfg.PublishTimeout/2 {
		t.Fatalf("the other keys took %s to be confirmed while one key's confirm was held; want far below PublishTimeout %s",
			took, cfg.PublishTimeout)
	}
	for _, m := range broker.Messages("orders") {
		if m.Key == "slow" {
			t.Fatalf("a message of the held key was published before its confirm: %s", m.Payload)
		}
	}

	time.Sleep(cfg.PublishTimeout + 200*time.Millisecond) // let the held publish time out once
	close(pub.release)
	waitFor(t, 20*time.Second, "the held key published", func() bool {
		return db.count(t, `SELECT count(*) FROM reliable_outbox`) == 0
	})
	got, _ := firstSeen(broker.Messages("orders"))
	if fmt.Sprint(got["slow"]) != fmt.Sprint([]string{s1.ID, s2.ID}) {
		t.Fatalf("key slow published as %v, want %v then %v", got["slow"], s1.ID, s2.ID)
	}
	st := relay.Stats()
	if st.Dead != 0 {
		t.Fatalf("relay %+v: a held confirm must not kill a row", st)
	}
	t.Logf("other keys confirmed %s after commit; relay %+v", took.Round(time.Millisecond), st)
}

// failingAsync is an in-memory AsyncPublisher (a test fake over
// reliabletest's broker) that, while down, reports every message as not
// confirmed after a short wait, like a cluster that stopped acknowledging.
type failingAsync struct {
	reliable.Publisher
	down atomic.Bool
}

func (p *failingAsync) PublishAsync(_ context.Context, msg *reliable.Message, done func(*reliable.Message, error)) error {
	msg.EnsureID()
	go func() {
		if p.down.Load() {
			time.Sleep(100 * time.Millisecond)
			done(msg, fmt.Errorf("fake: %w", reliable.ErrNotConfirmed))
			return
		}
		done(msg, p.Publisher.Publish(context.Background(), msg))
	}()
	return nil
}

// TestOneOutageSeenByManyCallsBacksOffOnce (L06): with per-message
// confirms, rows go out in many small calls, and an outage fails all of
// them together. That is one outage: the relay's backoff must not grow once
// per failed call (reaching Backoff.Max, 30 s, at once) and hold the relay
// that long after the broker is back; per wave of failures, it reaches
// about 2 s by the time 40 row failures were seen.
func TestOneOutageSeenByManyCallsBacksOffOnce(t *testing.T) {
	t.Parallel()
	db := newTestDB(t, 8)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	broker := reliabletest.NewBroker(reliabletest.BrokerOptions{})
	broker.CreateTopic("orders")
	pub := &failingAsync{Publisher: broker.Publisher()}
	pub.down.Store(true)
	cfg := testConfig()
	cfg.Backoff = reliable.Backoff{Initial: 200 * time.Millisecond, Max: 30 * time.Second, Jitter: -1}
	relay := startRelay(t, db.pool, pub, cfg)

	// Rows committed one by one, so the relay sends them in many calls.
	for i := range 40 {
		if err := addTx(ctx, db.pool, msg("orders", fmt.Sprintf("k-%d", i), "order")); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	waitFor(t, 20*time.Second, "rows failing", func() bool { return relay.Stats().Failures >= 40 })
	t.Logf("relay while the broker is down: %+v", relay.Stats())
	pub.down.Store(false)
	back := time.Now()
	waitFor(t, 30*time.Second, "every row published", func() bool { return len(broker.Messages("orders")) >= 40 })
	if took := time.Since(back); took > 5*time.Second {
		t.Fatalf("the relay published %s after the broker was back; its outage backoff grew with every failed call", took)
	}
	t.Logf("relay after the outage: %+v; published %s after the broker was back", relay.Stats(), time.Since(back).Round(time.Millisecond))
}
