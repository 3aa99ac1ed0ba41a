package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/IBM/sarama"
	"github.com/spf13/cobra"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/adapters/kafka"
)

// kafkaFlags are the connection flags of Kafka commands.
type kafkaFlags struct {
	brokers     string
	version     string
	dialTimeout time.Duration
	tls         tlsFlags
	sasl        saslFlags
}

func (k *kafkaFlags) register(f *flags) {
	f.StringVar(&k.brokers, "brokers", "", "Kafka bootstrap addresses, host:port,... (default $"+envKafkaBrokers+")")
	f.StringVar(&k.version, "kafka-version", kafka.DefaultVersion.String(), "oldest Kafka version of the cluster")
	f.DurationVar(&k.dialTimeout, "dial-timeout", 5*time.Second, "timeout of each connection attempt to a broker")
	k.tls.register(f.FlagSet, "kafka", "Kafka", envKafkaCAFile, envKafkaCertFile, envKafkaKeyFile)
	k.sasl.register(f.FlagSet)
}

// kafkaConn is an open client and cluster admin, closed together.
type kafkaConn struct {
	client sarama.Client
	admin  sarama.ClusterAdmin
}

func (c *kafkaConn) Close() { _ = c.admin.Close() } // closes the client too

// saramaConfig returns the brokers' addresses and a client configuration
// with k's version, timeouts, TLS and SASL.
func (a *app) saramaConfig(k *kafkaFlags) ([]string, *sarama.Config, error) {
	brokers, err := a.endpoint("brokers", k.brokers, envKafkaBrokers)
	if err != nil {
		return nil, nil, err
	}
	if brokers == "" {
		return nil, nil, usagef("no Kafka brokers: set --brokers or $%s", envKafkaBrokers)
	}
	version, err := sarama.ParseKafkaVersion(k.version)
	if err != nil {
		return nil, nil, usagef("--kafka-version: %v", err)
	}
	var addrs []string
	for _, b := range strings.Split(brokers, ",") {
		if b = strings.TrimSpace(b); b != "" {
			addrs = append(addrs, b)
		}
	}
	cfg := sarama.NewConfig()
	cfg.ClientID = "reliablectl"
	cfg.Version = version
	cfg.Net.DialTimeout = k.dialTimeout
	cfg.Metadata.AllowAutoTopicCreation = false
	forceTLS := false
	switch strings.ToLower(strings.TrimSpace(a.getenv(envKafkaTLS))) {
	case "", "0", "false", "no":
	default:
		forceTLS = true
	}
	tc, err := k.tls.config(a, envKafkaCAFile, envKafkaCertFile, envKafkaKeyFile, forceTLS)
	if err != nil {
		return nil, nil, err
	}
	if tc != nil {
		cfg.Net.TLS.Enable = true
		cfg.Net.TLS.Config = tc
	}
	if err := k.sasl.apply(a, cfg); err != nil {
		return nil, nil, err
	}
	return addrs, cfg, nil
}

// kafkaError adds what to check to the errors of an unreachable or refusing
// cluster.
func kafkaError(err error) error {
	switch {
	case errors.Is(err, sarama.ErrSASLAuthenticationFailed):
		return fmt.Errorf("%w (check the SASL user, password and mechanism)", err)
	case errors.Is(err, sarama.ErrUnsupportedSASLMechanism):
		return fmt.Errorf("%w (the listener does not offer this --kafka-sasl-mechanism)", err)
	}
	return err
}

// withKafka runs work on a client of k's cluster (or the environment's)
// within --timeout, and closes it after.
func (f *flags) withKafka(ctx context.Context, k *kafkaFlags, work func(context.Context, *kafkaConn) error) error {
	open := func(ctx context.Context) (*kafkaConn, error) { return f.a.connectKafka(ctx, k) }
	return within(ctx, f, open, (*kafkaConn).Close, work)
}

// connect opens a client on the brokers of k (or the environment). An
// unreachable cluster fails within about the dial timeout, or ctx's end.
func (a *app) connectKafka(ctx context.Context, k *kafkaFlags) (*kafkaConn, error) {
	addrs, cfg, err := a.saramaConfig(k)
	if err != nil {
		return nil, err
	}
	cfg.Net.ReadTimeout = 15 * time.Second
	cfg.Net.WriteTimeout = 15 * time.Second
	cfg.Metadata.Retry.Max = 1
	cfg.Metadata.Retry.Backoff = 100 * time.Millisecond
	cfg.Admin.Retry.Max = 3
	cfg.Admin.Timeout = 15 * time.Second

	type result struct {
		c   *kafkaConn
		err error
	}
	done := make(chan result, 1)
	go func() {
		client, err := sarama.NewClient(addrs, cfg)
		if err != nil {
			done <- result{err: fmt.Errorf("cannot reach Kafka at %s: %w", strings.Join(addrs, ","), kafkaError(err))}
			return
		}
		admin, err := sarama.NewClusterAdminFromClient(client)
		if err != nil {
			_ = client.Close()
			done <- result{err: fmt.Errorf("kafka cluster admin: %w", err)}
			return
		}
		done <- result{c: &kafkaConn{client: client, admin: admin}}
	}()
	select {
	case r := <-done:
		return r.c, r.err
	case <-ctx.Done():
		go func() { // close whatever connects late
			if r := <-done; r.c != nil {
				r.c.Close()
			}
		}()
		return nil, fmt.Errorf("cannot reach Kafka at %s: %w", strings.Join(addrs, ","), ctx.Err())
	}
}

