package smoke_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/jackc/pgx/v5"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"

	"github.com/reliable-go/reliable/internal/testenv"
)

// produce sends one message with the durable settings and returns its position;
// it fails the test when ctx ends first.
func produce(ctx context.Context, t *testing.T, p sarama.SyncProducer, msg *sarama.ProducerMessage) (int32, int64) {
	t.Helper()
	type result struct {
		partition int32
		offset    int64
		err       error
	}
	ch := make(chan result, 1)
	go func() {
		part, off, err := p.SendMessage(msg)
		ch <- result{part, off, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("produce to %s: %v", msg.Topic, r.err)
		}
		return r.partition, r.offset
	case <-ctx.Done():
		t.Fatalf("produce to %s: %v", msg.Topic, ctx.Err())
	}
	return 0, 0
}

// consume reads n messages of topic/partition from offset.
func consume(ctx context.Context, t *testing.T, brokers []string, topic string, partition int32, offset int64, n int) []*sarama.ConsumerMessage {
	t.Helper()
	c, err := sarama.NewConsumer(brokers, testenv.SaramaConfig())
	if err != nil {
		t.Fatalf("consumer: %v", err)
	}
	defer c.Close()
	pc, err := c.ConsumePartition(topic, partition, offset)
	if err != nil {
		t.Fatalf("consume %s/%d: %v", topic, partition, err)
	}
	defer pc.Close()
	var got []*sarama.ConsumerMessage
	for len(got) < n {
		select {
		case m := <-pc.Messages():
			got = append(got, m)
		case err := <-pc.Errors():
			t.Fatalf("consume %s/%d: %v", topic, partition, err)
		case <-ctx.Done():
			t.Fatalf("consume %s/%d: got %d of %d messages: %v", topic, partition, len(got), n, ctx.Err())
		}
	}
	return got
}

func TestKafkaProduceConsume(t *testing.T) {
	ctx := testenv.Context(t, 90*time.Second)
	brokers := testenv.Kafka(t)
	topic := testenv.UniqueName(t, "smoke")
	testenv.CreateTopic(t, brokers, topic, 3)

	admin := testenv.ClusterAdmin(t, brokers)
	clusterBrokers, _, err := admin.DescribeCluster()
	if err != nil {
		t.Fatalf("describe cluster: %v", err)
	}
	wantReplicas := min(3, len(clusterBrokers))
	if testenv.Required() && len(clusterBrokers) != 3 {
		t.Errorf("cluster has %d brokers, want 3", len(clusterBrokers))
	}
	md, err := admin.DescribeTopics([]string{topic})
	if err != nil || len(md) != 1 || md[0].Err != sarama.ErrNoError {
		t.Fatalf("describe topic: %v %v", err, md)
	}
	if len(md[0].Partitions) != 3 {
		t.Fatalf("topic has %d partitions, want 3", len(md[0].Partitions))
	}
	for _, p := range md[0].Partitions {
		if len(p.Replicas) != wantReplicas || len(p.Isr) != wantReplicas {
			t.Errorf("partition %d: replicas %v, ISR %v; want %d of each", p.ID, p.Replicas, p.Isr, wantReplicas)
		}
	}
	if wantReplicas == 3 {
		results, err := admin.DescribeConfigs([]*sarama.ConfigResource{{
			Type: sarama.TopicResource, Name: topic, ConfigNames: []string{"min.insync.replicas"},
		}}, sarama.DescribeConfigsOptions{})
		if err != nil || len(results) != 1 || len(results[0].Configs) != 1 || results[0].Configs[0].Value != "2" {
			t.Errorf("min.insync.replicas of %s: %v %+v, want 2", topic, err, results)
		}
	}

	conf := testenv.SaramaConfig()
	if conf.Producer.RequiredAcks != sarama.WaitForAll || !conf.Producer.Idempotent || conf.Net.MaxOpenRequests != 1 {
		t.Fatal("testenv.SaramaConfig is not the durable producer config")
	}
	p, err := sarama.NewSyncProducer(brokers, conf)
	if err != nil {
		t.Fatalf("producer: %v", err)
	}
	defer p.Close()
	part, off := produce(ctx, t, p, &sarama.ProducerMessage{
		Topic:   topic,
		Key:     sarama.StringEncoder("order-42"),
		Value:   sarama.StringEncoder(`{"event":"placed"}`),
		Headers: []sarama.RecordHeader{{Key: []byte("ce_id"), Value: []byte("msg-1")}},
	})
	got := consume(ctx, t, brokers, topic, part, off, 1)[0]
	if string(got.Key) != "order-42" || string(got.Value) != `{"event":"placed"}` ||
		len(got.Headers) != 1 || string(got.Headers[0].Value) != "msg-1" {
		t.Fatalf("consumed %q=%q headers %v", got.Key, got.Value, got.Headers)
	}
}

