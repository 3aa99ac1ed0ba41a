package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"

	"github.com/IBM/sarama"

	"github.com/reliable-go/reliable"
)

// AuditPolicy says what happens when a topic in use is not configured
// durably (L06).
type AuditPolicy int

const (
	// AuditDefault is AuditStrict for publishers and AuditWarn for
	// subscribers: the producer's write is what the settings protect.
	AuditDefault AuditPolicy = iota
	// AuditStrict refuses to use the topic: constructors fail, and Publish
	// fails with an error matching ErrNotDurable, listing every finding.
	AuditStrict
	// AuditWarn logs each finding once and goes on.
	AuditWarn
	// AuditOff skips the audit.
	AuditOff
)

func (p AuditPolicy) String() string {
	switch p {
	case AuditDefault:
		return "default"
	case AuditStrict:
		return "strict"
	case AuditWarn:
		return "warn"
	case AuditOff:
		return "off"
	}
	return "AuditPolicy(" + strconv.Itoa(int(p)) + ")"
}

// AuditConfig configures the durability audit. A topic passes when every
// partition has at least MinReplicationFactor replicas, min.insync.replicas
// is at least MinInsyncReplicas and at most the replication factor, and
// unclean.leader.election.enable is false.
type AuditConfig struct {
	// Policy defaults to AuditDefault.
	Policy AuditPolicy
	// MinReplicationFactor defaults to DefaultMinReplicationFactor (3).
	MinReplicationFactor int
	// MinInsyncReplicas defaults to DefaultMinInsyncReplicas (2).
	MinInsyncReplicas int
	// Topics (unprefixed) are audited when the publisher or subscriber is
	// built, so a misconfigured topic stops the service at startup. Other
	// topics are audited on first use.
	Topics []string
}

func (a AuditConfig) validate(p *reliable.Problems) {
	p.Addf(a.Policy < AuditDefault || a.Policy > AuditOff, "Audit.Policy %d is unknown", int(a.Policy))
	p.Addf(a.MinReplicationFactor < 0, "Audit.MinReplicationFactor is negative")
	p.Addf(a.MinInsyncReplicas < 0, "Audit.MinInsyncReplicas is negative")
}

func (a AuditConfig) withDefaults() AuditConfig {
	if a.MinReplicationFactor == 0 {
		a.MinReplicationFactor = DefaultMinReplicationFactor
	}
	if a.MinInsyncReplicas == 0 {
		a.MinInsyncReplicas = DefaultMinInsyncReplicas
	}
	return a
}

func (a AuditConfig) policyFor(r role) AuditPolicy {
	if a.Policy != AuditDefault {
		return a.Policy
	}
	if r == roleProducer {
		return AuditStrict
	}
	return AuditWarn
}

// Finding is one durability problem of a topic.
type Finding struct {
	Topic   string
	Setting string // "replication.factor", "min.insync.replicas", "unclean.leader.election.enable"
	Value   string // what the topic has
	Want    string // what the audit requires
	// Why says what can go wrong.
	Why string
}

func (f Finding) String() string {
	return fmt.Sprintf("topic %s: %s is %s, want %s (%s)", f.Topic, f.Setting, f.Value, f.Want, f.Why)
}

// DurabilityError lists every finding of a strict audit. It matches
// ErrNotDurable.
type DurabilityError struct {
	Findings []Finding
}

func (e *DurabilityError) Error() string {
	parts := make([]string, len(e.Findings))
	for i, f := range e.Findings {
		parts[i] = f.String()
	}
	return "kafka: durability audit failed: " + strings.Join(parts, "; ")
}

// Is makes errors.Is(err, ErrNotDurable) true.
func (e *DurabilityError) Is(target error) bool { return target == ErrNotDurable }

