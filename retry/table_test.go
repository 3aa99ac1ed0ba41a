package retry_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/retry"
)

// L09, L10, L11: "placed" fails on a network blip; "paid" and "completed" of
// the same order are parked behind it instead of failing against a missing
// order; meanwhile other orders flow without waiting; after recovery all
// three apply in order.
func TestPlacedFailsPaidAndCompletedWaitBehindIt(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l := newLedger()
	var blip atomic.Bool
	blip.Store(true)
	h := reliable.HandlerFunc(func(ctx context.Context, msg *reliable.Message) error {
		l.enter(msg.Key)
		defer l.exit(msg.Key)
		if msg.ID == "order-1/placed" && blip.Load() {
			return reliable.Retryable(errors.New("order service: connection reset"))
		}
		if msg.Key == "order-1" && msg.Type != "order.placed" && len(l.applied("order-1")) == 0 {
			return reliable.Permanent(errors.New("paid before placed: the L09 incident"))
		}
		l.apply(msg)
		return nil
	})

	for _, m := range []*reliable.Message{
		orderMsg("order-1", "placed"), orderMsg("order-2", "placed"), orderMsg("order-1", "paid"),
		orderMsg("order-2", "paid"),
	} {
		if err := consume(ctx, b.table, h, m); err != nil {
			t.Fatal(err)
		}
	}
	// A caller may record why it parked a message behind its key: the entry
	// still counts no attempt, because the key had entries waiting.
	must(t, b.table.Park(ctx, orderMsg("order-1", "completed"), errKeyBlocked))
	must(t, consume(ctx, b.table, h, orderMsg("order-2", "completed")))
	// L10: the other order was not held up by order-1's failure.
	if got := l.applied("order-2"); !equal(got, []string{"order.placed", "order.paid", "order.completed"}) {
		t.Fatalf("order-2 applied %v while order-1 waited", got)
	}
	if got := l.applied("order-1"); len(got) != 0 {
		t.Fatalf("order-1 applied %v before its retry", got)
	}
	entries, err := b.table.List(ctx, retry.ListFilter{Key: "order-1"})
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 3 || entries[0].Attempts != 1 || entries[0].LastError == "" {
		t.Fatalf("parked entries: %+v", entries)
	}
	for _, e := range entries[1:] {
		// Parked behind: no attempt counted, no due time until it heads the key.
		if e.Attempts != 0 || !e.NextAttemptAt.IsZero() {
			t.Fatalf("entry parked behind: %+v", e)
		}
	}

	blip.Store(false) // the network recovers
	startRetrier(t, b.table, h, retry.RetrierConfig{})
	waitFor(t, 20*time.Second, "order-1 to apply", func() bool { return len(l.applied("order-1")) == 3 })
	if got := l.applied("order-1"); !equal(got, []string{"order.placed", "order.paid", "order.completed"}) {
		t.Fatalf("order-1 applied %v, want placed, paid, completed", got)
	}
	l.check(t)
	waitFor(t, 5*time.Second, "the key to unblock", func() bool {
		blocked, err := b.table.Blocked(ctx, "order-1")
		return err == nil && !blocked
	})
}