func TestRabbitMQPublishConfirmConsume(t *testing.T) {
	ctx := testenv.Context(t, 60*time.Second)
	conn, err := amqp.DialConfig(testenv.AMQPURL(t), amqp.Config{
		Dial:       amqp.DefaultDial(5 * time.Second),
		Properties: amqp.Table{"connection_name": "smoke-" + t.Name()},
	})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatalf("channel: %v", err)
	}
	if err := ch.Confirm(false); err != nil {
		t.Fatalf("confirm mode: %v", err)
	}
	queue := testenv.UniqueName(t, "smoke")
	if _, err := ch.QueueDeclare(queue, true, false, false, false, amqp.Table{"x-queue-type": "quorum"}); err != nil {
		t.Fatalf("declare queue: %v", err)
	}
	t.Cleanup(func() {
		if c, err := conn.Channel(); err == nil {
			_, _ = c.QueueDelete(queue, false, false, false)
			_ = c.Close()
		}
	})
	// The consistent-hash exchange plugin must be enabled (key-ordered sharding).
	exchange := testenv.UniqueName(t, "smoke_hash")
	if err := ch.ExchangeDeclare(exchange, "x-consistent-hash", false, true, false, false, nil); err != nil {
		t.Fatalf("x-consistent-hash exchange (plugin enabled?): %v", err)
	}

	returns := ch.NotifyReturn(make(chan amqp.Return, 1))
	dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", queue, true, false, amqp.Publishing{
		DeliveryMode: amqp.Persistent,
		MessageId:    "msg-1",
		ContentType:  "application/json",
		Body:         []byte(`{"event":"placed"}`),
	})
	if err != nil {
		t.Fatalf("publish: %v", err)
	}
	acked, err := dc.WaitContext(ctx)
	if err != nil || !acked {
		t.Fatalf("publisher confirm: acked=%v err=%v", acked, err)
	}
	select {
	case r := <-returns:
		t.Fatalf("message returned: %d %s", r.ReplyCode, r.ReplyText)
	default:
	}

	if err := ch.Qos(10, 0, false); err != nil {
		t.Fatalf("qos: %v", err)
	}
	deliveries, err := ch.ConsumeWithContext(ctx, queue, "smoke", false, false, false, false, nil)
	if err != nil {
		t.Fatalf("consume: %v", err)
	}
	select {
	case d := <-deliveries:
		if d.MessageId != "msg-1" || string(d.Body) != `{"event":"placed"}` || d.DeliveryMode != amqp.Persistent {
			t.Fatalf("delivery %q %q mode %d", d.MessageId, d.Body, d.DeliveryMode)
		}
		if err := d.Ack(false); err != nil {
			t.Fatalf("ack: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("no delivery")
	}
	if err := ch.Cancel("smoke", false); err != nil {
		t.Fatalf("cancel: %v", err)
	}
	// After the ack the queue is empty (poll: the ack is asynchronous).
	for {
		q, err := ch.QueueDeclarePassive(queue, true, false, false, false, amqp.Table{"x-queue-type": "quorum"})
		if err != nil {
			t.Fatalf("inspect queue: %v", err)
		}
		if q.Messages == 0 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("queue still has %d messages after the ack", q.Messages)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func TestRedisRoundTrip(t *testing.T) {
	ctx := testenv.Context(t, 30*time.Second)
	rdb := redis.NewClient(&redis.Options{Addr: testenv.RedisAddr(t)})
	defer rdb.Close()
	key := testenv.UniqueName(t, "smoke")
	if err := rdb.Set(ctx, key, "done", time.Minute).Err(); err != nil {
		t.Fatalf("set: %v", err)
	}
	defer rdb.Del(context.Background(), key)
	ok, err := rdb.SetNX(ctx, key, "again", time.Minute).Result()
	if err != nil || ok {
		t.Fatalf("SetNX on an existing key: ok=%v err=%v", ok, err)
	}
	v, err := rdb.Get(ctx, key).Result()
	if err != nil || v != "done" {
		t.Fatalf("get: %q %v", v, err)
	}
}

func TestPostgresRoundTrip(t *testing.T) {
	ctx := testenv.Context(t, 30*time.Second)
	conn, err := pgx.Connect(ctx, testenv.PostgresDSN(t))
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer conn.Close(context.Background())
	table := testenv.UniqueName(t, "smoke")
	if _, err := conn.Exec(ctx, fmt.Sprintf(`CREATE TABLE %s (id bigint PRIMARY KEY, body text NOT NULL)`, table)); err != nil {
		t.Fatalf("create table: %v", err)
	}
	defer conn.Exec(context.Background(), "DROP TABLE IF EXISTS "+table)
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, "INSERT INTO "+table+" (id, body) VALUES ($1, $2)", 1, "placed")
		return err
	})
	if err != nil {
		t.Fatalf("insert: %v", err)
	}
	var body string
	if err := conn.QueryRow(ctx, "SELECT body FROM "+table+" WHERE id = $1", 1).Scan(&body); err != nil || body != "placed" {
		t.Fatalf("select: %q %v", body, err)
	}
	// A rolled back transaction leaves nothing behind.
	errRollback := errors.New("rollback")
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "INSERT INTO "+table+" (id, body) VALUES (2, 'x')"); err != nil {
			return err
		}
		return errRollback
	})
	if !errors.Is(err, errRollback) {
		t.Fatalf("rollback: %v", err)
	}
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM "+table).Scan(&n); err != nil || n != 1 {
		t.Fatalf("rows after rollback: %d %v", n, err)
	}
}

