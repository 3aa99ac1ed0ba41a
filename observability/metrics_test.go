package observability_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/consumer"
	"github.com/reliable-go/reliable/observability"
	"github.com/reliable-go/reliable/outbox"
	"github.com/reliable-go/reliable/reliabletest"
	"github.com/reliable-go/reliable/retry"
)

func TestPublishMetrics(t *testing.T) {
	b := setup(t)
	broker := reliabletest.NewBroker(reliabletest.BrokerOptions{})
	broker.CreateTopic("orders")
	pub := b.tel.Publisher(broker.Publisher())
	ctx := context.Background()
	for range 3 {
		if err := pub.Publish(ctx, &reliable.Message{Topic: "orders", Key: "k"}); err != nil {
			t.Fatal(err)
		}
	}
	_ = pub.Publish(ctx, &reliable.Message{Topic: "nope"})

	text := b.scrape(t)
	if got := sample(text, "reliable_publish_messages_total", `topic="orders"`, `outcome="ok"`); got != "3" {
		t.Errorf("ok publishes = %q, want 3\n%s", got, text)
	}
	if got := sample(text, "reliable_publish_messages_total", `topic="nope"`, `outcome="failed"`, `error_type="unknown_topic"`); got != "1" {
		t.Errorf("failed publishes = %q, want 1", got)
	}
	if got := sample(text, "reliable_publish_duration_seconds_count", `topic="orders"`); got != "3" {
		t.Errorf("publish duration count = %q, want 3", got)
	}
}

// The wrapper keeps a publisher's PublishAsync (the outbox relay's
// per-message confirms) and records it like Publish.
func TestPublishAsyncMetrics(t *testing.T) {
	b := setup(t)
	broker := reliabletest.NewBroker(reliabletest.BrokerOptions{})
	broker.CreateTopic("orders")
	pub, ok := b.tel.Publisher(broker.AsyncPublisher()).(reliable.AsyncPublisher)
	if !ok {
		t.Fatal("the wrapped publisher lost PublishAsync")
	}
	ctx := context.Background()
	results := make(chan error, 2)
	for _, topic := range []string{"orders", "nope"} {
		if err := pub.PublishAsync(ctx, &reliable.Message{Topic: topic, Key: "k"}, func(_ *reliable.Message, err error) { results <- err }); err != nil {
			t.Fatal(err)
		}
	}
	var failed int
	for range 2 {
		if err := <-results; err != nil {
			failed++
		}
	}
	if failed != 1 {
		t.Fatalf("%d of 2 publishes failed, want 1 (the unknown topic)", failed)
	}
	text := b.scrape(t)
	if got := sample(text, "reliable_publish_messages_total", `topic="orders"`, `outcome="ok"`); got != "1" {
		t.Errorf("ok publishes = %q, want 1\n%s", got, text)
	}
	if got := sample(text, "reliable_publish_messages_total", `topic="nope"`, `outcome="failed"`, `error_type="unknown_topic"`); got != "1" {
		t.Errorf("failed publishes = %q, want 1", got)
	}
	if n := len(b.spans.Ended()); n != 2 {
		t.Errorf("%d spans ended, want 2", n)
	}

	plain := b.tel.Publisher(broker.Publisher()).(reliable.AsyncPublisher)
	if err := plain.PublishAsync(ctx, &reliable.Message{Topic: "orders"}, func(*reliable.Message, error) {}); !errors.Is(err, errors.ErrUnsupported) {
		t.Fatalf("wrapping a publisher without PublishAsync: got %v, want errors.ErrUnsupported", err)
	}
}