// L11: after 7 failures the entry is dead, the notifier fires, the key stays
// blocked (later messages are parked), other keys flow; RetryNow replays it.
func TestSevenFailuresMakeADeadEntryThatBlocksItsKey(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l := newLedger()
	var broken atomic.Bool
	broken.Store(true)
	var mu sync.Mutex
	var attemptsSeen []int
	h := reliable.HandlerFunc(func(ctx context.Context, msg *reliable.Message) error {
		if msg.ID == "order-1/placed" {
			mu.Lock()
			attemptsSeen = append(attemptsSeen, msg.Delivery.Attempt)
			mu.Unlock()
			if broken.Load() {
				return errors.New("kitchen printer offline")
			}
		}
		l.apply(msg)
		return nil
	})
	if err := consume(ctx, b.table, h, orderMsg("order-1", "placed")); err != nil {
		t.Fatal(err)
	}
	startRetrier(t, b.table, h, retry.RetrierConfig{})

	var dead retry.DeadEntry
	select {
	case dead = <-b.dead:
	case <-ctx.Done():
		t.Fatal("notifier not called")
	}
	if dead.Attempts != 7 || !dead.Blocking || dead.State != retry.StateDead || dead.Message.ID != "order-1/placed" ||
		dead.LastError != "kitchen printer offline" {
		t.Fatalf("dead entry %+v", dead)
	}
	mu.Lock()
	if !equal(intsToStrings(attemptsSeen), intsToStrings([]int{1, 2, 3, 4, 5, 6, 7})) {
		t.Errorf("handler saw attempts %v, want 1..7", attemptsSeen)
	}
	mu.Unlock()

	// The key stays blocked: later messages of order-1 are parked, others flow.
	for _, m := range []*reliable.Message{orderMsg("order-1", "paid"), orderMsg("order-2", "placed"), orderMsg("order-1", "completed")} {
		if err := consume(ctx, b.table, h, m); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(200 * time.Millisecond) // give the retrier a chance to (wrongly) replay
	if got := l.applied("order-1"); len(got) != 0 {
		t.Fatalf("order-1 applied %v past its dead head", got)
	}
	if got := l.applied("order-2"); len(got) != 1 {
		t.Fatalf("order-2 applied %v, want it to flow", got)
	}
	// L18: the depth, dead count and blocked keys are there for alerts.
	st, err := b.table.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Dead != 1 || st.Pending != 2 || st.BlockedKeys != 1 || st.OldestCreated.IsZero() || !st.OldestDue.IsZero() || st.Due != 0 {
		t.Fatalf("stats %+v", st)
	}

	// The operator fixes the printer and retries the dead entry.
	broken.Store(false)
	if err := b.table.RetryNow(ctx, dead.ID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "order-1 to apply", func() bool { return len(l.applied("order-1")) == 3 })
	if got := l.applied("order-1"); !equal(got, []string{"order.placed", "order.paid", "order.completed"}) {
		t.Fatalf("order-1 applied %v", got)
	}
	l.check(t)
	if err := b.table.RetryNow(ctx, dead.ID); !errors.Is(err, retry.ErrNotFound) {
		t.Fatalf("RetryNow of a finished entry = %v, want ErrNotFound", err)
	}
}

func intsToStrings(xs []int) []string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = string(rune('0' + x))
	}
	return s
}

// A permanent error (poison) is dead at once, from the consumer and from a
// replay; Discard and Release unblock keys in their two ways.
func TestPoisonDiscardAndRelease(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l := newLedger()
	poison := map[string]bool{"order-1/placed": true, "order-2/placed": true}
	var mu sync.Mutex
	h := reliable.HandlerFunc(func(ctx context.Context, msg *reliable.Message) error {
		mu.Lock()
		bad := poison[msg.ID]
		mu.Unlock()
		if bad {
			return reliable.Permanent(errors.New("payload does not parse"))
		}
		l.apply(msg)
		return nil
	})
	for _, m := range []*reliable.Message{orderMsg("order-1", "placed"), orderMsg("order-1", "paid"),
		orderMsg("order-2", "placed"), orderMsg("order-2", "paid"), orderMsg("order-2", "completed")} {
		if err := consume(ctx, b.table, h, m); err != nil {
			t.Fatal(err)
		}
	}
	d1, d2 := <-b.dead, <-b.dead
	if d1.Attempts != 1 || d2.Attempts != 1 || !d1.Blocking {
		t.Fatalf("poison entries %+v %+v", d1, d2)
	}
	// A redelivered poison message is stored once and notified once.
	if err := b.table.DeadLetter(ctx, orderMsg("order-1", "placed"), reliable.Permanent(errors.New("again"))); err != nil {
		t.Fatal(err)
	}
	select {
	case e := <-b.dead:
		t.Fatalf("notified twice: %+v", e)
	default:
	}
	startRetrier(t, b.table, h, retry.RetrierConfig{})

	// Discard the poison head of order-1: paid flows.
	if err := b.table.Discard(ctx, d1.ID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "order-1 paid", func() bool { return len(l.applied("order-1")) == 1 })

	// Release order-2: the dead entry stays for inspection, the rest flows.
	n, err := b.table.Release(ctx, "order-2")
	if err != nil || n != 1 {
		t.Fatalf("Release = %d, %v", n, err)
	}
	waitFor(t, 10*time.Second, "order-2 paid, completed", func() bool { return len(l.applied("order-2")) == 2 })
	got, err := b.table.Get(ctx, d2.ID)
	if err != nil || got.State != retry.StateReleased || got.FinishedAt.IsZero() {
		t.Fatalf("released entry %+v, %v", got, err)
	}
	if err := b.table.Discard(ctx, d1.ID); !errors.Is(err, retry.ErrNotFound) {
		t.Fatalf("Discard twice = %v, want ErrNotFound", err)
	}
	if _, err := b.table.Get(ctx, 1<<40); !errors.Is(err, retry.ErrNotFound) {
		t.Fatalf("Get(unknown) = %v", err)
	}
	listed, err := b.table.List(ctx, retry.ListFilter{States: []retry.State{retry.StateDiscarded, retry.StateReleased}})
	if err != nil || len(listed) != 2 || listed[0].ID != d1.ID || listed[1].ID != d2.ID {
		t.Fatalf("List = %+v, %v", listed, err)
	}

	// A replay that fails permanently is dead at once too.
	mu.Lock()
	poison["order-3/paid"] = true
	mu.Unlock()
	if err := b.table.Park(ctx, orderMsg("order-3", "paid"), nil); err != nil {
		t.Fatal(err)
	}
	select {
	case e := <-b.dead:
		if e.Message.ID != "order-3/paid" || e.Attempts != 1 {
			t.Fatalf("dead entry %+v", e)
		}
	case <-ctx.Done():
		t.Fatal("no notification for a permanent replay failure")
	}
}

