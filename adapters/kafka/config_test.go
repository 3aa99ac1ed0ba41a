package kafka

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"

	"github.com/reliable-go/reliable"
)

func TestConfigValidateListsEveryProblem(t *testing.T) {
	cfg := Config{
		Brokers:  []string{"no-port"},
		Version:  sarama.V2_0_0_0,
		SASL:     SASL{Mechanism: "GSSAPI"},
		Producer: ProducerConfig{MaxMessageBytes: -1, Retries: -2},
		Consumer: ConsumerConfig{DrainTimeout: time.Minute, RebalanceTimeout: 30 * time.Second},
		Audit:    AuditConfig{Policy: 42},
	}
	err := cfg.Validate()
	var ce *reliable.ConfigError
	if !errors.As(err, &ce) || !errors.Is(err, reliable.ErrInvalidConfig) {
		t.Fatalf("Validate() = %v, want a *reliable.ConfigError", err)
	}
	for _, want := range []string{"no-port", "Version", "SASL.Mechanism", "MaxMessageBytes", "Retries", "DrainTimeout", "Audit.Policy"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() does not mention %s: %v", want, err)
		}
	}
}

func TestConfigZeroValueNeedsOnlyBrokers(t *testing.T) {
	if err := (Config{}).Validate(); err == nil || !strings.Contains(err.Error(), "Brokers is empty") {
		t.Fatalf("empty config: %v", err)
	}
	if err := (Config{Brokers: []string{"127.0.0.1:9092"}}).Validate(); err != nil {
		t.Fatalf("minimal config: %v", err)
	}
}

func TestSaramaConfigIsDurable(t *testing.T) {
	cfg := Config{Brokers: []string{"127.0.0.1:9092"}}.withDefaults()
	p, err := cfg.saramaConfig(roleProducer)
	if err != nil {
		t.Fatal(err)
	}
	// L06: acks=all, idempotence, one in-flight request, retries, no auto-create.
	if p.Producer.RequiredAcks != sarama.WaitForAll || !p.Producer.Idempotent || p.Net.MaxOpenRequests != 1 ||
		p.Producer.Retry.Max < 1000 || p.Metadata.AllowAutoTopicCreation || !p.Producer.Return.Successes ||
		!p.Version.IsAtLeast(sarama.V2_8_0_0) {
		t.Fatalf("producer config not durable: %+v", p.Producer)
	}
	if got := p.Producer.Partitioner("t"); fmt.Sprintf("%T", got) != fmt.Sprintf("%T", sarama.NewMurmur2Partitioner("t")) {
		t.Fatalf("partitioner is %T, want murmur2", got)
	}
	c, err := cfg.saramaConfig(roleConsumer)
	if err != nil {
		t.Fatal(err)
	}
	// L04: manual commits; a new group starts at the oldest record.
	if c.Consumer.Offsets.AutoCommit.Enable || c.Consumer.Offsets.Initial != sarama.OffsetOldest || !c.Consumer.Return.Errors ||
		c.Consumer.IsolationLevel != sarama.ReadCommitted {
		t.Fatalf("consumer config not safe: %+v", c.Consumer.Offsets)
	}
}

func TestTuneThatWeakensIsLogged(t *testing.T) {
	var buf bytes.Buffer
	cfg := Config{
		Brokers: []string{"127.0.0.1:9092"},
		Logger:  slog.New(slog.NewTextHandler(&buf, nil)),
		Tune:    func(c *sarama.Config) { c.Consumer.Offsets.AutoCommit.Enable = true },
	}.withDefaults()
	if _, err := cfg.saramaConfig(roleConsumer); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "AutoCommit") {
		t.Fatalf("weakening not logged: %q", buf.String())
	}
}

func TestSecretsNeverPrinted(t *testing.T) {
	const password = "hunter2-very-secret"
	cfg := Config{
		Brokers: []string{"127.0.0.1:9092"},
		SASL:    SASL{Mechanism: SASLScramSHA512, User: "svc", Password: password},
	}
	var logs bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&logs, nil))
	log.Info("config", "cfg", cfg, "sasl", cfg.SASL, "password", cfg.SASL.Password)
	js, err := json.Marshal(cfg.SASL)
	if err != nil {
		t.Fatal(err)
	}
	outputs := map[string]string{
		"%v":   fmt.Sprintf("%v", cfg),
		"%+v":  fmt.Sprintf("%+v", cfg),
		"%#v":  fmt.Sprintf("%#v", cfg),
		"%s":   fmt.Sprintf("%s", cfg.SASL.Password), //lint:ignore S1025 the test checks what fmt's %s verb prints of a secret
		"sasl": fmt.Sprintf("%+v %#v", cfg.SASL, cfg.SASL),
		"json": string(js),
		"slog": logs.String(),
	}
	// A bad config's error must not echo the password either.
	bad := cfg
	bad.Brokers = nil
	outputs["error"] = bad.Validate().Error()
	for name, out := range outputs {
		if strings.Contains(out, password) {
			t.Errorf("%s leaks the password: %s", name, out)
		}
	}
	if !strings.Contains(outputs["%v"], redacted) || !strings.Contains(outputs["slog"], redacted) {
		t.Errorf("redaction marker missing: %s / %s", outputs["%v"], outputs["slog"])
	}
}

func TestEnvironmentPrefix(t *testing.T) {
	if got := (Config{Environment: "prod"}).prefix(); got != "prod." {
		t.Fatalf("prefix = %q", got)
	}
	if got := (Config{Environment: "prod", DisableEnvironmentPrefix: true}).prefix(); got != "" {
		t.Fatalf("prefix with DisableEnvironmentPrefix = %q", got)
	}
}
