package main

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"

	"github.com/reliable-go/reliable/internal/testenv"
)

// kafkaEnv returns the environment naming the test cluster.
func kafkaEnv(t *testing.T) ([]string, map[string]string) {
	brokers := testenv.Kafka(t)
	return brokers, map[string]string{envKafkaBrokers: strings.Join(brokers, ",")}
}

// produce writes n records to each partition of counts (partition -> n).
func produce(t *testing.T, brokers []string, topic string, counts map[int32]int) {
	t.Helper()
	cfg := testenv.SaramaConfig()
	cfg.Producer.Partitioner = sarama.NewManualPartitioner
	p, err := sarama.NewSyncProducer(brokers, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	var msgs []*sarama.ProducerMessage
	for part, n := range counts {
		for i := range n {
			msgs = append(msgs, &sarama.ProducerMessage{Topic: topic, Partition: part,
				Key: sarama.StringEncoder("k" + strconv.Itoa(int(part))), Value: sarama.StringEncoder(strconv.Itoa(i))})
		}
	}
	if err := p.SendMessages(msgs); err != nil {
		t.Fatal(err)
	}
}

// commit sets group's committed offsets on topic (partition -> offset).
func commit(t *testing.T, admin sarama.ClusterAdmin, group, topic string, offsets map[int32]int64) {
	t.Helper()
	m := map[string]map[int32]sarama.OffsetAndMetadata{topic: {}}
	for p, o := range offsets {
		m[topic][p] = sarama.OffsetAndMetadata{Offset: o, LeaderEpoch: -1}
	}
	resp, err := admin.AlterConsumerGroupOffsets(group, m, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, ps := range resp.Errors {
		for p, kerr := range ps {
			if kerr != sarama.ErrNoError {
				t.Fatalf("commit partition %d: %v", p, kerr)
			}
		}
	}
}

// committed returns group's committed offsets on topic.
func committed(t *testing.T, admin sarama.ClusterAdmin, group, topic string, partitions int32) map[int32]int64 {
	t.Helper()
	ps := make([]int32, partitions)
	for i := range ps {
		ps[i] = int32(i)
	}
	resp, err := admin.ListConsumerGroupOffsets(group, map[string][]int32{topic: ps})
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[int32]int64)
	for _, p := range ps {
		if b := resp.GetBlock(topic, p); b != nil {
			out[p] = b.Offset
		}
	}
	return out
}

// L06: the audit passes a topic created durably and fails, with the fix for
// each setting, one that can lose acknowledged messages.
func TestAuditKafka(t *testing.T) {
	brokers, env := kafkaEnv(t)
	good := testenv.UniqueName(t, "good")
	weak := testenv.UniqueName(t, "weak")
	testenv.CreateTopic(t, brokers, good, 3)
	yes, one := "true", "1"
	testenv.CreateTopicWith(t, brokers, weak, &sarama.TopicDetail{NumPartitions: 1, ReplicationFactor: 1,
		ConfigEntries: map[string]*string{"min.insync.replicas": &one, "unclean.leader.election.enable": &yes}})

	r := cli(t, env, "audit", "kafka", "--topic", good)
	r.expect(t, exitOK, "")
	if !strings.Contains(r.stdout, "0 warn, 0 fail") {
		t.Fatalf("a durable topic did not pass cleanly:\n%s", r.stdout)
	}

	r = cli(t, env, "audit", "kafka", "--topic", good+","+weak, "--output", "json")
	r.expect(t, exitFailure, "3 checks failed, 1 warnings")
	var rep auditReport
	r.decode(t, &rep)
	status := map[string]check{}
	for _, c := range rep.Checks {
		if c.Resource == weak {
			status[c.Check] = c
		}
	}
	for name, want := range map[string]string{
		"replication.factor": statusFail, "min.insync.replicas": statusFail,
		"unclean.leader.election.enable": statusFail, "partitions": statusWarn, "in-sync replicas": statusPass,
	} {
		if c := status[name]; c.Status != want {
			t.Errorf("%s: status %q, want %q (%+v)", name, c.Status, want, c)
		} else if want != statusPass && (c.Fix == "" || c.Why == "") {
			t.Errorf("%s: no fix or reason: %+v", name, c)
		}
	}
	if fix := status["unclean.leader.election.enable"].Fix; !strings.Contains(fix, "--add-config unclean.leader.election.enable=false") || !strings.Contains(fix, weak) {
		t.Errorf("unclean fix %q", fix)
	}

	// --strict turns warnings into a failure.
	cli(t, env, "audit", "kafka", "--topic", good, "--strict").expect(t, exitOK, "")

	// An unknown topic is an error, not a pass.
	cli(t, env, "audit", "kafka", "--topic", testenv.UniqueName(t, "missing")).expect(t, exitFailure, "unknown topic")
}

// L14: lag per partition, and a warning when one partition holds most of
// the backlog.
func TestLag(t *testing.T) {
	brokers, env := kafkaEnv(t)
	admin := testenv.ClusterAdmin(t, brokers)
	topic := testenv.UniqueName(t, "orders")
	group := testenv.UniqueName(t, "kitchen")
	testenv.CreateTopic(t, brokers, topic, 4)
	// A hot merchant: partition 0 gets most of the traffic.
	produce(t, brokers, topic, map[int32]int{0: 30, 1: 3, 2: 3, 3: 3})
	commit(t, admin, group, topic, map[int32]int64{0: 2, 1: 1, 2: 3})

	r := cli(t, env, "lag", "--group", group, "--topic", topic, "--skew-min-lag", "10", "--output", "json")
	r.expect(t, exitOK, "")
	var rep lagReport
	r.decode(t, &rep)
	if rep.Total != 28+2+0+3 || len(rep.Topics) != 1 || len(rep.Topics[0].Partitions) != 4 {
		t.Fatalf("lag report %+v", rep)
	}
	want := map[int32][2]int64{0: {2, 28}, 1: {1, 2}, 2: {3, 0}, 3: {-1, 3}} // committed, lag
	for _, p := range rep.Topics[0].Partitions {
		if w := want[p.Partition]; p.Committed != w[0] || p.Lag != w[1] {
			t.Errorf("partition %d: committed %d lag %d, want %v", p.Partition, p.Committed, p.Lag, w)
		}
	}
	if len(rep.Skewed) != 1 || rep.Skewed[0].Partition != 0 {
		t.Fatalf("skew not reported on partition 0: %+v", rep.Skewed)
	}
	if rep.State != "Empty" || rep.Members != 0 {
		t.Errorf("group state %q members %d", rep.State, rep.Members)
	}

	// The table says the same, with the warning; without --topic the
	// group's committed topics are used.
	r = cli(t, env, "lag", "--group", group, "--skew-min-lag", "10")
	r.expect(t, exitOK, "")
	if !strings.Contains(r.stdout, "WARN partition 0 of "+topic+" holds 85% of its backlog") {
		t.Errorf("no skew warning in the table:\n%s", r.stdout)
	}
	// The default minimum lag keeps a small backlog quiet.
	if r := cli(t, env, "lag", "--group", group, "--topic", topic); strings.Contains(r.stdout, "WARN") {
		t.Errorf("skew warned below the minimum lag")
	}
	// --max-lag lets a script fail on a backlog.
	cli(t, env, "lag", "--group", group, "--topic", topic, "--max-lag", "20").expect(t, exitFailure, "total lag 33 is above --max-lag 20")

	cli(t, env, "lag", "--group", testenv.UniqueName(t, "nogroup")).expect(t, exitFailure, "does not exist")
	cli(t, env, "lag", "--group", group, "--topic", testenv.UniqueName(t, "notopic")).expect(t, exitFailure, "does not exist")
}

// L07: a misconfigured consumer committed a production group's offsets past
// messages production never handled; the operator moves the group back to a
// time. A dry run changes nothing, --execute applies, and a group with a live
// member is refused.
func TestOffsetsReset(t *testing.T) {
	brokers, env := kafkaEnv(t)
	admin := testenv.ClusterAdmin(t, brokers)
	topic := testenv.UniqueName(t, "orders")
	group := testenv.UniqueName(t, "kitchen")
	testenv.CreateTopic(t, brokers, topic, 2)

	produce(t, brokers, topic, map[int32]int{0: 5, 1: 4})
	time.Sleep(1100 * time.Millisecond)
	incident := time.Now()
	time.Sleep(50 * time.Millisecond)
	produce(t, brokers, topic, map[int32]int{0: 3, 1: 2})
	// The wrong consumer took everything.
	commit(t, admin, group, topic, map[int32]int64{0: 8, 1: 6})
	before := committed(t, admin, group, topic, 2)

	at := incident.UTC().Format(time.RFC3339Nano)
	r := cli(t, env, "offsets", "reset", "--group", group, "--topic", topic, "--to-time", at, "--output", "json")
	r.expect(t, exitOK, "")
	var plan resetPlan
	r.decode(t, &plan)
	if plan.Executed || len(plan.Moves) != 2 {
		t.Fatalf("dry run plan %+v", plan)
	}
	for _, m := range plan.Moves {
		want := map[int32][3]int64{0: {8, 5, 3}, 1: {6, 4, 2}}[m.Partition] // current, new, replayed
		if m.Current != want[0] || m.New != want[1] || m.Replayed != want[2] {
			t.Errorf("partition %d: %+v, want current/new/replayed %v", m.Partition, m, want)
		}
	}
	if got := committed(t, admin, group, topic, 2); got[0] != before[0] || got[1] != before[1] {
		t.Fatalf("the dry run changed the offsets: %v -> %v", before, got)
	}
	r = cli(t, env, "offsets", "reset", "--group", group, "--topic", topic, "--to-time", at)
	r.expect(t, exitOK, "")
	if !strings.Contains(r.stdout, "dry run: nothing was changed") {
		t.Errorf("the table does not say it was a dry run:\n%s", r.stdout)
	}

	// A live member would overwrite the reset: refused, nothing changed.
	stop := joinGroup(t, brokers, group, topic)
	cli(t, env, "offsets", "reset", "--group", group, "--topic", topic, "--to-time", at, "--execute").
		expect(t, exitFailure, "active members")
	if got := committed(t, admin, group, topic, 2); got[0] != before[0] || got[1] != before[1] {
		t.Fatalf("a refused reset changed the offsets: %v -> %v", before, got)
	}
	stop()

	r = cli(t, env, "offsets", "reset", "--group", group, "--topic", topic, "--to-time", at, "--execute")
	r.expect(t, exitOK, "")
	if got := committed(t, admin, group, topic, 2); got[0] != 5 || got[1] != 4 {
		t.Fatalf("after --execute the offsets are %v, want 5 and 4", got)
	}

	// Offsets are clamped to the partition's range; one partition only.
	r = cli(t, env, "offsets", "reset", "--group", group, "--topic", topic, "--to-offset", "1000", "--partition", "1", "--execute", "--output", "json")
	r.expect(t, exitOK, "")
	if got := committed(t, admin, group, topic, 2); got[0] != 5 || got[1] != 6 {
		t.Fatalf("after a clamped reset of partition 1 the offsets are %v, want 5 and 6", got)
	}

	// Bad input: unknown topic, partition or group.
	cli(t, env, "offsets", "reset", "--group", group, "--topic", testenv.UniqueName(t, "nope"), "--to-offset", "0").expect(t, exitFailure, "does not exist")
	cli(t, env, "offsets", "reset", "--group", group, "--topic", topic, "--to-offset", "0", "--partition", "7").expect(t, exitFailure, "has no partition 7")
	newGroup := testenv.UniqueName(t, "newgroup")
	cli(t, env, "offsets", "reset", "--group", newGroup, "--topic", topic, "--to-offset", "earliest").expect(t, exitOK, "")
	cli(t, env, "offsets", "reset", "--group", newGroup, "--topic", topic, "--to-offset", "earliest", "--execute").expect(t, exitFailure, "does not exist")
}

// joinGroup makes a consumer-group member join group on topic and returns a
// function that makes it leave.
func joinGroup(t *testing.T, brokers []string, group, topic string) (stop func()) {
	t.Helper()
	cg, err := sarama.NewConsumerGroup(brokers, group, testenv.SaramaConfig())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	joined := make(chan struct{})
	var once sync.Once
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			_ = cg.Consume(ctx, []string{topic}, idleHandler{func() { once.Do(func() { close(joined) }) }})
		}
	}()
	select {
	case <-joined:
	case <-time.After(30 * time.Second):
		t.Fatal("the member did not join")
	}
	var stopOnce sync.Once
	stop = func() {
		stopOnce.Do(func() {
			cancel()
			wg.Wait()
			_ = cg.Close()
		})
	}
	t.Cleanup(stop)
	return stop
}

// idleHandler consumes nothing and commits nothing.
type idleHandler struct{ setup func() }

func (h idleHandler) Setup(sarama.ConsumerGroupSession) error   { h.setup(); return nil }
func (h idleHandler) Cleanup(sarama.ConsumerGroupSession) error { return nil }
func (h idleHandler) ConsumeClaim(s sarama.ConsumerGroupSession, _ sarama.ConsumerGroupClaim) error {
	<-s.Context().Done()
	return nil
}