// With ReleaseOnDead a dead entry does not hold back its key.
func TestReleaseOnDead(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *retry.TableConfig) { c.ReleaseOnDead = true; c.MaxAttempts = 2 })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l := newLedger()
	h := reliable.HandlerFunc(func(ctx context.Context, msg *reliable.Message) error {
		if msg.Type == "order.placed" {
			return errors.New("always fails")
		}
		l.apply(msg)
		return nil
	})
	for _, m := range []*reliable.Message{orderMsg("order-1", "placed"), orderMsg("order-1", "paid")} {
		if err := consume(ctx, b.table, h, m); err != nil {
			t.Fatal(err)
		}
	}
	startRetrier(t, b.table, h, retry.RetrierConfig{})
	e := <-b.dead
	if e.Blocking || e.State != retry.StateReleased || e.Attempts != 2 {
		t.Fatalf("dead entry %+v", e)
	}
	waitFor(t, 10*time.Second, "paid to flow", func() bool { return len(l.applied("order-1")) == 1 })
}

// Park stores the whole message and is idempotent per message ID; replay
// hands the handler the same message with the attempt number.
func TestParkRoundTripAndIdempotence(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *retry.TableConfig) { c.Backoff = reliable.Backoff{Initial: time.Hour, Jitter: -1} })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	msg := &reliable.Message{
		ID: reliable.NewID(), Topic: "orders", Key: "order-9", Type: "order.paid",
		Headers: map[string]string{"ce_environment": "prod", "traceparent": "00-abc-def-01"},
		Payload: []byte{0, 1, 2, 255}, Time: time.Date(2026, 3, 4, 5, 6, 7, 123456000, time.UTC),
		Delivery: reliable.DeliveryInfo{Partition: 3, Offset: 1234, Attempt: 1},
	}
	cause := reliable.RetryAfter(2*time.Hour, errors.New("replica lag: order not found"))
	before := time.Now()
	for range 2 { // a redelivered message parked twice stays one entry
		if err := b.table.Park(ctx, msg, cause); err != nil {
			t.Fatal(err)
		}
	}
	entries, err := b.table.List(ctx, retry.ListFilter{})
	if err != nil || len(entries) != 1 {
		t.Fatalf("List = %d entries, %v", len(entries), err)
	}
	e := entries[0]
	got := e.Message
	if got.ID != msg.ID || got.Topic != msg.Topic || got.Key != msg.Key || got.Type != msg.Type ||
		string(got.Payload) != string(msg.Payload) || !got.Time.Equal(msg.Time) ||
		got.Headers["traceparent"] != "00-abc-def-01" || len(got.Headers) != 2 ||
		got.Delivery.Partition != 3 || got.Delivery.Offset != 1234 || got.Delivery.Attempt != 2 {
		t.Fatalf("round trip: %+v", got)
	}
	// L21: a handler that read a lagging replica asks for a later retry; the
	// later of RetryAfter (2h) and the backoff (1h) applies.
	if d := e.NextAttemptAt.Sub(before); d < 2*time.Hour-time.Minute || d > 2*time.Hour+time.Minute {
		t.Fatalf("next attempt in %s, want about 2h", d)
	}
	if e.State != retry.StatePending || e.Attempts != 1 || e.LastError != "replica lag: order not found" {
		t.Fatalf("entry %+v", e)
	}

	// A message without headers or payload comes back the same.
	bare := &reliable.Message{ID: "bare", Topic: "orders", Key: "order-9"}
	if err := b.table.Park(ctx, bare, nil); err != nil {
		t.Fatal(err)
	}
	entries, _ = b.table.List(ctx, retry.ListFilter{Key: "order-9", AfterID: e.ID})
	if len(entries) != 1 || entries[0].Message.Headers != nil || entries[0].Message.Payload != nil || !entries[0].Message.Time.IsZero() ||
		entries[0].Attempts != 0 || entries[0].Message.Delivery.Attempt != 1 {
		t.Fatalf("bare round trip: %+v", entries)
	}
	if err := b.table.Park(ctx, &reliable.Message{Topic: "orders"}, nil); !errors.Is(err, reliable.ErrInvalidMessage) {
		t.Fatalf("Park without ID = %v", err)
	}
	// Keyless messages need no order: they never block anything.
	if err := b.table.Park(ctx, &reliable.Message{ID: "keyless", Topic: "orders"}, errors.New("x")); err != nil {
		t.Fatal(err)
	}
	if blocked, err := b.table.Blocked(ctx, ""); err != nil || blocked {
		t.Fatalf("Blocked(\"\") = %v, %v", blocked, err)
	}
	if blocked, err := b.table.Blocked(ctx, "order-9"); err != nil || !blocked {
		t.Fatalf("Blocked(order-9) = %v, %v", blocked, err)
	}
	// Another group on the same table sees none of it.
	cfg := b.cfg
	cfg.Group = "billing"
	other, err := retry.NewTable(b.pool, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if blocked, err := other.Blocked(ctx, "order-9"); err != nil || blocked {
		t.Fatalf("other group: Blocked = %v, %v", blocked, err)
	}
	// RetryKeyNow makes the key's entries due now (the keyless one still waits).
	if n, err := b.table.RetryKeyNow(ctx, "order-9"); err != nil || n != 2 {
		t.Fatalf("RetryKeyNow = %d, %v", n, err)
	}
	st, err := b.table.Status(ctx)
	if err != nil || st.Due != 2 || st.Pending != 3 || st.BlockedKeys != 2 {
		t.Fatalf("Stats = %+v, %v", st, err)
	}
}