// TestKafkaBrokerKillAndRestart is the harness test for fault tests: kill -9 the
// leader of a partition, produce with acks=all (2 of 3 replicas in sync satisfy
// min.insync.replicas=2), start the broker again and wait until the cluster is
// whole, then read back every message.
func TestKafkaBrokerKillAndRestart(t *testing.T) {
	cluster := testenv.KafkaCluster(t) // may wait for other packages' Kafka tests
	ctx := testenv.Context(t, 4*time.Minute)
	brokers := cluster.Brokers()
	topic := testenv.UniqueName(t, "smoke_kill")
	testenv.CreateTopic(t, brokers, topic, 1)

	p, err := sarama.NewSyncProducer(brokers, testenv.SaramaConfig())
	if err != nil {
		t.Fatalf("producer: %v", err)
	}
	defer p.Close()
	_, first := produce(ctx, t, p, &sarama.ProducerMessage{Topic: topic, Value: sarama.StringEncoder("before")})

	leader, err := cluster.Leader(ctx, topic, 0)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := cluster.KillBroker(ctx, leader); err != nil {
		t.Fatal(err)
	}
	t.Logf("killed broker %d (leader of %s/0) at %s", leader, topic, cluster.BrokerAddr(leader))

	// acks=all must succeed with the two remaining replicas (after failover).
	_, _ = produce(ctx, t, p, &sarama.ProducerMessage{Topic: topic, Value: sarama.StringEncoder("during")})
	t.Logf("produced with broker %d down after %v", leader, time.Since(start).Round(time.Millisecond))
	if err := cluster.WaitBrokerGone(ctx, leader); err != nil {
		t.Fatal(err)
	}
	newLeader, err := cluster.Leader(ctx, topic, 0)
	if err != nil {
		t.Fatal(err)
	}
	if newLeader == leader {
		t.Fatalf("broker %d still leads %s/0 after being killed", leader, topic)
	}
	if isr, err := cluster.ISR(topic, 0); err != nil || len(isr) != 2 || slices.Contains(isr, leader) {
		t.Errorf("ISR with broker %d down: %v %v, want the 2 others", leader, isr, err)
	}

	if err := cluster.StartBroker(ctx, leader); err != nil {
		t.Fatal(err)
	}
	if err := cluster.WaitHealthy(ctx, topic); err != nil {
		t.Fatal(err)
	}
	t.Logf("cluster whole again %v after the kill", time.Since(start).Round(time.Millisecond))
	if isr, err := cluster.ISR(topic, 0); err != nil || len(isr) != 3 {
		t.Errorf("ISR after restart: %v %v, want 3 replicas", isr, err)
	}
	_, _ = produce(ctx, t, p, &sarama.ProducerMessage{Topic: topic, Value: sarama.StringEncoder("after")})

	got := consume(ctx, t, brokers, topic, 0, first, 3)
	for i, want := range []string{"before", "during", "after"} {
		if string(got[i].Value) != want {
			t.Errorf("message %d = %q, want %q", i, got[i].Value, want)
		}
	}
}

