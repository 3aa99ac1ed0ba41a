package kafka

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/reliable-go/reliable"
)

// L13: a message over the limit fails before anything is sent, with an error
// that says what to do; a topic whose broker-side limit is lower than the
// producer's gets the same typed error from the broker, and is not retried.
func TestOversizedMessage(t *testing.T) {
	brokers := kafkaBrokers(t)
	topic := uniqueName("oversize")
	createTopic(t, brokers, topic, 1, map[string]string{"max.message.bytes": "2000"})
	p, err := NewProducer(testConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	big := &reliable.Message{Topic: topic, Key: "order-1", Payload: bytes.Repeat([]byte("x"), DefaultMaxMessageBytes+1)}
	small := &reliable.Message{Topic: topic, Key: "order-1", Payload: []byte("ok")}
	err = p.Publish(ctx, small, big)
	var tooLarge *reliable.MessageTooLargeError
	if !errors.As(err, &tooLarge) || tooLarge.MessageID != big.ID || tooLarge.Max != DefaultMaxMessageBytes {
		t.Fatalf("publish of an oversized message: %v, want *reliable.MessageTooLargeError for %s", err, big.ID)
	}
	if !strings.Contains(err.Error(), "ID and status") {
		t.Errorf("the error does not say what to do: %v", err)
	}
	if recs := readAll(t, brokers, topic); len(recs) != 0 {
		t.Fatalf("%d records sent although the batch held an oversized message", len(recs))
	}

	// Under the producer's limit but over the topic's max.message.bytes.
	start := time.Now()
	err = p.Publish(ctx, &reliable.Message{Topic: topic, Payload: bytes.Repeat([]byte("y"), 5000)})
	if !errors.Is(err, reliable.ErrMessageTooLarge) || !reliable.IsPermanent(err) {
		t.Fatalf("publish over the topic's limit: %v, want ErrMessageTooLarge", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("the broker's refusal took %s: it was retried", d)
	}
	if recs := readAll(t, brokers, topic); len(recs) != 0 {
		t.Fatalf("%d records written", len(recs))
	}
}

// An unknown topic fails at once: topics are never created implicitly.
func TestUnknownTopicFailsFast(t *testing.T) {
	p, err := NewProducer(testConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	err = p.Publish(ctx, &reliable.Message{Topic: uniqueName("missing"), Payload: []byte("x")})
	if !errors.Is(err, reliable.ErrUnknownTopic) {
		t.Fatalf("publish to a missing topic: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("took %s", d)
	}
}

// Issue 13: the key and the headers count toward Producer.MaxMessageBytes
// like the payload: a message whose key alone, or whose headers alone, are
// over the limit fails before anything is sent with a
// *reliable.MessageTooLargeError, and the producer keeps publishing other
// messages afterwards.
func TestOversizedKeyAndHeaders(t *testing.T) {
	brokers := kafkaBrokers(t)
	topic := uniqueName("oversize-key")
	createTopic(t, brokers, topic, 1, nil)
	cfg := testConfig(t)
	cfg.Producer.MaxMessageBytes = 4096
	p, err := NewProducer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, m := range []*reliable.Message{
		{Topic: topic, Key: strings.Repeat("k", 5000), Payload: []byte("x")},
		{Topic: topic, Key: "order-1", Headers: map[string]string{"x-big": strings.Repeat("h", 5000)}, Payload: []byte("x")},
		{Topic: topic, Key: "order-1", Headers: map[string]string{strings.Repeat("n", 5000): "v"}, Payload: []byte("x")},
	} {
		err := p.Publish(ctx, m)
		var tooLarge *reliable.MessageTooLargeError
		if !errors.As(err, &tooLarge) || tooLarge.Max != 4096 || tooLarge.Size <= 4096 {
			t.Fatalf("publish with key of %d bytes and headers %d: %v, want *reliable.MessageTooLargeError", len(m.Key), len(m.Headers), err)
		}
	}
	if err := p.Publish(ctx, &reliable.Message{Topic: topic, Key: "order-1", Payload: []byte("fine")}); err != nil {
		t.Fatalf("publish after the refusals: %v", err)
	}
	if recs := readAll(t, brokers, topic); len(recs) != 1 {
		t.Fatalf("%d records in the topic, want the 1 that fits", len(recs))
	}
}