// L17: Cleanup deletes finished history past the retention in batches and
// never touches pending or blocking dead entries.
func TestCleanupRetention(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *retry.TableConfig) {
		c.Retention, c.CleanupBatchSize = 300*time.Millisecond, 2
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ok := reliable.HandlerFunc(func(context.Context, *reliable.Message) error { return nil })
	for _, k := range []string{"a", "b", "c", "d", "e"} {
		must(t, b.table.Park(ctx, orderMsg(k, "placed"), nil)) // replayed: done
	}
	stop := startRetrier(t, b.table, ok, retry.RetrierConfig{CleanupInterval: -1})
	waitFor(t, 10*time.Second, "replays", func() bool {
		s, err := b.table.Status(ctx)
		return err == nil && s.Pending == 0
	})
	stop()
	must(t, b.table.DeadLetter(ctx, orderMsg("f", "placed"), errors.New("dead, blocking")))
	must(t, b.table.DeadLetter(ctx, orderMsg("g", "placed"), errors.New("dead, to release")))
	must(t, b.table.Park(ctx, orderMsg("h", "placed"), errors.New("pending")))
	must(t, b.table.Park(ctx, orderMsg("i", "placed"), nil))
	discard, err := b.table.List(ctx, retry.ListFilter{Key: "i"})
	must(t, err)
	must(t, b.table.Discard(ctx, discard[0].ID))
	_, err = b.table.Release(ctx, "g")
	must(t, err)
	done, err := b.table.List(ctx, retry.ListFilter{States: []retry.State{retry.StateDone}})
	if err != nil || len(done) != 5 {
		t.Fatalf("%d done entries kept, want 5: %v", len(done), err)
	}
	time.Sleep(400 * time.Millisecond)
	n, err := b.table.Cleanup(ctx)
	must(t, err)
	if n != 7 {
		t.Fatalf("Cleanup deleted %d, want 7 (5 done, 1 discarded, 1 released)", n)
	}
	left, err := b.table.List(ctx, retry.ListFilter{})
	must(t, err)
	if len(left) != 2 || left[0].State != retry.StateDead || left[1].State != retry.StatePending {
		t.Fatalf("left %+v", left)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestConfigValidation(t *testing.T) {
	t.Parallel()
	_, err := retry.NewTable(nil, retry.TableConfig{MaxAttempts: -1, Retention: -1, Table: "a_table_name_that_is_much_too_long_for_us"})
	var ce *reliable.ConfigError
	if !errors.As(err, &ce) || len(ce.Problems) != 4 {
		t.Fatalf("NewTable = %v, want 4 problems at once", err)
	}
	if _, err := retry.NewTable(nil, retry.TableConfig{Group: "g"}); !errors.Is(err, reliable.ErrInvalidConfig) {
		t.Fatalf("nil pool: %v", err)
	}
	_, err = retry.NewRetrier(nil, nil, retry.RetrierConfig{})
	if !errors.As(err, &ce) || len(ce.Problems) != 2 {
		t.Fatalf("NewRetrier = %v", err)
	}
	if err := (retry.RetrierConfig{LeaseTTL: time.Millisecond, Workers: -1}).Validate(); !errors.As(err, &ce) || len(ce.Problems) != 2 {
		t.Fatalf("Validate = %v", err)
	}
}

// L07: a message from another environment is dead-lettered without
// blocking this environment's key.
func TestWrongEnvironmentDoesNotBlockTheKey(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	msg := orderMsg("order-1", "placed")
	msg.Headers = map[string]string{reliable.HeaderEnvironment: "staging"}
	must(t, b.table.DeadLetter(ctx, msg, reliable.CheckEnvironment(msg, "prod")))
	e := <-b.dead
	if e.Blocking || e.State != retry.StateReleased {
		t.Fatalf("wrong-environment entry %+v", e)
	}
	if blocked, err := b.table.Blocked(ctx, "order-1"); err != nil || blocked {
		t.Fatalf("Blocked = %v, %v", blocked, err)
	}
}

// L20: the consumer crashed after parking messages and before committing
// their offsets; by the time the broker redelivers them, the retrier has
// applied the first one. Parked again behind the key's remaining entry it
// would apply twice and out of order; kept as done history, it is
// recognised and not parked again.
func TestRedeliveredMessageAlreadyReplayedIsNotParkedAgain(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l := newLedger()
	h := reliable.HandlerFunc(func(ctx context.Context, msg *reliable.Message) error {
		if msg.Type == "order.paid" {
			return errors.New("payment service down")
		}
		l.apply(msg)
		return nil
	})
	must(t, b.table.Park(ctx, orderMsg("order-1", "placed"), errors.New("blip")))
	must(t, b.table.Park(ctx, orderMsg("order-1", "paid"), nil))
	stop := startRetrier(t, b.table, h, retry.RetrierConfig{})
	waitFor(t, 10*time.Second, "placed to apply", func() bool { return len(l.applied("order-1")) == 1 })
	stop()
	// Redelivery: the key is blocked by "paid", so the consumer parks both.
	for _, m := range []*reliable.Message{orderMsg("order-1", "placed"), orderMsg("order-1", "paid")} {
		must(t, consume(ctx, b.table, h, m))
	}
	pending, err := b.table.List(ctx, retry.ListFilter{Key: "order-1", States: []retry.State{retry.StatePending}})
	must(t, err)
	if len(pending) != 1 || pending[0].Message.Type != "order.paid" {
		t.Fatalf("pending after redelivery: %+v", pending)
	}
	l.check(t)
}