// check is one line of an audit report.
type check struct {
	Resource string `json:"resource"`
	Check    string `json:"check"`
	Value    string `json:"value"`
	Want     string `json:"want"`
	Status   string `json:"status"` // pass, warn, fail
	Why      string `json:"why,omitempty"`
	Fix      string `json:"fix,omitempty"`
}

const (
	statusPass = "pass"
	statusWarn = "warn"
	statusFail = "fail"
)

// auditReport is the output of the audit commands.
type auditReport struct {
	Checks []check `json:"checks"`
	Pass   int     `json:"pass"`
	Warn   int     `json:"warn"`
	Fail   int     `json:"fail"`
}

func (r *auditReport) add(c check) {
	r.Checks = append(r.Checks, c)
	switch c.Status {
	case statusPass:
		r.Pass++
	case statusWarn:
		r.Warn++
	case statusFail:
		r.Fail++
	}
}

// print writes the report and returns a findingsError when a check failed,
// or warned with strict.
func (a *app) printAudit(f *flags, r *auditReport, strict bool) error {
	err := a.emit(f, r, func(w io.Writer) {
		row(w, "RESOURCE", "CHECK", "VALUE", "WANT", "STATUS")
		for _, c := range r.Checks {
			row(w, c.Resource, c.Check, c.Value, c.Want, strings.ToUpper(c.Status))
		}
		for _, c := range r.Checks {
			if c.Status != statusPass {
				fmt.Fprintf(w, "\n%s %s %s: %s\n  fix: %s\n", strings.ToUpper(c.Status), c.Resource, c.Check, c.Why, c.Fix)
			}
		}
		fmt.Fprintf(w, "\n%d pass, %d warn, %d fail\n", r.Pass, r.Warn, r.Fail)
	})
	if err != nil {
		return err
	}
	if r.Fail > 0 || (strict && r.Warn > 0) {
		return &findingsError{msg: fmt.Sprintf("%d checks failed, %d warnings", r.Fail, r.Warn)}
	}
	return nil
}

