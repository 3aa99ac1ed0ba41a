package kafka

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/reliable-go/reliable"
)

// L06: the startup audit reads the replication factor, min.insync.replicas
// and unclean.leader.election.enable of the topics in use.
func TestAudit(t *testing.T) {
	brokers := kafkaBrokers(t)
	good, weak := uniqueName("audit-good"), uniqueName("audit-weak")
	createTopic(t, brokers, good, 1, nil)
	createTopic(t, brokers, weak, 1, map[string]string{
		"_rf":                            "2",
		"min.insync.replicas":            "1",
		"unclean.leader.election.enable": "true",
	})
	oneReplica := uniqueName("audit-rf1")
	createTopic(t, brokers, oneReplica, 1, map[string]string{"_rf": "1", "min.insync.replicas": "2"})

	adm := adminClient(t, brokers)
	defer adm.Close()
	ctx := context.Background()
	findings, err := Audit(ctx, adm, AuditConfig{}, good)
	if err != nil || len(findings) != 0 {
		t.Fatalf("durable topic: findings %v, err %v", findings, err)
	}
	findings, err = Audit(ctx, adm, AuditConfig{}, weak, oneReplica)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{
		weak + " replication.factor": true, weak + " min.insync.replicas": true, weak + " unclean.leader.election.enable": true,
		oneReplica + " replication.factor": true, oneReplica + " min.insync.replicas": true, // minISR 2 > RF 1
	}
	for _, f := range findings {
		if !want[f.Topic+" "+f.Setting] {
			t.Errorf("unexpected finding: %s", f)
		}
		delete(want, f.Topic+" "+f.Setting)
	}
	for w := range want {
		t.Errorf("missing finding: %s", w)
	}
	if _, err := Audit(ctx, adm, AuditConfig{}, uniqueName("audit-missing")); !errors.Is(err, reliable.ErrUnknownTopic) {
		t.Errorf("audit of a missing topic: %v, want ErrUnknownTopic", err)
	}

	t.Run("StrictRefusesToStart", func(t *testing.T) {
		cfg := testConfig(t)
		cfg.Audit.Topics = []string{good, weak}
		_, err := NewProducer(cfg)
		var de *DurabilityError
		if !errors.Is(err, ErrNotDurable) || !errors.As(err, &de) || len(de.Findings) != 3 {
			t.Fatalf("NewProducer with a weak topic: %v, want a *DurabilityError with 3 findings", err)
		}
		if !reliable.IsPermanent(err) {
			t.Fatalf("audit failure is retryable: %v", err)
		}
	})
	t.Run("StrictPublishFailsFastNothingSent", func(t *testing.T) {
		p, err := NewProducer(testConfig(t))
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		start := time.Now()
		err = p.Publish(ctx, &reliable.Message{Topic: weak, Payload: []byte("x")})
		if !errors.Is(err, ErrNotDurable) || time.Since(start) > 10*time.Second {
			t.Fatalf("publish to a weak topic: %v after %s, want ErrNotDurable at once", err, time.Since(start))
		}
		if recs := readAll(t, brokers, weak); len(recs) != 0 {
			t.Fatalf("%d records written to the weak topic", len(recs))
		}
	})
	t.Run("WarnLogsAndPublishes", func(t *testing.T) {
		var buf syncBuffer
		cfg := testConfig(t)
		cfg.Audit.Policy = AuditWarn
		cfg.Logger = slog.New(slog.NewTextHandler(&buf, nil))
		p, err := NewProducer(cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		if err := p.Publish(ctx, &reliable.Message{Topic: weak, Payload: []byte("x")}); err != nil {
			t.Fatalf("publish with AuditWarn: %v", err)
		}
		if !strings.Contains(buf.String(), "unclean.leader.election.enable") {
			t.Fatalf("no warning logged: %s", buf.String())
		}
	})
}

// syncBuffer is a bytes.Buffer safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
