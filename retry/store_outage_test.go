package retry_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/consumer"
	"github.com/reliable-go/reliable/idempotency"
	"github.com/reliable-go/reliable/internal/testenv"
	"github.com/reliable-go/reliable/retry"
)

// redisThrough returns a Redis dedupe store whose connections pass through
// a fault proxy.
func redisThrough(t *testing.T, claimTTL time.Duration) (*idempotency.RedisStore, *testenv.FaultProxy) {
	t.Helper()
	p := testenv.NewFaultProxy(t, testenv.RedisAddr(t))
	c := redis.NewClient(&redis.Options{Addr: p.Addr(), MaxRetries: -1, DialTimeout: time.Second,
		ReadTimeout: 500 * time.Millisecond, WriteTimeout: 500 * time.Millisecond})
	t.Cleanup(func() { _ = c.Close() })
	s, err := idempotency.NewRedis(c, idempotency.RedisConfig{Namespace: uniqueName("ns"), ClaimTTL: claimTTL})
	must(t, err)
	return s, p
}

// Issue 15 item 1 (L20): a dedupe store outage during a replay is not the
// message's fault. Redis is down for 1.5 s while the retrier replays a key
// whose entries have 3 attempts left at most; before, each failed Begin was
// charged as an attempt, and the head entry died within ~100 ms (the key's
// later entries stuck behind it). Now every entry is applied once, in order,
// with its attempt count unchanged, and none dies.
func TestDedupeOutageDuringReplayIsNotChargedToTheMessage(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *retry.TableConfig) { c.MaxAttempts = 3 })
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	store, proxy := redisThrough(t, 30*time.Second)
	types := []string{"placed", "paid", "shipped"}
	must(t, b.table.Park(ctx, orderMsg("order-1", types[0]), errors.New("first failure")))
	for _, typ := range types[1:] {
		must(t, b.table.Park(ctx, orderMsg("order-1", typ), nil))
	}

	led := newLedger()
	h := reliable.HandlerFunc(func(_ context.Context, m *reliable.Message) error {
		led.enter(m.Key)
		defer led.exit(m.Key)
		led.apply(m)
		return nil
	})
	proxy.Down()
	startRetrier(t, b.table, consumer.Deduplicated(store, h), retry.RetrierConfig{})
	outage := time.After(1500 * time.Millisecond)
	select {
	case e := <-b.dead:
		t.Fatalf("entry %d (%s) died during a 1.5 s store outage: attempts %d, %s", e.ID, e.Message.Type, e.Attempts, e.LastError)
	case <-outage:
	}
	if n := led.total(); n != 0 {
		t.Fatalf("%d messages applied while the dedupe store was down", n)
	}
	proxy.Up()
	waitFor(t, 20*time.Second, "every entry applied after the outage", func() bool { return led.total() == len(types) })
	waitFor(t, 10*time.Second, "every entry recorded done", func() bool {
		e, err := b.table.List(ctx, retry.ListFilter{States: []retry.State{retry.StateDone}})
		return err == nil && len(e) == len(types)
	})
	led.check(t)
	want := []string{"order.placed", "order.paid", "order.shipped"}
	if got := led.applied("order-1"); !equal(got, want) {
		t.Fatalf("applied %v, want %v", got, want)
	}
	entries, err := b.table.List(ctx, retry.ListFilter{})
	must(t, err)
	for _, e := range entries {
		want := 0
		if e.Message.Type == "order."+types[0] {
			want = 1
		}
		if e.Attempts != want {
			t.Errorf("entry %s: attempts %d, want %d (the outage was charged)", e.Message.Type, e.Attempts, want)
		}
	}
	select {
	case e := <-b.dead:
		t.Fatalf("entry %d died: %s", e.ID, e.LastError)
	default:
	}
}

// Issue 15 item 1: the handler succeeds, then the dedupe store fails for
// 1 s before Done can record it. Before, the Done error was charged as an
// attempt and the next replay found the message's own claim "in progress"
// and was charged again until the entry died (MaxAttempts 3). Now Done is
// retried in place: the entry is applied once, recorded done, uncharged.
func TestDedupeOutageBeforeDoneIsNotChargedToTheMessage(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *retry.TableConfig) { c.MaxAttempts = 3 })
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	store, proxy := redisThrough(t, 30*time.Second)
	msg := orderMsg("order-1", "placed")
	must(t, b.table.Park(ctx, msg, nil))

	led := newLedger()
	h := reliable.HandlerFunc(func(_ context.Context, m *reliable.Message) error {
		led.apply(m)
		proxy.Down() // the store fails between the effects and Done
		time.AfterFunc(time.Second, proxy.Up)
		return nil
	})
	startRetrier(t, b.table, consumer.Deduplicated(store, h), retry.RetrierConfig{})
	waitFor(t, 20*time.Second, "the entry recorded done", func() bool {
		e, err := b.table.List(ctx, retry.ListFilter{States: []retry.State{retry.StateDone}})
		return err == nil && len(e) == 1
	})
	led.check(t)
	if n := led.total(); n != 1 {
		t.Fatalf("%d messages applied, want 1", n)
	}
	e, err := b.table.List(ctx, retry.ListFilter{})
	must(t, err)
	if len(e) != 1 || e[0].Attempts != 0 {
		t.Fatalf("entry after the outage: %+v (the outage was charged)", e)
	}
	st, err := store.Begin(ctx, msg.ID)
	must(t, err)
	if st != idempotency.StatusDone {
		t.Fatalf("dedupe status after the replay: %s, want done", st)
	}
}
