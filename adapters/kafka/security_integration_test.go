package kafka

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/internal/testenv"
)

// Produce and consume over TLS (a CA the test generates) with SASL
// SCRAM-SHA-512, SCRAM-SHA-256 and PLAIN, against a real broker: a
// single-node Kafka the test starts from the cluster's jars with a SASL_SSL
// listener and SCRAM users created by kafka-storage format --add-scram
// (testenv.StartSecureKafka). A wrong password is a clear authentication
// error, not a retry loop, and the password appears in no log line or error.
func TestTLSAndSASL(t *testing.T) {
	node := testenv.StartSecureKafka(t)
	topic := uniqueName("secure")
	createTopic(t, []string{node.Plain}, topic, 1, map[string]string{"_rf": "1"})
	tlsCfg, err := LoadTLS(node.CAFile, "", "")
	if err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	config := func(mech SASLMechanism, password string) Config {
		return Config{
			Brokers: []string{node.Secure},
			TLS:     tlsCfg,
			SASL:    SASL{Mechanism: mech, User: testenv.SecureKafkaUser, Password: Secret(password)},
			// One node: the audit must accept a single replica here.
			Audit:  AuditConfig{MinReplicationFactor: 1, MinInsyncReplicas: 1},
			Logger: logger,
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	for _, mech := range []SASLMechanism{SASLScramSHA512, SASLScramSHA256, SASLPlain} {
		t.Run(string(mech), func(t *testing.T) {
			cfg := config(mech, testenv.SecureKafkaPassword)
			logger.Info("connecting", "config", cfg)
			p, err := NewProducer(cfg)
			if err != nil {
				t.Fatalf("NewProducer over SASL_SSL: %v", err)
			}
			defer p.Close()
			m := &reliable.Message{Topic: topic, Key: "order-1", Payload: []byte(string(mech))}
			if err := p.Publish(ctx, m); err != nil {
				t.Fatalf("publish: %v", err)
			}
			cfg.Consumer.Group = uniqueName("secure-g")
			sub, err := NewSubscriber(cfg)
			if err != nil {
				t.Fatalf("NewSubscriber over SASL_SSL: %v", err)
			}
			defer sub.Close()
			ch, err := sub.Subscribe(ctx, topic)
			if err != nil {
				t.Fatal(err)
			}
			for d := range ch {
				_ = d.Ack(ctx)
				if d.Message.ID == m.ID {
					return
				}
			}
			t.Fatal("delivery channel closed before the message arrived")
		})
	}

	t.Run("WrongPassword", func(t *testing.T) {
		const wrong = "not-the-password-xyz"
		start := time.Now()
		_, err := NewProducer(config(SASLScramSHA512, wrong))
		if !errors.Is(err, reliable.ErrNotAuthorized) {
			t.Fatalf("NewProducer with a wrong password: %v, want ErrNotAuthorized", err)
		}
		if d := time.Since(start); d > 15*time.Second {
			t.Fatalf("the authentication failure took %s: retried", d)
		}
		cfg := config(SASLScramSHA256, wrong)
		cfg.Consumer.Group = "g"
		_, serr := NewSubscriber(cfg)
		if !errors.Is(serr, reliable.ErrNotAuthorized) {
			t.Fatalf("NewSubscriber with a wrong password: %v, want ErrNotAuthorized", serr)
		}
		t.Logf("wrong password fails in %s with: %v", time.Since(start).Round(time.Millisecond), err)
		for _, s := range []string{err.Error(), serr.Error(), logs.String()} {
			if strings.Contains(s, wrong) || strings.Contains(s, testenv.SecureKafkaPassword) {
				t.Fatalf("a password leaked: %s", s)
			}
		}
	})
	if strings.Contains(logs.String(), testenv.SecureKafkaPassword) {
		t.Fatalf("the password appears in the logs:\n%s", logs.String())
	}
}
