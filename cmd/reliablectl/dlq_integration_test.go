package main

import (
	"context"
	"errors"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/adapters/rabbitmq"
	"github.com/reliable-go/reliable/internal/testenv"
)

// dlqFixture is a declared topic and group whose dead-letter queue holds
// four messages: two dead-lettered by the SDK (Subscriber.DeadLetter), one
// of them with a Java long's binary key, and two by the broker's delivery
// limit, one of them another client's (no ID header, no ce_key: its key is
// its routing key).
type dlqFixture struct {
	url, topic, group, dlq, queue string
	ch                            *amqp.Channel
	ids                           []string
	keys                          map[string]string // ID -> key
}

const javaLongKey = "\x00\x00\x00\x00\x00\x00\x00*"

func newDLQFixture(t *testing.T) *dlqFixture {
	t.Helper()
	fx := &dlqFixture{url: testenv.AMQPURL(t), topic: testenv.UniqueName(t, "orders"), group: "kitchen", keys: map[string]string{}}
	fx.dlq = rabbitmq.DeadLetterQueueName(fx.topic, fx.group)
	fx.queue = rabbitmq.QueueName(fx.topic, fx.group)
	ctx := testenv.Context(t, 60*time.Second)
	if err := rabbitmq.Declare(ctx, fx.url, fx.topic, []string{fx.group}, rabbitmq.WithTopology(rabbitmq.Topology{DeliveryLimit: 1})); err != nil {
		t.Fatal(err)
	}
	conn, err := amqp.Dial(fx.url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	if fx.ch, err = conn.Channel(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, q := range []string{fx.queue, fx.dlq} {
			_, _ = fx.ch.QueueDelete(q, false, false, false)
		}
		_ = fx.ch.ExchangeDelete(fx.topic, false, false)
		_ = fx.ch.ExchangeDelete(fx.topic+".dlx", false, false)
	})

	pub, err := rabbitmq.NewProducer(fx.url)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	sdk := []*reliable.Message{
		{Topic: fx.topic, Key: "o-1", Type: "order.placed", Payload: []byte(`{"n":1}`)},
		{Topic: fx.topic, Key: javaLongKey, Type: "order.paid", Payload: []byte(`{"n":2}`)},
		{Topic: fx.topic, Key: "o-3", Type: "order.placed", Payload: []byte(`{"n":3}`)},
	}
	for _, m := range sdk {
		if err := pub.Publish(ctx, m); err != nil {
			t.Fatal(err)
		}
		fx.ids = append(fx.ids, m.ID)
		fx.keys[m.ID] = m.Key
	}
	// Another client's message: no ce_ headers, its routing key is its key.
	if err := fx.ch.PublishWithContext(ctx, fx.topic, "foreign-key", false, false,
		amqp.Publishing{MessageId: "foreign-1", DeliveryMode: amqp.Persistent, Body: []byte("legacy")}); err != nil {
		t.Fatal(err)
	}
	fx.ids = append(fx.ids, "foreign-1")
	fx.keys["foreign-1"] = "foreign-key"

	// The SDK dead-letters the first two; the broker the other two after
	// they came back twice (delivery limit 1).
	sub, err := rabbitmq.NewSubscriber(fx.url, fx.group, rabbitmq.WithTopology(rabbitmq.Topology{DeliveryLimit: 1}))
	if err != nil {
		t.Fatal(err)
	}
	subCtx, stop := context.WithCancel(ctx)
	deliveries, err := sub.Subscribe(subCtx, fx.topic)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{sdk[0].ID: true, sdk[1].ID: true}
	for len(want) > 0 {
		select {
		case d := <-deliveries:
			if want[d.Message.ID] {
				if err := sub.DeadLetter(ctx, d.Message, reliable.Permanent(errors.New("price missing"))); err != nil {
					t.Fatal(err)
				}
				delete(want, d.Message.ID)
				_ = d.Ack(ctx)
			} else {
				_ = d.Nack(ctx)
			}
		case <-ctx.Done():
			t.Fatal("the SDK's messages did not arrive")
		}
	}
	stop()
	_ = sub.Close()
	// The broker dead-letters the other two once they came back past the
	// delivery limit.
	fx.nackUntil(t, 4)
	return fx
}