// TestKafkaBrokerGracefulStop stops a follower gracefully, produces, and starts it.
func TestKafkaBrokerGracefulStop(t *testing.T) {
	cluster := testenv.KafkaCluster(t)
	ctx := testenv.Context(t, 3*time.Minute)
	brokers := cluster.Brokers()
	topic := testenv.UniqueName(t, "smoke_stop")
	testenv.CreateTopic(t, brokers, topic, 1)
	leader, err := cluster.Leader(ctx, topic, 0)
	if err != nil {
		t.Fatal(err)
	}
	var follower int32
	for _, id := range cluster.BrokerIDs() {
		if id != leader {
			follower = id
			break
		}
	}
	if err := cluster.StopBroker(ctx, follower); err != nil {
		t.Fatal(err)
	}
	p, err := sarama.NewSyncProducer(brokers, testenv.SaramaConfig())
	if err != nil {
		t.Fatalf("producer: %v", err)
	}
	defer p.Close()
	_, off := produce(ctx, t, p, &sarama.ProducerMessage{Topic: topic, Value: sarama.StringEncoder("x")})
	if err := cluster.StartBroker(ctx, follower); err != nil {
		t.Fatal(err)
	}
	if err := cluster.WaitHealthy(ctx, topic); err != nil {
		t.Fatal(err)
	}
	if got := consume(ctx, t, brokers, topic, 0, off, 1); string(got[0].Value) != "x" {
		t.Fatalf("consumed %q", got[0].Value)
	}
}

// TestRabbitMQCloseConnectionsAndRestart checks the RabbitMQ fault controls: a
// force-closed connection sees CONNECTION_FORCED, and a persistent message in a
// durable queue survives a full server restart.
func TestRabbitMQCloseConnectionsAndRestart(t *testing.T) {
	rmq := testenv.RabbitMQ(t) // may wait for other packages' RabbitMQ tests
	ctx := testenv.Context(t, 3*time.Minute)
	name := "smoke-" + testenv.UniqueName(t, "conn")
	dial := func() *amqp.Connection {
		conn, err := amqp.DialConfig(rmq.AMQPURL(), amqp.Config{
			Dial:       amqp.DefaultDial(5 * time.Second),
			Properties: amqp.Table{"connection_name": name},
		})
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		return conn
	}
	conn := dial()
	closed := conn.NotifyClose(make(chan *amqp.Error, 1))
	// The management API lists a connection shortly after it opens.
	for {
		n, err := rmq.CloseConnections(ctx, func(c testenv.RabbitConnection) bool { return c.ConnectionName() == name })
		if err != nil {
			t.Fatal(err)
		}
		if n == 1 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal("connection never listed by the management API")
		case <-time.After(100 * time.Millisecond):
		}
	}
	select {
	case e := <-closed:
		if e == nil || e.Code != amqp.ConnectionForced {
			t.Fatalf("close reason %v, want CONNECTION_FORCED", e)
		}
	case <-ctx.Done():
		t.Fatal("connection not closed")
	}

	conn = dial()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	queue := testenv.UniqueName(t, "smoke_restart")
	if _, err := ch.QueueDeclare(queue, true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", queue, true, false,
		amqp.Publishing{DeliveryMode: amqp.Persistent, Body: []byte("survives")})
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := dc.WaitContext(ctx); err != nil || !ok {
		t.Fatalf("confirm: %v %v", ok, err)
	}
	closed = conn.NotifyClose(make(chan *amqp.Error, 1))
	start := time.Now()
	if err := rmq.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("RabbitMQ restarted in %v", time.Since(start).Round(time.Millisecond))
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("connection survived a server restart")
	}

	conn = dial()
	defer conn.Close()
	ch, err = conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	defer ch.QueueDelete(queue, false, false, false)
	d, ok, err := ch.Get(queue, false)
	if err != nil || !ok || string(d.Body) != "survives" {
		t.Fatalf("after restart: ok=%v err=%v body=%q", ok, err, d.Body)
	}
	if err := d.Ack(false); err != nil {
		t.Fatal(err)
	}
}