func TestConsumerMetrics(t *testing.T) {
	b := setup(t)
	m := &reliable.Message{Topic: "orders"}
	b.tel.Observe(consumer.Event{Message: m, Outcome: consumer.OutcomeHandled, Duration: 20 * time.Millisecond})
	b.tel.Observe(consumer.Event{Message: m, Outcome: consumer.OutcomeDuplicate, Duration: time.Millisecond})
	b.tel.Observe(consumer.Event{Message: m, Outcome: consumer.OutcomeDuplicate, Duration: time.Millisecond})
	b.tel.Observe(consumer.Event{Message: m, Outcome: consumer.OutcomeDeadLettered, Err: errors.New("poison")})

	text := b.scrape(t)
	for _, c := range []struct{ outcome, want string }{{"handled", "1"}, {"duplicate", "2"}, {"dead_lettered", "1"}} {
		if got := sample(text, "reliable_consumer_deliveries_total", `outcome="`+c.outcome+`"`); got != c.want {
			t.Errorf("deliveries %s = %q, want %s", c.outcome, got, c.want)
		}
	}
	if got := sample(text, "reliable_dedupe_hits_total", `topic="orders"`); got != "2" {
		t.Errorf("dedupe hits = %q, want 2", got)
	}
	if got := sample(text, "reliable_consumer_duration_seconds_count", `outcome="handled"`); got != "1" {
		t.Errorf("consumer duration count = %q, want 1", got)
	}
}

