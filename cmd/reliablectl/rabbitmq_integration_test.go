package main

import (
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/reliable-go/reliable/adapters/rabbitmq"
	"github.com/reliable-go/reliable/internal/testenv"
)

// L02, L22: the SDK's declared topology passes; a classic, non-durable queue
// without a dead-letter exchange, with drop-head overflow and a transient
// message fails, each finding with its fix.
func TestAuditRabbitMQ(t *testing.T) {
	amqpURL := testenv.AMQPURL(t)
	mgmtURL := testenv.RabbitMQManagementURL(t)
	ctx := testenv.Context(t, 60*time.Second)
	topic := testenv.UniqueName(t, "orders")
	if err := rabbitmq.Declare(ctx, amqpURL, topic, []string{"kitchen"}); err != nil {
		t.Fatal(err)
	}
	conn, err := amqp.Dial(amqpURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	weak := testenv.UniqueName(t, "weak")
	if _, err := ch.QueueDeclare(weak, false, false, false, false, amqp.Table{"x-max-length": int64(100)}); err != nil {
		t.Fatal(err)
	}
	if err := ch.PublishWithContext(ctx, "", weak, false, false, amqp.Publishing{Body: []byte("transient")}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, q := range []string{weak, rabbitmq.QueueName(topic, "kitchen"), rabbitmq.DeadLetterQueueName(topic, "kitchen")} {
			_, _ = ch.QueueDelete(q, false, false, false)
		}
		_ = ch.ExchangeDelete(topic, false, false)
		_ = ch.ExchangeDelete(topic+".dlx", false, false)
	})

	env := map[string]string{envManagementURL: mgmtURL}
	r := cli(t, env, "audit", "rabbitmq", "--topic", topic, "--group", "kitchen", "--output", "json")
	r.expect(t, exitOK, "")
	var rep auditReport
	r.decode(t, &rep)
	if rep.Fail != 0 || rep.Warn != 0 {
		t.Fatalf("the SDK's topology does not pass cleanly: %+v", rep)
	}

	// The management API has the message stats of the queue a few seconds
	// after the publish.
	var fails map[string]check
	deadline := time.Now().Add(20 * time.Second)
	for {
		r = cli(t, env, "audit", "rabbitmq", "--queue", weak, "--output", "json")
		rep = auditReport{}
		r.decode(t, &rep)
		fails = map[string]check{}
		for _, c := range rep.Checks {
			fails[c.Check] = c
		}
		if fails["persistent messages"].Status == statusFail || time.Now().After(deadline) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	r.expect(t, exitFailure, "checks failed")
	for name, want := range map[string]string{
		"durable": statusFail, "type": statusWarn, "dead-letter exchange": statusFail,
		"overflow": statusFail, "persistent messages": statusFail, "consumers": statusWarn,
		"exclusive/auto-delete": statusPass,
	} {
		if c := fails[name]; c.Status != want {
			t.Errorf("%s: %q, want %q (%+v)", name, c.Status, want, c)
		} else if want != statusPass && (c.Fix == "" || c.Why == "") {
			t.Errorf("%s: no fix or reason: %+v", name, c)
		}
	}

	// Only the AMQP URL: the management URL is derived from it.
	cli(t, map[string]string{envAMQPURL: amqpURL}, "audit", "rabbitmq", "--topic", topic, "--group", "kitchen").expect(t, exitOK, "")
	cli(t, env, "audit", "rabbitmq", "--queue", testenv.UniqueName(t, "missing")).expect(t, exitFailure, "does not exist")
}