func auditKafka(a *app) *cobra.Command {
	f := a.newFlags("audit kafka", "--topic NAME[,NAME...] [flags]", `
Checks each topic's durability settings (L06) with the SDK's audit
(adapters/kafka.Audit): replication factor, min.insync.replicas and unclean
leader election fail when they can lose acknowledged messages. It also warns
about partitions whose replicas are out of sync now, min.insync.replicas equal
to the replication factor (one broker down stops every write), and topics with
a single partition (one consumer per group, L15). Each finding says how to fix
it. Topic names are Kafka's, with the environment prefix (prod.orders).`)
	var k kafkaFlags
	k.register(f)
	var topics listFlag
	f.Var(&topics, "topic", "topic to audit (repeatable, or comma-separated)")
	env := f.registerEnvironment("kafka")
	env.prefixList(&topics)
	minRF := f.Int("min-replication-factor", kafka.DefaultMinReplicationFactor, "fewest replicas a partition may have")
	minISR := f.Int("min-insync-replicas", kafka.DefaultMinInsyncReplicas, "lowest min.insync.replicas allowed")
	strict := f.Bool("strict", false, "exit 1 on warnings too")
	return f.runE(func(ctx context.Context) error {
		if len(topics) == 0 {
			return usagef("--topic is required")
		}
		if *minRF < 1 || *minISR < 1 {
			return usagef("--min-replication-factor and --min-insync-replicas must be at least 1")
		}
		return f.withKafka(ctx, &k, func(ctx context.Context, conn *kafkaConn) error {
			findings, err := kafka.Audit(ctx, conn.admin, kafka.AuditConfig{MinReplicationFactor: *minRF, MinInsyncReplicas: *minISR}, topics...)
			if err != nil {
				if errors.Is(err, reliable.ErrUnknownTopic) {
					return fmt.Errorf("%w (%s)", err, env.hint())
				}
				return err
			}
			failed := make(map[[2]string]kafka.Finding)
			for _, fd := range findings {
				failed[[2]string{fd.Topic, fd.Setting}] = fd
			}
			metas, err := conn.admin.DescribeTopics(topics)
			if err != nil {
				return fmt.Errorf("describe topics: %w", err)
			}
			configs, err := topicConfigs(conn.admin, topics)
			if err != nil {
				return err
			}
			brokers, _ := a.endpoint("brokers", k.brokers, envKafkaBrokers)
			bootstrap := strings.Split(brokers, ",")[0]
			alter := func(topic, setting string) string {
				return fmt.Sprintf("kafka-configs.sh --bootstrap-server %s --alter --entity-type topics --entity-name %s --add-config %s", bootstrap, topic, setting)
			}

			var r auditReport
			for _, m := range metas {
				rf, partitions := -1, len(m.Partitions)
				var lagging []string
				for _, p := range m.Partitions {
					if rf < 0 || len(p.Replicas) < rf {
						rf = len(p.Replicas)
					}
					if len(p.Isr) < len(p.Replicas) {
						lagging = append(lagging, strconv.Itoa(int(p.ID)))
					}
				}
				slices.Sort(lagging)
				t := m.Name
				c := check{Resource: t, Check: "replication.factor", Value: strconv.Itoa(rf), Want: ">= " + strconv.Itoa(*minRF), Status: statusPass}
				if fd, ok := failed[[2]string{t, "replication.factor"}]; ok {
					c.Status, c.Why = statusFail, fd.Why+" (L06)"
					c.Fix = fmt.Sprintf("add replicas with kafka-reassign-partitions.sh (a plan listing %d brokers per partition), or recreate the topic with --replication-factor %d", *minRF, *minRF)
				}
				r.add(c)

				isr := configs[t]["min.insync.replicas"]
				c = check{Resource: t, Check: "min.insync.replicas", Value: isr, Want: fmt.Sprintf(">= %d and < replication factor", *minISR), Status: statusPass}
				if fd, ok := failed[[2]string{t, "min.insync.replicas"}]; ok {
					c.Status, c.Why, c.Want = statusFail, fd.Why+" (L06)", fd.Want
					c.Fix = alter(t, "min.insync.replicas="+strconv.Itoa(wantISR(*minISR, rf)))
				} else if n, err := strconv.Atoi(isr); err == nil && n == rf && rf > 1 {
					c.Status = statusWarn
					c.Why = "equal to the replication factor: with one replica down no acks=all write succeeds, and producers stall"
					c.Fix = alter(t, "min.insync.replicas="+strconv.Itoa(rf-1))
				}
				r.add(c)

				unclean := configs[t]["unclean.leader.election.enable"]
				c = check{Resource: t, Check: "unclean.leader.election.enable", Value: unclean, Want: "false", Status: statusPass}
				if fd, ok := failed[[2]string{t, "unclean.leader.election.enable"}]; ok {
					c.Status, c.Why = statusFail, fd.Why+" (L06)"
					c.Fix = alter(t, "unclean.leader.election.enable=false")
				}
				r.add(c)

				c = check{Resource: t, Check: "in-sync replicas", Value: "all in sync", Want: "every replica in sync", Status: statusPass}
				if len(lagging) > 0 {
					c.Status, c.Value = statusWarn, "partitions "+strings.Join(lagging, ",")+" under-replicated"
					c.Why = "a replica is behind or its broker is down: the topic runs with less redundancy than configured"
					c.Fix = "check the brokers hosting those replicas (kafka-topics.sh --describe --under-replicated-partitions)"
				}
				r.add(c)

				c = check{Resource: t, Check: "partitions", Value: strconv.Itoa(partitions), Want: "> 1", Status: statusPass}
				if partitions == 1 {
					c.Status = statusWarn
					c.Why = "one partition is consumed by one member of a group: adding consumers cannot drain a backlog (L15)"
					c.Fix = "kafka-topics.sh --alter --topic " + t + " --partitions N (keys then map to other partitions: let consumers drain first)"
				}
				r.add(c)
			}
			return a.printAudit(f, &r, *strict)
		})
	})
}

// topicConfigs reads the two durability configs of topics: topic -> name ->
// value.
func topicConfigs(admin sarama.ClusterAdmin, topics []string) (map[string]map[string]string, error) {
	res := make([]*sarama.ConfigResource, len(topics))
	for i, t := range topics {
		res[i] = &sarama.ConfigResource{Type: sarama.TopicResource, Name: t,
			ConfigNames: []string{"min.insync.replicas", "unclean.leader.election.enable"}}
	}
	results, err := admin.DescribeConfigs(res, sarama.DescribeConfigsOptions{})
	if err != nil {
		return nil, fmt.Errorf("describe topic configs: %w", err)
	}
	out := make(map[string]map[string]string, len(results))
	for _, r := range results {
		out[r.Name] = make(map[string]string)
		for _, e := range r.Configs {
			out[r.Name][e.Name] = e.Value
		}
	}
	return out, nil
}

// wantISR is the min.insync.replicas to suggest: the required minimum, but
// below the replication factor when it allows, so one broker may be down.
func wantISR(minISR, rf int) int {
	if rf > minISR {
		return minISR
	}
	return max(rf-1, 1)
}
