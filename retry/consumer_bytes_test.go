package retry_test

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/consumer"
	"github.com/reliable-go/reliable/idempotency"
	"github.com/reliable-go/reliable/reliabletest"
	"github.com/reliable-go/reliable/retry"
)

// L08, L09, L11, L20 (issue 13: a LongSerializer key stalled the partition
// at committed offset 0 with lag 51). A consumer with the PostgreSQL retry
// table and PostgreSQL dedupe consumes messages whose keys and IDs are
// foreign bytes; each key's first message fails once, so its later ones
// park behind it and the retrier replays them. Every message is applied
// once, in order per key, with the exact bytes, and the group's lag ends at 0.
func TestConsumerWithForeignKeysAppliesEveryMessageOnceInOrder(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	idemTable := uniqueName("idem_")
	dropTable(t, b.pool, idemTable, idemTable+"_migrations")
	idem, err := idempotency.NewPostgres(b.pool, idempotency.PostgresConfig{Namespace: "kitchen", Table: idemTable})
	must(t, err)
	must(t, idem.Migrate(ctx))

	broker := reliabletest.NewBroker(reliabletest.BrokerOptions{})
	broker.CreateTopicPartitions("orders", 3)
	const perKey = 10
	keys := foreignKeys()
	var msgs []*reliable.Message
	for i := range perKey {
		for name, key := range keys {
			msgs = append(msgs, &reliable.Message{ID: "id\x00" + name + "\xff" + strconv.Itoa(i), Topic: "orders", Key: key,
				Headers: map[string]string{"seq": strconv.Itoa(i), "bin": "\x00\xff"}})
		}
	}
	must(t, broker.Publisher().Publish(ctx, msgs...))

	var (
		mu      sync.Mutex
		applied = map[string][]int{} // by key, seq in apply order
		count   = map[string]int{}   // by ID
		failed  = map[string]bool{}
	)
	h := reliable.HandlerFunc(func(_ context.Context, m *reliable.Message) error {
		mu.Lock()
		defer mu.Unlock()
		seq, _ := strconv.Atoi(m.Headers["seq"])
		if seq == 0 && !failed[m.Key] {
			failed[m.Key] = true
			return reliable.Retryable(errors.New("downstream blip"))
		}
		if m.Headers["bin"] != "\x00\xff" {
			return reliable.Permanent(errors.New("header bytes changed"))
		}
		applied[m.Key] = append(applied[m.Key], seq)
		count[m.ID]++
		return nil
	})
	c, err := consumer.New(broker.Subscriber("kitchen", reliabletest.SubscriberOptions{}), h, consumer.Config{
		Topic: "orders", Dedupe: idem, RetryTable: b.table, Logger: testLogger(),
		Retrier:         retry.RetrierConfig{PollInterval: 20 * time.Millisecond},
		Backoff:         reliable.Backoff{Initial: time.Millisecond, Max: 20 * time.Millisecond},
		ShutdownTimeout: 5 * time.Second,
	})
	must(t, err)
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(runCtx) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	for deadline := time.Now().Add(45 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		mu.Lock()
		n := len(count)
		mu.Unlock()
		lag := broker.Lag("kitchen", "orders")
		if n == len(msgs) && lag == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 45s: %d of %d messages applied, lag %d", n, len(msgs), lag)
		}
	}
	mu.Lock()
	for name, key := range keys {
		got := applied[key]
		if len(got) != perKey {
			t.Errorf("%s: applied %v, want %d messages", name, got, perKey)
			continue
		}
		for i, seq := range got {
			if seq != i {
				t.Errorf("%s: applied in order %v, want 0..%d", name, got, perKey-1)
				break
			}
		}
	}
	for id, n := range count {
		if n != 1 {
			t.Errorf("message %q applied %d times", id, n)
		}
	}
	mu.Unlock()
	// The last replay's outcome commits just after its handler returned.
	waitFor(t, 10*time.Second, "the retry table to drain", func() bool {
		st, err := b.table.Status(ctx)
		return err == nil && st.Pending == 0 && st.Dead == 0
	})
}
