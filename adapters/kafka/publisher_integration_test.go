package kafka

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/consumer"
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

// L07: the environment prefixes topics and groups, and a message from
// another environment that reaches a consumer anyway is never handed to the
// handler: the consumer pipeline dead-letters it.
func TestWrongEnvironment(t *testing.T) {
	brokers := kafkaBrokers(t)
	topic := uniqueName("orders")
	createTopic(t, brokers, "prod."+topic, 1, nil)
	createTopic(t, brokers, "staging."+topic, 1, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	prodCfg := testConfig(t)
	prodCfg.Environment = "prod"
	prod, err := NewProducer(prodCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	pm := &reliable.Message{Topic: topic, Key: "order-1", Payload: []byte("prod")}
	if err := prod.Publish(ctx, pm); err != nil {
		t.Fatal(err)
	}
	recs := readAll(t, brokers, "prod."+topic)
	if len(recs) != 1 {
		t.Fatalf("prod.%s holds %d records, want 1", topic, len(recs))
	}
	if got := fromRecord(recs[0], topic).Headers[reliable.HeaderEnvironment]; got != "prod" {
		t.Fatalf("environment header %q", got)
	}

	// A staging consumer reads staging.<topic> with group staging.<group>:
	// the prod message is not there. The wrong-environment message that the
	// staging topic does hold (a misconfigured producer wrote it) is
	// dead-lettered by the pipeline, never handled.
	misCfg := testConfig(t)
	misCfg.Environment = "prod"
	misCfg.DisableEnvironmentPrefix = true
	mis, err := NewProducer(misCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer mis.Close()
	wrong := &reliable.Message{Topic: "staging." + topic, Key: "order-2", Payload: []byte("prod into staging")}
	right := &reliable.Message{Topic: topic, Key: "order-3", Payload: []byte("staging"),
		Headers: map[string]string{}}
	if err := mis.Publish(ctx, wrong); err != nil {
		t.Fatal(err)
	}
	stCfg := testConfig(t)
	stCfg.Environment = "staging"
	st, err := NewProducer(stCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.Publish(ctx, right); err != nil {
		t.Fatal(err)
	}

	subCfg := testConfig(t)
	subCfg.Environment = "staging"
	subCfg.Consumer.Group = uniqueName("kitchen")
	sub, err := NewSubscriber(subCfg)
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu      sync.Mutex
		handled []string
		dead    []string
	)
	c, err := consumer.New(sub, reliable.HandlerFunc(func(_ context.Context, m *reliable.Message) error {
		mu.Lock()
		handled = append(handled, m.ID)
		mu.Unlock()
		return nil
	}), consumer.Config{
		Topic:       topic,
		Environment: "staging",
		DeadLetter: deadLetterFunc(func(_ context.Context, m *reliable.Message, cause error) error {
			if !errors.Is(cause, reliable.ErrWrongEnvironment) {
				t.Errorf("dead-lettered %s for %v", m.ID, cause)
			}
			mu.Lock()
			dead = append(dead, m.ID)
			mu.Unlock()
			return nil
		}),
		Logger: testLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	runErr := make(chan error, 1)
	go func() { runErr <- c.Run(runCtx) }()
	for {
		mu.Lock()
		n := len(handled) + len(dead)
		mu.Unlock()
		if n >= 2 {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("timed out: handled %v, dead-lettered %v", handled, dead)
		}
		time.Sleep(20 * time.Millisecond)
	}
	stop()
	if err := <-runErr; err != nil {
		t.Fatalf("consumer: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(handled) != 1 || handled[0] != right.ID {
		t.Fatalf("handled %v, want only the staging message %s", handled, right.ID)
	}
	if len(dead) != 1 || dead[0] != wrong.ID {
		t.Fatalf("dead-lettered %v, want the prod message %s", dead, wrong.ID)
	}
}

type deadLetterFunc func(ctx context.Context, m *reliable.Message, cause error) error

func (f deadLetterFunc) DeadLetter(ctx context.Context, m *reliable.Message, cause error) error {
	return f(ctx, m, cause)
}
