package kafka_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/adapters/kafka"
	"github.com/reliable-go/reliable/consumer"
)

// This file is in package kafka_test because package consumer imports this
// package.

// L07: the environment prefixes topics and groups, and a message from
// another environment that reaches a consumer anyway is never handed to the
// handler: the consumer pipeline dead-letters it.
func TestWrongEnvironment(t *testing.T) {
	brokers := kafka.KafkaBrokers(t)
	topic := kafka.UniqueName("orders")
	kafka.CreateTopic(t, brokers, "prod."+topic, 1, nil)
	kafka.CreateTopic(t, brokers, "staging."+topic, 1, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	prodCfg := kafka.TestConfig(t)
	prodCfg.Environment = "prod"
	prod, err := kafka.NewProducer(prodCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	pm := &reliable.Message{Topic: topic, Key: "order-1", Payload: []byte("prod")}
	if err := prod.Publish(ctx, pm); err != nil {
		t.Fatal(err)
	}
	recs := kafka.ReadAll(t, brokers, "prod."+topic)
	if len(recs) != 1 {
		t.Fatalf("prod.%s holds %d records, want 1", topic, len(recs))
	}
	if got := kafka.FromRecord(recs[0], topic).Headers[reliable.HeaderEnvironment]; got != "prod" {
		t.Fatalf("environment header %q", got)
	}

	// A staging consumer reads staging.<topic> with group staging.<group>:
	// the prod message is not there. The wrong-environment message that the
	// staging topic does hold (a misconfigured producer wrote it) is
	// dead-lettered by the pipeline, never handled.
	misCfg := kafka.TestConfig(t)
	misCfg.Environment = "prod"
	misCfg.DisableEnvironmentPrefix = true
	mis, err := kafka.NewProducer(misCfg)
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
	stCfg := kafka.TestConfig(t)
	stCfg.Environment = "staging"
	st, err := kafka.NewProducer(stCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.Publish(ctx, right); err != nil {
		t.Fatal(err)
	}

	subCfg := kafka.TestConfig(t)
	subCfg.Environment = "staging"
	subCfg.Consumer.Group = kafka.UniqueName("kitchen")
	sub, err := kafka.NewSubscriber(subCfg)
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
		Logger: kafka.TestLogger(),
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