// waitDepth waits until queue holds n ready messages.
func (fx *dlqFixture) waitDepth(t *testing.T, queue string, n int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		q, err := fx.ch.QueueDeclarePassive(queue, true, false, false, false, nil)
		if err != nil {
			t.Fatal(err)
		}
		if q.Messages == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s holds %d messages, want %d", queue, q.Messages, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// consume calls f for each delivery of the group queue (a quorum queue with
// a single active consumer, which refuses basic.get) until f returns false
// or 30 s passed.
func (fx *dlqFixture) consume(t *testing.T, autoAck bool, f func(d amqp.Delivery) bool) {
	t.Helper()
	conn, err := amqp.Dial(fx.url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	ds, err := ch.Consume(fx.queue, "", autoAck, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	timeout := time.After(30 * time.Second)
	for {
		select {
		case d := <-ds:
			if !f(d) {
				return
			}
		case <-timeout:
			t.Fatal("the group queue's messages did not arrive within 30s")
		}
	}
}

// nackUntil returns the group queue's messages until the broker has
// dead-lettered them and the dead-letter queue holds n.
func (fx *dlqFixture) nackUntil(t *testing.T, n int) {
	t.Helper()
	conn, err := amqp.Dial(fx.url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	ds, err := ch.Consume(fx.queue, "", false, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.After(30 * time.Second)
	for {
		q, err := fx.ch.QueueDeclarePassive(fx.dlq, true, false, false, false, nil)
		if err != nil {
			t.Fatal(err)
		}
		if q.Messages >= n {
			return
		}
		select {
		case d := <-ds:
			_ = d.Nack(false, true)
		case <-time.After(100 * time.Millisecond):
		case <-deadline:
			t.Fatalf("%s holds %d messages after 30s, want %d", fx.dlq, q.Messages, n)
		}
	}
}

// drain consumes n messages of the group queue, by message ID.
func (fx *dlqFixture) drain(t *testing.T, n int) map[string]amqp.Delivery {
	t.Helper()
	out := map[string]amqp.Delivery{}
	if n == 0 {
		return out
	}
	fx.consume(t, true, func(d amqp.Delivery) bool {
		if _, dup := out[d.MessageId]; dup {
			t.Fatalf("message %s requeued twice", d.MessageId)
		}
		out[d.MessageId] = d
		return len(out) < n
	})
	return out
}

// RabbitMQ dead-letter queue (issue 17): list and show read without
// removing; requeue is a dry run without --execute; a requeue that fails
// half-way (no such queue) loses nothing; --execute moves every message
// back to its group queue exactly once, with its ID and key (binary and
// another client's too) and without the dead-lettering headers.
func TestDLQCommands(t *testing.T) {
	fx := newDLQFixture(t)
	env := map[string]string{envAMQPURL: fx.url}
	sel := []string{"--topic", fx.topic, "--group", fx.group}
	args := func(cmd string, extra ...string) []string {
		return append(append([]string{"dlq", cmd}, sel...), extra...)
	}

	r := cli(t, env, args("list", "-o", "json")...)
	r.expect(t, exitOK, "")
	var list struct {
		Depth    int          `json:"depth"`
		Messages []dlqMessage `json:"messages"`
	}
	r.decode(t, &list)
	if list.Depth != 4 || len(list.Messages) != 4 {
		t.Fatalf("list: depth %d, %d messages, want 4", list.Depth, len(list.Messages))
	}
	byID := map[string]dlqMessage{}
	for _, m := range list.Messages {
		byID[m.ID] = m
		if m.OriginalQueue != fx.queue {
			t.Errorf("%s: original queue %q, want %q", m.ID, m.OriginalQueue, fx.queue)
		}
	}
	if m := byID[fx.ids[0]]; m.Cause != "permanent: price missing" && !strings.Contains(m.Cause, "price missing") {
		t.Errorf("SDK dead letter cause %q", m.Cause)
	}
	if m := byID[fx.ids[1]]; m.KeyHex != "000000000000002a" || m.Key != `"\x00\x00\x00\x00\x00\x00\x00*"` {
		t.Errorf("binary key shown as %q / %q", m.Key, m.KeyHex)
	}
	if m := byID["foreign-1"]; !strings.Contains(m.Cause, "delivery_limit") || m.Key != "foreign-key" {
		t.Errorf("broker dead letter: cause %q key %q", m.Cause, m.Key)
	}
	fx.waitDepth(t, fx.dlq, 4) // list removed nothing

	r = cli(t, env, args("show", "--id", fx.ids[0])...)
	r.expect(t, exitOK, "")
	for _, want := range []string{"price missing", `{"n":1}`, "header dlt_group", "order.placed"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("show does not say %q", want)
		}
	}
	cli(t, env, args("show", "--id", "nope")...).expect(t, exitFailure, `no message "nope"`)
	fx.waitDepth(t, fx.dlq, 4) // show removed nothing

	// Dry run: nothing moves.
	r = cli(t, env, args("requeue", "--all")...)
	r.expect(t, exitOK, "")
	if !strings.Contains(r.stdout, "dry run: 4 messages would move") {
		t.Fatalf("dry run says:\n%s", r.stdout)
	}
	fx.waitDepth(t, fx.dlq, 4)
	fx.waitDepth(t, fx.queue, 0)

	// Half-way failure: the target queue does not exist; nothing is lost.
	r = cli(t, env, args("requeue", "--all", "--execute", "--to-queue", fx.queue+"_missing")...)
	r.expect(t, exitFailure, "does not exist")
	fx.waitDepth(t, fx.dlq, 4)

	// One message by ID: the binary-keyed one.
	cli(t, env, args("requeue", "--id", fx.ids[1], "--execute")...).expect(t, exitOK, "")
	fx.waitDepth(t, fx.dlq, 3)
	got := fx.drain(t, 1)

	// The rest, failing half-way: behind them a dead letter whose queue is
	// gone. The three move; it stays in the dead-letter queue.
	if err := fx.ch.PublishWithContext(testenv.Context(t, 10*time.Second), "", fx.dlq, false, false, amqp.Publishing{
		MessageId: "orphan-1", DeliveryMode: amqp.Persistent, Body: []byte("x"),
		Headers: amqp.Table{rabbitmq.HeaderDeadLetterQueue: fx.queue + "_gone", reliable.HeaderKey: "k"}}); err != nil {
		t.Fatal(err)
	}
	fx.waitDepth(t, fx.dlq, 4)
	r = cli(t, env, args("requeue", "--all", "--execute", "-o", "json")...)
	r.expect(t, exitFailure, `requeue "orphan-1" to `+fx.queue+`_gone (after 3 moved; it and the rest stay in`)
	var rep requeueReport
	r.decode(t, &rep)
	if rep.Moved != 3 || len(rep.Messages) != 4 || rep.Messages[3].Moved {
		t.Fatalf("report %+v, want 3 moved and the orphan not", rep)
	}
	fx.waitDepth(t, fx.dlq, 1)
	for id, d := range fx.drain(t, 3) {
		if _, dup := got[id]; dup {
			t.Fatalf("message %s requeued twice", id)
		}
		got[id] = d
	}
	// Ledger: every dead letter back exactly once, with ID and key.
	if len(got) != 4 {
		t.Fatalf("%d messages back in %s, want 4", len(got), fx.queue)
	}
	for _, id := range fx.ids {
		d, ok := got[id]
		if !ok {
			t.Errorf("message %s was lost", id)
			continue
		}
		if k, _ := d.Headers[reliable.HeaderKey].(string); k != fx.keys[id] {
			t.Errorf("message %s came back with key %q, want %q", id, k, fx.keys[id])
		}
		for h := range d.Headers {
			if strings.HasPrefix(h, "dlt_") || strings.HasPrefix(h, "x-death") {
				t.Errorf("message %s kept header %s", id, h)
			}
		}
		if d.DeliveryMode != amqp.Persistent {
			t.Errorf("message %s is not persistent", id)
		}
	}
	r = cli(t, env, args("list", "-o", "json")...)
	r.expect(t, exitOK, "")
	r.decode(t, &list)
	if len(list.Messages) != 1 || list.Messages[0].ID != "orphan-1" {
		t.Fatalf("left in the dead-letter queue: %+v", list.Messages)
	}
	cli(t, env, "dlq", "list", "--queue", "no_such_dlq_queue").expect(t, exitFailure, "NOT_FOUND")
}

// AMQPS (issue 17): the dlq commands over amqps:// with a private CA (an
// in-process TLS proxy in front of the test broker, testenv.TLSProxy, as
// the RabbitMQ adapter's TestAMQPSWithCustomCA does: the suite's broker has
// no TLS listener). Without the CA the certificate fails; a wrong password
// from $RELIABLE_AMQP_PASSWORD fails the login; neither password is printed.
func TestDLQOverAMQPS(t *testing.T) {
	fx := newDLQFixture(t)
	ca := testenv.NewTestCA(t)
	dir := t.TempDir()
	caFile := ca.WriteCAFile(t, dir)
	u, err := url.Parse(fx.url)
	if err != nil {
		t.Fatal(err)
	}
	password, _ := u.User.Password()
	proxy := strconv.Itoa(testenv.TLSProxy(t, u.Host, ca.ServerTLS()))
	secure := "amqps://" + u.User.Username() + "@localhost:" + proxy + u.Path

	env := map[string]string{envAMQPURL: secure, envAMQPPassword: password, envAMQPCAFile: caFile}
	r := cli(t, env, "dlq", "list", "--topic", fx.topic, "--group", fx.group)
	r.expect(t, exitOK, "")
	if !strings.Contains(r.stdout, "4 messages") {
		t.Fatalf("list over AMQPS:\n%s", r.stdout)
	}
	fx.waitDepth(t, fx.dlq, 4) // list removed nothing
	cli(t, env, "dlq", "requeue", "--topic", fx.topic, "--group", fx.group, "--id", "foreign-1", "--execute").expect(t, exitOK, "")
	fx.waitDepth(t, fx.dlq, 3)

	// The password from a file, the URL from the flag.
	pwFile := filepath.Join(dir, "pw")
	writeFile(t, pwFile, []byte(password+"\n"))
	cli(t, map[string]string{envAMQPCAFile: caFile}, "dlq", "list", "--queue", fx.dlq, "--amqp-url", secure, "--amqp-password-file", pwFile).expect(t, exitOK, "")

	noSecret := func(r result, secrets ...string) {
		t.Helper()
		for _, s := range secrets {
			if strings.Contains(r.stdout+r.stderr, s) {
				t.Fatalf("output shows %q:\n%s%s", s, r.stdout, r.stderr)
			}
		}
	}
	noCA := map[string]string{envAMQPURL: secure, envAMQPPassword: password}
	r = cli(t, noCA, "dlq", "list", "--queue", fx.dlq)
	r.expect(t, exitFailure, "certificate signed by unknown authority")
	noSecret(r, ":"+password+"@")

	const wrong = "wrong-amqp-pa55word"
	r = cli(t, map[string]string{envAMQPURL: secure, envAMQPPassword: wrong, envAMQPCAFile: caFile}, "dlq", "list", "--queue", fx.dlq)
	r.expect(t, exitFailure, "refused the login")
	noSecret(r, wrong, ":"+password+"@")

	r = cli(t, map[string]string{envAMQPCAFile: caFile}, "dlq", "list", "--queue", fx.dlq, "--amqp-url", "amqps://"+u.User.Username()+":"+wrong+"@localhost:"+proxy+"/")
	r.expect(t, exitUsage, "no password on the command line")
	noSecret(r, wrong)

	// The management API over HTTPS with the same CA (audit rabbitmq), the
	// password of the user-only URL from the environment.
	mu, err := url.Parse(testenv.RabbitMQManagementURL(t))
	if err != nil {
		t.Fatal(err)
	}
	mgmt := "https://" + mu.User.Username() + "@localhost:" + strconv.Itoa(testenv.TLSProxy(t, mu.Host, ca.ServerTLS()))
	mpw, _ := mu.User.Password()
	r = cli(t, map[string]string{envAMQPPassword: mpw, envManagementCAFile: caFile}, "audit", "rabbitmq", "--management-url", mgmt, "--topic", fx.topic, "--group", fx.group, "-o", "json")
	var rep auditReport
	r.decode(t, &rep)
	if len(rep.Checks) == 0 || rep.Checks[0].Resource != fx.queue {
		t.Fatalf("audit over HTTPS: %+v (stderr %q)", rep, r.stderr)
	}
	r = cli(t, map[string]string{envAMQPPassword: mpw}, "audit", "rabbitmq", "--management-url", mgmt, "--queue", fx.queue)
	r.expect(t, exitFailure, "certificate signed by unknown authority")
	noSecret(r, ":"+mpw+"@")

	// Plain amqp:// with TLS flags is a mistake, said so.
	cli(t, map[string]string{envAMQPURL: fx.url}, "dlq", "list", "--queue", fx.dlq, "--amqp-ca-file", caFile).expect(t, exitUsage, "need an amqps:// URL")
}
