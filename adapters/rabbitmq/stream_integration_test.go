package rabbitmq

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/reliable-go/reliable"
)

// ledger records what was confirmed and what was received, to prove that
// nothing confirmed is lost.
type ledger struct {
	mu        sync.Mutex
	published map[string]bool
	received  map[string]int
	dups      int
	lastSeq   map[string]int // per key, for order checks
	disorder  []string
}

func newLedger() *ledger {
	return &ledger{published: map[string]bool{}, received: map[string]int{}, lastSeq: map[string]int{}}
}

func (l *ledger) confirm(msgs []*reliable.Message) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, m := range msgs {
		l.published[m.ID] = true
	}
}

// receive records m; seq is its per-key sequence number when order matters.
func (l *ledger) receive(m *reliable.Message, checkOrder bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.received[m.ID]++
	if l.received[m.ID] > 1 {
		l.dups++
		return // a redelivery repeats an earlier message; order is judged on first deliveries
	}
	if checkOrder {
		seq, _ := strconv.Atoi(m.Headers["x-seq"])
		if prev, ok := l.lastSeq[m.Key]; ok && seq <= prev {
			l.disorder = append(l.disorder, fmt.Sprintf("key %s: seq %d after %d", m.Key, seq, prev))
		}
		l.lastSeq[m.Key] = seq
	}
}

// missing returns the confirmed IDs never received.
func (l *ledger) missing() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for id := range l.published {
		if l.received[id] == 0 {
			out = append(out, id)
		}
	}
	sort.Strings(out)
	return out
}

func (l *ledger) counts() (published, received, dups int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.published), len(l.received), l.dups
}

// waitAll waits until every one of want confirmed messages was received.
func (l *ledger) waitAll(t *testing.T, want int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		p, r, _ := l.counts()
		if p >= want && len(l.missing()) == 0 {
			return
		}
		if time.Now().After(deadline) {
			miss := l.missing()
			t.Fatalf("after %s: %d confirmed, %d received, %d confirmed but missing (first: %v)", timeout, p, r, len(miss), first(miss, 5))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func first(s []string, n int) []string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// keyedMessages returns n messages over keys, each with its per-key
// sequence number in header x-seq.
func keyedMessages(topic string, n, keys int) []*reliable.Message {
	msgs := make([]*reliable.Message, n)
	seq := make([]int, keys)
	for i := range msgs {
		k := i % keys
		msgs[i] = &reliable.Message{
			Topic:   topic,
			Key:     "order-" + strconv.Itoa(k),
			Type:    "order.event",
			Headers: map[string]string{"x-seq": strconv.Itoa(seq[k])},
			Payload: []byte("event " + strconv.Itoa(i)),
		}
		seq[k]++
	}
	return msgs
}

// publishAll publishes msgs in batches, from workers goroutines each taking
// every workers-th batch and pausing pace after each, and records confirmed
// batches in l. It stops early when stop is closed.
func publishAll(ctx context.Context, pub reliable.Publisher, msgs []*reliable.Message, batch, workers int, pace time.Duration, stop <-chan struct{}, l *ledger) error {
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w * batch; i < len(msgs); i += workers * batch {
				b := msgs[i:min(i+batch, len(msgs))]
				if err := pub.Publish(ctx, b...); err != nil {
					errs <- fmt.Errorf("batch at %d: %w", i, err)
					return
				}
				l.confirm(b)
				select {
				case <-stop:
					return
				case <-time.After(pace):
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// consumeAll records and acks every delivery of ch until it closes.
func consumeAll(ctx context.Context, t *testing.T, ch <-chan *reliable.Delivery, l *ledger, checkOrder bool, hold time.Duration) {
	for d := range ch {
		l.receive(d.Message, checkOrder)
		if hold > 0 {
			time.Sleep(hold)
		}
		if err := d.Ack(ctx); err != nil {
			t.Errorf("ack %s: %v", d.Message.ID, err)
		}
	}
}

// logBuffer collects log output so a test can look for channel errors.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if testing.Verbose() {
		os.Stderr.Write(p)
	}
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// assertNoStaleTagErrors fails when a channel was closed for an unknown
// delivery tag: the symptom of acking a stale tag (PITFALLS B3).
func assertNoStaleTagErrors(t *testing.T, logs string) {
	t.Helper()
	for _, bad := range []string{"PRECONDITION_FAILED", "unknown delivery tag", "(406)"} {
		if strings.Contains(logs, bad) {
			t.Fatalf("logs mention %q: a stale delivery tag reached the broker:\n%s", bad, logs)
		}
	}
}

// envInt reads a count from the environment, for longer local runs.
func envInt(key string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(key)); err == nil && v > 0 {
		return v
	}
	return def
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
