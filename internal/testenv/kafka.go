package testenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
)

// KafkaVersion is the protocol version testenv's sarama clients use; the local
// cluster runs Apache Kafka 4.4.0 by default or 3.9.1
// (RELIABLE_KAFKA_CLUSTER_VERSION), and sarama limits its requests to what
// the broker supports, so this works on both.
var KafkaVersion = sarama.V3_9_0_0

// SaramaConfig returns a sarama config for test clients: the durable producer
// settings of this SDK (acks=all, idempotent, one in-flight request, many
// retries), manual commits, oldest offset first, short timeouts.
func SaramaConfig() *sarama.Config {
	c := sarama.NewConfig()
	c.Version = KafkaVersion
	c.ClientID = "reliable-testenv"
	c.Net.DialTimeout = 5 * time.Second
	c.Net.ReadTimeout = 15 * time.Second
	c.Net.WriteTimeout = 15 * time.Second
	c.Metadata.Retry.Max = 10
	c.Metadata.Retry.Backoff = 250 * time.Millisecond
	c.Metadata.AllowAutoTopicCreation = false
	c.Admin.Timeout = 30 * time.Second
	c.Admin.Retry.Max = 10
	c.Admin.Retry.Backoff = 250 * time.Millisecond
	c.Producer.RequiredAcks = sarama.WaitForAll
	c.Producer.Idempotent = true
	c.Net.MaxOpenRequests = 1
	c.Producer.Retry.Max = 100
	c.Producer.Retry.Backoff = 200 * time.Millisecond
	c.Producer.Return.Successes = true
	c.Producer.Return.Errors = true
	c.Producer.Timeout = 10 * time.Second
	c.Consumer.Offsets.Initial = sarama.OffsetOldest
	c.Consumer.Offsets.AutoCommit.Enable = false
	c.Consumer.Return.Errors = true
	return c
}

// ClusterAdmin returns a sarama ClusterAdmin for brokers, closed when t ends.
func ClusterAdmin(t testing.TB, brokers []string) sarama.ClusterAdmin {
	t.Helper()
	admin, err := sarama.NewClusterAdmin(brokers, SaramaConfig())
	if err != nil {
		t.Fatalf("testenv: kafka admin: %v", err)
	}
	t.Cleanup(func() { _ = admin.Close() })
	return admin
}

// CreateTopic creates topic name with the given number of partitions and
// replication factor 3 (or the number of brokers, if fewer, as with a single-broker
// container), waits until every broker serves it with a leader for each partition,
// and deletes it when t ends.
func CreateTopic(t testing.TB, brokers []string, name string, partitions int32) {
	t.Helper()
	CreateTopicWith(t, brokers, name, &sarama.TopicDetail{NumPartitions: partitions})
}

// CreateTopicWith is CreateTopic with a full topic detail (config entries such as
// min.insync.replicas or retention); ReplicationFactor 0 means 3 (or the number of
// brokers, if fewer).
func CreateTopicWith(t testing.TB, brokers []string, name string, detail *sarama.TopicDetail) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if err := createTopic(ctx, brokers, name, detail); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	t.Cleanup(func() {
		if err := deleteTopic(brokers, name); err != nil {
			t.Logf("testenv: delete topic %s: %v", name, err)
		}
	})
}