// Audit reads the replication factor, min.insync.replicas and
// unclean.leader.election.enable of topics (full Kafka names) and returns what
// falls short of cfg's requirements; cfg.Policy is ignored. A topic that does
// not exist is an error matching reliable.ErrUnknownTopic. sarama's admin
// calls do not take a context: ctx is checked between them, and each is
// bounded by the client's network timeouts.
func Audit(ctx context.Context, admin sarama.ClusterAdmin, cfg AuditConfig, topics ...string) ([]Finding, error) {
	cfg = cfg.withDefaults()
	if len(topics) == 0 {
		return nil, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	metas, err := admin.DescribeTopics(topics)
	if err != nil {
		return nil, fmt.Errorf("kafka: audit: describe topics: %w", err)
	}
	rf := make(map[string]int, len(metas))
	var findings []Finding
	for _, m := range metas {
		if m.Err != sarama.ErrNoError {
			if errors.Is(m.Err, sarama.ErrUnknownTopicOrPartition) {
				return nil, fmt.Errorf("kafka: audit: topic %q: %w", m.Name, reliable.ErrUnknownTopic)
			}
			return nil, fmt.Errorf("kafka: audit: topic %q: %w", m.Name, m.Err)
		}
		minRF := -1
		for _, p := range m.Partitions {
			if minRF < 0 || len(p.Replicas) < minRF {
				minRF = len(p.Replicas)
			}
		}
		rf[m.Name] = minRF
		if minRF < cfg.MinReplicationFactor {
			findings = append(findings, Finding{
				Topic: m.Name, Setting: "replication.factor", Value: strconv.Itoa(minRF),
				Want: ">= " + strconv.Itoa(cfg.MinReplicationFactor),
				Why:  "losing a broker can lose acknowledged messages",
			})
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	resources := make([]*sarama.ConfigResource, len(topics))
	for i, t := range topics {
		resources[i] = &sarama.ConfigResource{
			Type: sarama.TopicResource, Name: t,
			ConfigNames: []string{"min.insync.replicas", "unclean.leader.election.enable"},
		}
	}
	results, err := admin.DescribeConfigs(resources, sarama.DescribeConfigsOptions{})
	if err != nil {
		return nil, fmt.Errorf("kafka: audit: describe configs: %w", err)
	}
	for _, r := range results {
		if r.ErrorCode != 0 {
			return nil, fmt.Errorf("kafka: audit: configs of topic %q: %w", r.Name, &sarama.DescribeConfigError{Err: sarama.KError(r.ErrorCode), ErrMsg: r.ErrorMsg})
		}
		for _, e := range r.Configs {
			switch e.Name {
			case "min.insync.replicas":
				n, err := strconv.Atoi(e.Value)
				if err != nil {
					return nil, fmt.Errorf("kafka: audit: topic %q: min.insync.replicas %q: %w", r.Name, e.Value, err)
				}
				if n < cfg.MinInsyncReplicas {
					findings = append(findings, Finding{
						Topic: r.Name, Setting: "min.insync.replicas", Value: e.Value,
						Want: ">= " + strconv.Itoa(cfg.MinInsyncReplicas),
						Why:  "acks=all is satisfied by a single replica, whose loss loses acknowledged messages",
					})
				}
				if f, ok := rf[r.Name]; ok && n > f {
					findings = append(findings, Finding{
						Topic: r.Name, Setting: "min.insync.replicas", Value: e.Value,
						Want: "<= replication factor " + strconv.Itoa(f),
						Why:  "no acks=all write can ever succeed",
					})
				}
			case "unclean.leader.election.enable":
				if e.Value != "false" {
					findings = append(findings, Finding{
						Topic: r.Name, Setting: "unclean.leader.election.enable", Value: e.Value, Want: "false",
						Why: "an out-of-sync replica may become leader and drop acknowledged messages",
					})
				}
			}
		}
	}
	return findings, nil
}

// topicChecker checks, once per topic, that a topic exists (so publishing to
// a missing one fails fast instead of retrying) and passes the audit.
type topicChecker struct {
	client sarama.Client
	cfg    AuditConfig
	policy AuditPolicy
	log    *slog.Logger
	ok     sync.Map // topic -> struct{}

	mu  sync.Mutex
	adm sarama.ClusterAdmin
}

func newTopicChecker(client sarama.Client, cfg AuditConfig, policy AuditPolicy, log *slog.Logger) *topicChecker {
	return &topicChecker{client: client, cfg: cfg, policy: policy, log: log}
}

func (tc *topicChecker) known(topic string) bool {
	_, ok := tc.ok.Load(topic)
	return ok
}

// admin returns a cluster admin on the shared client, created on first use.
// It is never closed: closing it would close the client.
func (tc *topicChecker) admin() (sarama.ClusterAdmin, error) {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	if tc.adm == nil {
		adm, err := sarama.NewClusterAdminFromClient(tc.client)
		if err != nil {
			return nil, fmt.Errorf("kafka: cluster admin: %w", err)
		}
		tc.adm = adm
	}
	return tc.adm, nil
}

// check verifies the topics not yet known. Errors about a missing topic,
// authorization or a strict audit are permanent; others (the cluster being
// unreachable) are retryable.
func (tc *topicChecker) check(ctx context.Context, topics ...string) error {
	var todo []string
	for _, t := range topics {
		if tc.known(t) {
			continue
		}
		parts, err := tc.client.Partitions(t)
		switch {
		case errors.Is(err, sarama.ErrUnknownTopicOrPartition) || (err == nil && len(parts) == 0):
			return fmt.Errorf("kafka: topic %q does not exist (topics are never created implicitly): %w", t, reliable.ErrUnknownTopic)
		case err != nil && isAuthError(err):
			return fmt.Errorf("kafka: topic %q: %w: %w", t, reliable.ErrNotAuthorized, err)
		case err != nil:
			return fmt.Errorf("kafka: metadata of topic %q: %w: %w", t, reliable.ErrNotConfirmed, err)
		}
		todo = append(todo, t)
	}
	if len(todo) == 0 {
		return nil
	}
	if tc.policy != AuditOff {
		if err := tc.audit(ctx, todo); err != nil {
			return err
		}
	}
	for _, t := range todo {
		tc.ok.Store(t, struct{}{})
	}
	return nil
}

func (tc *topicChecker) audit(ctx context.Context, topics []string) error {
	adm, err := tc.admin()
	var findings []Finding
	if err == nil {
		findings, err = Audit(ctx, adm, tc.cfg, topics...)
	}
	if err != nil {
		// The topic exists (its metadata was just read), so an "unknown
		// topic" here is a broker that has not caught up yet: retryable.
		if isAuthError(err) {
			return fmt.Errorf("kafka: durability audit: %w: %w", reliable.ErrNotAuthorized, err)
		}
		if errors.Is(err, reliable.ErrUnknownTopic) {
			// Not wrapped: the permanent sentinel would stop the retries.
			err = fmt.Errorf("%w: a broker does not list the topic yet (%v)", reliable.ErrNotConfirmed, err)
		}
		if tc.policy == AuditStrict {
			// Retryable: the audit could not run, e.g. the cluster is down.
			return fmt.Errorf("kafka: durability audit could not run: %w", err)
		}
		tc.log.WarnContext(ctx, "kafka: durability audit could not run", slog.Any("topics", topics), slog.String("error", err.Error()))
		return nil
	}
	if len(findings) == 0 {
		return nil
	}
	if tc.policy == AuditStrict {
		return reliable.Permanent(&DurabilityError{Findings: findings})
	}
	for _, f := range findings {
		tc.log.WarnContext(ctx, "kafka: topic is not configured durably",
			slog.String("topic", f.Topic), slog.String("setting", f.Setting),
			slog.String("value", f.Value), slog.String("want", f.Want), slog.String("why", f.Why))
	}
	return nil
}

// forgetIfUnknown drops the cache when a record failed because its topic
// vanished, so the next publish checks again and fails fast.
func (tc *topicChecker) forgetIfUnknown(failed []reliable.MessageError) {
	for _, f := range failed {
		if errors.Is(f.Err, reliable.ErrUnknownTopic) {
			tc.ok.Clear()
			return
		}
	}
}
