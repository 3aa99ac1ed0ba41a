package producer_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/producer"
	"github.com/reliable-go/reliable/reliabletest"
)

func newBroker(t *testing.T) *reliabletest.Broker {
	t.Helper()
	b := reliabletest.NewBroker(reliabletest.BrokerOptions{Partitions: 1})
	b.CreateTopic("orders")
	return b
}

var quiet = slog.New(slog.DiscardHandler)

func fast() reliable.Backoff {
	return reliable.Backoff{Initial: time.Millisecond, Max: 5 * time.Millisecond}
}

func TestRetriesTransientFailuresUntilConfirmed(t *testing.T) {
	// L03, L06: a transient failure is retried, not dropped.
	b := newBroker(t)
	b.FailPublishes(io.ErrUnexpectedEOF, reliable.ErrNotConfirmed, io.EOF)
	p, err := producer.New(b.Publisher(), producer.Config{Backoff: fast(), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	msg := &reliable.Message{Topic: "orders", Key: "o1"}
	if err := p.Publish(context.Background(), msg); err != nil {
		t.Fatalf("publish: %v", err)
	}
	if got := b.Messages("orders"); len(got) != 1 || got[0].ID != msg.ID {
		t.Fatalf("broker has %v", got)
	}
}

func TestLostConfirmRepublishesSameID(t *testing.T) {
	// L03/L20: when a confirm is lost the message is sent again with the
	// same ID, so the consumer's dedupe recognises the copy.
	b := newBroker(t)
	b.LoseConfirms(1)
	p, _ := producer.New(b.Publisher(), producer.Config{Backoff: fast(), Logger: quiet})
	msg := &reliable.Message{Topic: "orders"}
	if err := p.Publish(context.Background(), msg); err != nil {
		t.Fatal(err)
	}
	got := b.Messages("orders")
	if len(got) != 2 || got[0].ID != msg.ID || got[1].ID != msg.ID {
		t.Fatalf("want the same ID twice, got %v", got)
	}
}

func TestPermanentFailsFast(t *testing.T) {
	b := reliabletest.NewBroker(reliabletest.BrokerOptions{})
	p, _ := producer.New(b.Publisher(), producer.Config{Backoff: fast(), Logger: quiet})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	err := p.Publish(ctx, &reliable.Message{Topic: "never-created"})
	if !errors.Is(err, reliable.ErrUnknownTopic) {
		t.Fatalf("got %v, want ErrUnknownTopic", err)
	}
	if time.Since(start) > time.Second {
		t.Fatal("a permanent error was retried")
	}
}

func TestOversizedRefusedBeforeSending(t *testing.T) {
	// L13: huge bodies are refused with advice, and nothing of the batch is sent.
	b := newBroker(t)
	p, _ := producer.New(b.Publisher(), producer.Config{MaxMessageBytes: 1024})
	small := &reliable.Message{Topic: "orders", Payload: []byte("ok")}
	big := &reliable.Message{Topic: "orders", Payload: []byte(strings.Repeat("x", 2000))}
	err := p.Publish(context.Background(), small, big)
	var tl *reliable.MessageTooLargeError
	if !errors.As(err, &tl) || tl.MessageID != big.ID || tl.Max != 1024 {
		t.Fatalf("got %v", err)
	}
	if n := len(b.Messages("orders")); n != 0 {
		t.Fatalf("%d messages were sent", n)
	}
	// Every message of the call is named, so a caller (the outbox relay)
	// dead-letters only the big one and sends the small one again; a message
	// missing from the list would count as confirmed.
	var pe *reliable.PublishError
	if !errors.As(err, &pe) || len(pe.Failed) != 2 {
		t.Fatalf("got %v, want a PublishError naming both messages", err)
	}
	failed := map[string]error{}
	for _, f := range pe.Failed {
		failed[f.MessageID] = f.Err
	}
	if !reliable.IsPermanent(failed[big.ID]) || !reliable.IsRetryable(failed[small.ID]) {
		t.Fatalf("big: %v, small: %v; want big permanent and small retryable", failed[big.ID], failed[small.ID])
	}
}

func TestStampsEnvironmentAndSource(t *testing.T) {
	b := newBroker(t)
	p, _ := producer.New(b.Publisher(), producer.Config{Environment: "prod", Source: "order-service"})
	if err := p.Publish(context.Background(), &reliable.Message{Topic: "orders"}); err != nil {
		t.Fatal(err)
	}
	h := b.Messages("orders")[0].Headers
	if h[reliable.HeaderEnvironment] != "prod" || h[reliable.HeaderSource] != "order-service" {
		t.Fatalf("headers %v", h)
	}
}

func TestContextEndsRetries(t *testing.T) {
	b := newBroker(t)
	errs := make([]error, 1000)
	for i := range errs {
		errs[i] = io.ErrUnexpectedEOF
	}
	b.FailPublishes(errs...)
	p, _ := producer.New(b.Publisher(), producer.Config{Backoff: fast(), Logger: quiet})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := p.Publish(ctx, &reliable.Message{Topic: "orders"})
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("got %v, want the deadline and the last cause", err)
	}
}

func TestRetriesOnlyUnconfirmed(t *testing.T) {
	pub := &partialPublisher{failFirst: map[string]bool{"b": true}}
	p, _ := producer.New(pub, producer.Config{Backoff: fast(), Logger: quiet})
	msgs := []*reliable.Message{{ID: "a", Topic: "t"}, {ID: "b", Topic: "t"}, {ID: "c", Topic: "t"}}
	if err := p.Publish(context.Background(), msgs...); err != nil {
		t.Fatal(err)
	}
	if len(pub.calls) != 2 || strings.Join(pub.calls[1], ",") != "b" {
		t.Fatalf("calls %v, want the retry to carry only b", pub.calls)
	}
}

func TestConfigListsEveryProblem(t *testing.T) {
	_, err := producer.New(nil, producer.Config{MaxMessageBytes: -1, MaxAttempts: -2})
	var ce *reliable.ConfigError
	if !errors.As(err, &ce) {
		t.Fatalf("got %v", err)
	}
	_, err = producer.New(reliabletest.NewBroker(reliabletest.BrokerOptions{}).Publisher(),
		producer.Config{MaxMessageBytes: -1, MaxAttempts: -2, Backoff: reliable.Backoff{Initial: time.Second, Max: time.Millisecond}})
	if !errors.As(err, &ce) || len(ce.Problems) != 3 {
		t.Fatalf("got %v", err)
	}
}

type partialPublisher struct {
	failFirst map[string]bool
	calls     [][]string
}

func (p *partialPublisher) Publish(_ context.Context, msgs ...*reliable.Message) error {
	var ids []string
	pe := &reliable.PublishError{}
	for _, m := range msgs {
		ids = append(ids, m.ID)
		if p.failFirst[m.ID] {
			delete(p.failFirst, m.ID)
			pe.Failed = append(pe.Failed, reliable.MessageError{MessageID: m.ID, Err: reliable.ErrNotConfirmed})
		}
	}
	p.calls = append(p.calls, ids)
	if len(pe.Failed) > 0 {
		return pe
	}
	return nil
}

func (p *partialPublisher) Close() error { return nil }

func TestPublishAsyncStampsRefusesAndDelegates(t *testing.T) {
	b := newBroker(t)
	p, _ := producer.New(b.AsyncPublisher(), producer.Config{Source: "order-service", MaxMessageBytes: 1024})
	got := make(chan error, 1)
	m := &reliable.Message{Topic: "orders", Payload: []byte("ok")}
	if err := p.PublishAsync(context.Background(), m, func(_ *reliable.Message, err error) { got <- err }); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	if ms := b.Messages("orders"); len(ms) != 1 || ms[0].ID != m.ID || ms[0].Headers[reliable.HeaderSource] != "order-service" {
		t.Fatalf("published %v, want message %s stamped with its source", ms, m.ID)
	}

	// L13: a message over the limit is refused before anything is sent,
	// with the permanent error itself, and done is never called.
	big := &reliable.Message{Topic: "orders", Payload: []byte(strings.Repeat("x", 2000))}
	err := p.PublishAsync(context.Background(), big, func(*reliable.Message, error) { t.Error("done called for a refused message") })
	var tl *reliable.MessageTooLargeError
	if !errors.As(err, &tl) || !reliable.IsPermanent(err) {
		t.Fatalf("got %v, want a permanent *MessageTooLargeError", err)
	}

	// A publisher without PublishAsync: the caller is told to use Publish.
	sync, _ := producer.New(b.Publisher(), producer.Config{})
	err = sync.PublishAsync(context.Background(), m, func(*reliable.Message, error) {})
	if !errors.Is(err, errors.ErrUnsupported) {
		t.Fatalf("got %v, want errors.ErrUnsupported", err)
	}
	if n := len(b.Messages("orders")); n != 1 {
		t.Fatalf("%d messages published, want 1", n)
	}
}