func createTopic(ctx context.Context, brokers []string, name string, detail *sarama.TopicDetail) error {
	client, err := sarama.NewClient(brokers, SaramaConfig())
	if err != nil {
		return fmt.Errorf("kafka client: %w", err)
	}
	defer client.Close()
	d := *detail
	if d.NumPartitions <= 0 {
		d.NumPartitions = 1
	}
	if d.ReplicationFactor <= 0 {
		d.ReplicationFactor = int16(min(3, len(client.Brokers())))
	}
	admin, err := sarama.NewClusterAdminFromClient(client)
	if err != nil {
		return fmt.Errorf("kafka admin: %w", err)
	}
	// admin.Close would close the client too; the deferred client.Close does that.
	if err := admin.CreateTopic(name, &d, false); err != nil {
		return fmt.Errorf("create topic %s: %w", name, err)
	}
	// Wait until every broker's metadata has the topic with a leader per partition,
	// so that the first produce or fetch does not race metadata propagation.
	for {
		err := topicReadyOnAllBrokers(client, name, int(d.NumPartitions))
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("topic %s not ready: %w", name, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func topicReadyOnAllBrokers(client sarama.Client, topic string, partitions int) error {
	if err := client.RefreshMetadata(); err != nil {
		return err
	}
	conf := SaramaConfig()
	for _, b := range client.Brokers() {
		if ok, _ := b.Connected(); !ok {
			if err := b.Open(conf); err != nil && !errors.Is(err, sarama.ErrAlreadyConnected) {
				return err
			}
		}
		resp, err := b.GetMetadata(sarama.NewMetadataRequest(conf.Version, []string{topic}))
		if err != nil {
			return fmt.Errorf("broker %d: %w", b.ID(), err)
		}
		if len(resp.Topics) != 1 || resp.Topics[0].Err != sarama.ErrNoError {
			return fmt.Errorf("broker %d does not know topic %s yet", b.ID(), topic)
		}
		if len(resp.Topics[0].Partitions) != partitions {
			return fmt.Errorf("broker %d: %d of %d partitions", b.ID(), len(resp.Topics[0].Partitions), partitions)
		}
		for _, p := range resp.Topics[0].Partitions {
			if p.Err != sarama.ErrNoError || p.Leader < 0 {
				return fmt.Errorf("broker %d: partition %d has no leader", b.ID(), p.ID)
			}
		}
	}
	return nil
}

func deleteTopic(brokers []string, name string) error {
	admin, err := sarama.NewClusterAdmin(brokers, SaramaConfig())
	if err != nil {
		return err
	}
	defer admin.Close()
	err = admin.DeleteTopic(name)
	if errors.Is(err, sarama.ErrUnknownTopicOrPartition) {
		return nil
	}
	return err
}

// Cluster controls the brokers of the local Kafka cluster that scripts/services.sh
// runs: three combined broker+controller nodes with ids 1, 2 and 3. Methods are safe
// for concurrent use and may be called from any goroutine; they return errors rather
// than failing the test.
type Cluster struct {
	t       testing.TB
	brokers []string
	nodes   map[int32]string
	script  string
	env     []string

	mu      sync.Mutex
	touched map[int32]bool
}

// KafkaCluster returns control over the local 3-broker cluster, for fault tests. The
// test holds the cluster exclusively until it ends (fault tests of other packages,
// and their ordinary Kafka tests, wait). KafkaCluster first makes sure all brokers
// run and every partition is fully replicated; when the test ends it starts again
// every broker the test stopped or killed and waits until the cluster is whole.
//
// Without a local cluster (no env file, or Kafka in a container) the test skips, or
// fails under RELIABLE_REQUIRE_SERVICES=1.
func KafkaCluster(t testing.TB) *Cluster {
	t.Helper()
	v, src := find(t, "Kafka", EnvKafkaBrokers)
	brokers, err := hostPorts(v)
	if err != nil {
		t.Fatalf("testenv: bad %s: %v", EnvKafkaBrokers, err)
	}
	if src != viaLocal {
		unavailable(t, "testenv: Kafka runs in a container: no cluster control; %s", howToStart)
	}
	script := servicesScript()
	if script == "" {
		unavailable(t, "testenv: cannot control Kafka brokers: scripts/services.sh not found (%s)", EnvServicesScript)
	}
	nodes, err := kafkaNodes(brokers)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	lockService(t, "kafka", lockExclusive)
	// With the lock held no fault test has brokers down on purpose: if none answers,
	// the services are not running (skip or fail rather than start them from a test).
	probe(t, "Kafka", EnvKafkaBrokers, v, hostPorts)
	c := &Cluster{t: t, brokers: brokers, nodes: nodes, script: script, env: scriptEnv(), touched: map[int32]bool{}}

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := c.restore(ctx, c.BrokerIDs()); err != nil {
		t.Fatalf("testenv: kafka cluster is not whole before the test: %v", err)
	}
	t.Cleanup(func() {
		c.mu.Lock()
		var ids []int32
		for id := range c.touched {
			ids = append(ids, id)
		}
		c.mu.Unlock()
		slices.Sort(ids)
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		if err := c.restore(ctx, ids); err != nil {
			t.Errorf("testenv: restoring the kafka cluster after the test: %v", err)
		}
	})
	return c
}

// restore starts the brokers that do not run and waits until the cluster is
// whole. One stopped broker starts through the script's kafka-start; several start
// at once (StartAll): one at a time, a node would wait for a controller quorum
// that only the next ones form.
func (c *Cluster) restore(ctx context.Context, ids []int32) error {
	var down []int32
	for _, id := range c.BrokerIDs() {
		_, err := c.brokerPID(id)
		switch {
		case errors.Is(err, errNoProcess):
			down = append(down, id)
		case err != nil:
			// No pid files to look at: let the script start what it must.
			for _, id := range ids {
				if err := c.StartBroker(ctx, id); err != nil {
					return err
				}
			}
			return c.WaitHealthy(ctx)
		}
	}
	switch len(down) {
	case 0:
	case 1:
		if err := c.StartBroker(ctx, down[0]); err != nil {
			return err
		}
	default:
		return c.StartAll(ctx)
	}
	return c.WaitHealthy(ctx)
}

// kafkaNodes maps node ids to broker addresses: RELIABLE_KAFKA_NODES
// ("1@127.0.0.1:19092,2@...") when set, else ids 1, 2, 3... in the order of brokers.
func kafkaNodes(brokers []string) (map[int32]string, error) {
	nodes := map[int32]string{}
	if v, _ := Lookup(EnvKafkaNodes); v != "" {
		for _, n := range strings.Split(v, ",") {
			id, addr, ok := strings.Cut(strings.TrimSpace(n), "@")
			i, err := strconv.ParseInt(id, 10, 32)
			if !ok || err != nil {
				return nil, fmt.Errorf("bad %s entry %q (want id@host:port)", EnvKafkaNodes, n)
			}
			nodes[int32(i)] = addr
		}
		return nodes, nil
	}
	for i, b := range brokers {
		nodes[int32(i+1)] = b
	}
	return nodes, nil
}

// servicesScript returns the path of scripts/services.sh: RELIABLE_SERVICES_SCRIPT
// when it names an existing file, else the one in this repository.
func servicesScript() string {
	if v, _ := Lookup(EnvServicesScript); v != "" {
		if _, err := os.Stat(v); err == nil {
			return v
		}
	}
	if root := RepoRoot(); root != "" {
		p := filepath.Join(root, "scripts", "services.sh")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return ""
}

// scriptEnv passes the services' state directory on to the script.
func scriptEnv() []string {
	env := os.Environ()
	if v, _ := Lookup(EnvServicesDir); v != "" {
		env = append(env, EnvServicesDir+"="+v)
	}
	return env
}

func runScript(ctx context.Context, script string, env []string, args ...string) error {
	cmd := exec.CommandContext(ctx, "bash", append([]string{script}, args...)...)
	cmd.Env = env
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		s := strings.TrimSpace(string(out))
		if len(s) > 3000 {
			s = "..." + s[len(s)-3000:]
		}
		return fmt.Errorf("%s %s: %w\n%s", filepath.Base(script), strings.Join(args, " "), err, s)
	}
	return nil
}

// Brokers returns the bootstrap addresses of all brokers.
func (c *Cluster) Brokers() []string { return slices.Clone(c.brokers) }

// BrokerIDs returns the node ids, ascending.
func (c *Cluster) BrokerIDs() []int32 {
	ids := make([]int32, 0, len(c.nodes))
	for id := range c.nodes {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// BrokerAddr returns the address of broker id ("" for an unknown id).
func (c *Cluster) BrokerAddr(id int32) string { return c.nodes[id] }

func (c *Cluster) control(ctx context.Context, cmd string, id int32) error {
	if _, ok := c.nodes[id]; !ok {
		return fmt.Errorf("no kafka broker with id %d (have %v)", id, c.BrokerIDs())
	}
	if cmd != "start" {
		c.mu.Lock()
		c.touched[id] = true
		c.mu.Unlock()
	}
	return runScript(ctx, c.script, c.env, "kafka-"+cmd, strconv.Itoa(int(id)))
}

// StopBroker stops broker id gracefully (SIGTERM: controlled shutdown, leadership
// moves first) and returns once the process has exited.
func (c *Cluster) StopBroker(ctx context.Context, id int32) error { return c.control(ctx, "stop", id) }

// KillBroker kills broker id with SIGKILL (no controlled shutdown; the controller
// notices after broker.session.timeout.ms = 6 s) and returns once it is gone.
func (c *Cluster) KillBroker(ctx context.Context, id int32) error { return c.control(ctx, "kill", id) }

// StartBroker starts broker id (a no-op when it runs) and returns once its port
// accepts connections; use WaitHealthy to wait until it has rejoined.
func (c *Cluster) StartBroker(ctx context.Context, id int32) error {
	return c.control(ctx, "start", id)
}

// RestartBroker stops broker id gracefully and starts it again.
func (c *Cluster) RestartBroker(ctx context.Context, id int32) error {
	if err := c.StopBroker(ctx, id); err != nil {
		return err
	}
	return c.StartBroker(ctx, id)
}

// Health is a snapshot of the cluster as its metadata reports it.
type Health struct {
	Brokers         []int32  // registered, unfenced brokers
	UnderReplicated []string // "topic/partition" whose ISR is smaller than its replica set
	WithoutLeader   []string // "topic/partition" with no leader
	ControllerID    int32
	MissingBrokers  []int32 // expected node ids that are not registered
	UnknownTopics   []string
}

// Whole reports whether all brokers are registered and every partition looked at has
// a leader and all replicas in sync.
func (h Health) Whole() bool {
	return len(h.MissingBrokers) == 0 && len(h.UnderReplicated) == 0 &&
		len(h.WithoutLeader) == 0 && len(h.UnknownTopics) == 0
}

func (h Health) String() string {
	return fmt.Sprintf("brokers %v (missing %v), under-replicated %v, without leader %v, unknown topics %v",
		h.Brokers, h.MissingBrokers, h.UnderReplicated, h.WithoutLeader, h.UnknownTopics)
}

// Health reads the cluster's metadata through any broker that answers. With no
// topics it looks at every topic, internal ones included.
func (c *Cluster) Health(topics ...string) (Health, error) {
	var h Health
	conf := SaramaConfig()
	conf.Metadata.Retry.Max = 0
	conf.Net.DialTimeout = 2 * time.Second
	conf.Net.ReadTimeout = 5 * time.Second
	var lastErr error
	for _, addr := range c.brokers {
		b := sarama.NewBroker(addr)
		if err := b.Open(conf); err != nil {
			lastErr = err
			continue
		}
		req := sarama.NewMetadataRequest(conf.Version, topics)
		if len(topics) == 0 {
			req.Topics = nil // all topics
		}
		resp, err := b.GetMetadata(req)
		_ = b.Close()
		if err != nil {
			lastErr = err
			continue
		}
		h.ControllerID = resp.ControllerID
		registered := map[int32]bool{}
		for _, rb := range resp.Brokers {
			h.Brokers = append(h.Brokers, rb.ID())
			registered[rb.ID()] = true
		}
		slices.Sort(h.Brokers)
		for _, id := range c.BrokerIDs() {
			if !registered[id] {
				h.MissingBrokers = append(h.MissingBrokers, id)
			}
		}
		for _, tm := range resp.Topics {
			if tm.Err == sarama.ErrUnknownTopicOrPartition {
				h.UnknownTopics = append(h.UnknownTopics, tm.Name)
				continue
			}
			for _, p := range tm.Partitions {
				name := fmt.Sprintf("%s/%d", tm.Name, p.ID)
				if p.Leader < 0 || p.Err == sarama.ErrLeaderNotAvailable {
					h.WithoutLeader = append(h.WithoutLeader, name)
				}
				if len(p.Isr) < len(p.Replicas) {
					h.UnderReplicated = append(h.UnderReplicated, name)
				}
			}
		}
		return h, nil
	}
	return h, fmt.Errorf("no broker answered a metadata request: %w", lastErr)
}

// WaitHealthy waits until every broker is registered (unfenced) and every partition
// of topics (all topics when none are given) has a leader and its full replica set
// in sync.
func (c *Cluster) WaitHealthy(ctx context.Context, topics ...string) error {
	return c.waitFor(ctx, "a whole cluster", func(h Health) bool { return h.Whole() }, topics...)
}

// WaitBrokerGone waits until the cluster no longer lists broker id (the controller
// fenced it), which after a kill -9 takes up to broker.session.timeout.ms.
func (c *Cluster) WaitBrokerGone(ctx context.Context, id int32) error {
	return c.waitFor(ctx, fmt.Sprintf("broker %d to be fenced", id),
		func(h Health) bool { return !slices.Contains(h.Brokers, id) })
}

func (c *Cluster) waitFor(ctx context.Context, what string, ok func(Health) bool, topics ...string) error {
	var last Health
	var lastErr error
	for {
		h, err := c.Health(topics...)
		if err == nil && ok(h) {
			return nil
		}
		last, lastErr = h, err
		select {
		case <-ctx.Done():
			if lastErr != nil {
				return fmt.Errorf("waiting for %s: %w (last error: %v)", what, ctx.Err(), lastErr)
			}
			return fmt.Errorf("waiting for %s: %w (last: %s)", what, ctx.Err(), last)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// Leader returns the id of the broker leading topic/partition.
func (c *Cluster) Leader(ctx context.Context, topic string, partition int32) (int32, error) {
	for {
		leader, _, err := c.partitionState(topic, partition)
		if err == nil && leader >= 0 {
			return leader, nil
		}
		select {
		case <-ctx.Done():
			return -1, fmt.Errorf("leader of %s/%d: %w (last error: %v)", topic, partition, ctx.Err(), err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// ISR returns the in-sync replicas of topic/partition.
func (c *Cluster) ISR(topic string, partition int32) ([]int32, error) {
	_, isr, err := c.partitionState(topic, partition)
	return isr, err
}

func (c *Cluster) partitionState(topic string, partition int32) (int32, []int32, error) {
	conf := SaramaConfig()
	conf.Net.DialTimeout = 2 * time.Second
	var lastErr error
	for _, addr := range c.brokers {
		b := sarama.NewBroker(addr)
		if err := b.Open(conf); err != nil {
			lastErr = err
			continue
		}
		resp, err := b.GetMetadata(sarama.NewMetadataRequest(conf.Version, []string{topic}))
		_ = b.Close()
		if err != nil {
			lastErr = err
			continue
		}
		for _, tm := range resp.Topics {
			if tm.Err != sarama.ErrNoError {
				return -1, nil, tm.Err
			}
			for _, p := range tm.Partitions {
				if p.ID == partition {
					return p.Leader, p.Isr, nil
				}
			}
		}
		return -1, nil, fmt.Errorf("no partition %s/%d", topic, partition)
	}
	return -1, nil, lastErr
}