// L18: retry-table depth, dead entries and how overdue the retriers are,
// outbox backlog and age, all exported as gauges read at scrape time.
func TestWatchedGauges(t *testing.T) {
	b := setup(t)
	now := time.Now()
	stats := retry.Status{Pending: 7, Dead: 2, Released: 1, BlockedKeys: 3, Due: 4,
		OldestDue: now.Add(-90 * time.Second), OldestCreated: now.Add(-time.Hour)}
	var failRetry bool
	reg, err := observability.WatchRetryFunc(b.tel, "kitchen", func(context.Context) (retry.Status, error) {
		if failRetry {
			return retry.Status{}, errors.New("database down")
		}
		return stats, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := observability.WatchOutboxFunc(b.tel, "orders", func(context.Context) (outbox.Status, error) {
		return outbox.Status{Pending: 12, OldestPending: 42 * time.Second, Dead: 1}, nil
	}); err != nil {
		t.Fatal(err)
	}

	text := b.scrape(t)
	for _, c := range []struct {
		name   string
		labels []string
		want   string
	}{
		{"reliable_retry_entries", []string{`group="kitchen"`, `state="pending"`}, "7"},
		{"reliable_retry_entries", []string{`state="dead"`}, "2"},
		{"reliable_retry_entries", []string{`state="released"`}, "1"},
		{"reliable_retry_due", []string{`group="kitchen"`}, "4"},
		{"reliable_retry_blocked_keys", []string{`group="kitchen"`}, "3"},
		{"reliable_outbox_pending", []string{`outbox="orders"`}, "12"},
		{"reliable_outbox_oldest_pending_age_seconds", []string{`outbox="orders"`}, "42"},
		{"reliable_outbox_dead", []string{`outbox="orders"`}, "1"},
	} {
		if got := sample(text, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %q, want %s", c.name, c.labels, got, c.want)
		}
	}
	if got := sample(text, "reliable_retry_oldest_due_age_seconds"); !strings.HasPrefix(got, "90") && !strings.HasPrefix(got, "91") {
		t.Errorf("oldest due age = %q, want about 90", got)
	}

	// A failing source is counted and its gauges are left out; the others
	// still report.
	failRetry = true
	text = b.scrape(t)
	if got := sample(text, "reliable_observe_errors_total", `source="retry"`); got != "1" {
		t.Errorf("observe errors = %q, want 1", got)
	}
	if got := sample(text, "reliable_outbox_pending"); got != "12" {
		t.Errorf("outbox pending = %q after the retry source failed", got)
	}

	if err := reg.Unregister(); err != nil {
		t.Fatal(err)
	}
	if text := b.scrape(t); sample(text, "reliable_retry_entries") != "" {
		t.Error("retry gauges still exported after Unregister")
	}
}

func TestSkewed(t *testing.T) {
	tl := func(lags ...int64) observability.TopicLag {
		var out observability.TopicLag
		for i, l := range lags {
			out.Partitions = append(out.Partitions, observability.PartitionLag{Partition: int32(i), Lag: l})
			out.Total += l
		}
		return out
	}
	for _, c := range []struct {
		lags []int64
		want bool
	}{
		{[]int64{5000}, false},                      // one partition: nothing to compare
		{[]int64{900, 10, 10}, false},               // below the minimum lag
		{[]int64{5000, 100, 100, 100}, true},        // L14: one hot partition
		{[]int64{520, 480}, false},                  // even enough
		{[]int64{3000, 1000}, true},                 // 75%, three times the next
		{[]int64{1000, 1000, 1000, 1000}, false},    // even
		{[]int64{3000, 2000, 100, 100, 100}, false}, // two busy partitions: not one hot key
	} {
		if got := tl(c.lags...).Skewed(observability.SkewShare, observability.SkewMinLag); got != c.want {
			t.Errorf("Skewed(%v) = %v, want %v", c.lags, got, c.want)
		}
	}
	hot, share, next := tl(10, 70, 20).Hottest()
	if hot.Partition != 1 || share != 0.7 || next != 20 {
		t.Errorf("Hottest = %d %v %d", hot.Partition, share, next)
	}
}

func TestErrorType(t *testing.T) {
	for _, c := range []struct {
		err  error
		want string
	}{
		{nil, ""},
		{&reliable.MessageTooLargeError{}, "too_large"},
		{reliable.ErrUnroutable, "unroutable"},
		{context.DeadlineExceeded, "timeout"},
		{reliable.Permanent(errors.New("bad")), "permanent"},
		{errors.New("boom"), "other"},
	} {
		if got := observability.ErrorType(c.err); got != c.want {
			t.Errorf("ErrorType(%v) = %q, want %q", c.err, got, c.want)
		}
	}
}

// An invalidated slot (wal_status lost, which needs max_slot_wal_keep_size
// exceeded, so no real test makes one) reports lost 1, and a relay's
// counters and state come from its Stats as they are.
func TestWatchSlotLostAndRelayStats(t *testing.T) {
	b := setup(t)
	if _, err := observability.WatchSlotFunc(b.tel, "s", func(context.Context) (outbox.SlotInfo, error) {
		return outbox.SlotInfo{Name: "s", Exists: true, WALStatus: "lost", RetainedBytes: 7, LagBytes: 5, SafeWALBytes: -1}, nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := observability.WatchRelayFunc(b.tel, "r1", func() outbox.Stats {
		return outbox.Stats{LogState: "over WAL budget", LogFallbacks: 4, LogRows: 9, LogPending: 3, LogConfirmed: 1 << 40}
	}); err != nil {
		t.Fatal(err)
	}
	text := b.scrape(t)
	for _, c := range []struct {
		name   string
		labels []string
		want   string
	}{
		{"reliable_outbox_slot_lost", []string{`slot="s"`}, "1"},
		{"reliable_outbox_slot_exists", []string{`slot="s"`}, "1"},
		{"reliable_outbox_slot_retained_bytes", []string{`slot="s"`}, "7"},
		{"reliable_outbox_slot_lag_bytes", []string{`slot="s"`}, "5"},
		{"reliable_outbox_slot_safe_wal_bytes", []string{`slot="s"`}, "-1"},
		{"reliable_outbox_log_state", []string{`relay="r1"`, `state="over WAL budget"`}, "1"},
		{"reliable_outbox_log_reading", []string{`relay="r1"`}, "0"},
		{"reliable_outbox_log_fallbacks_total", []string{`relay="r1"`}, "4"},
		{"reliable_outbox_log_rows_total", []string{`relay="r1"`}, "9"},
		{"reliable_outbox_log_pending", []string{`relay="r1"`}, "3"},
		{"reliable_outbox_log_confirmed_lsn", []string{`relay="r1"`}, "1.099511627776e+12"},
	} {
		if got := sample(text, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %q, want %s", c.name, c.labels, got, c.want)
		}
	}
}
