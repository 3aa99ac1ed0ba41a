package rabbitmq

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/reliable-go/reliable/internal/testenv"
)

// Endpoints come from internal/testenv, which also holds a shared lock on
// RabbitMQ for the test, so another package's restart test waits for it.

func amqpURL(t testing.TB) string { return testenv.AMQPURL(t) }

var nameSeq atomic.Int64

// brokerRestarts counts the broker restarts this test process made.
var brokerRestarts atomic.Int64

// uniqueName returns a topic or connection name no other test uses.
func uniqueName(prefix string) string {
	return fmt.Sprintf("%s-%d-%d", prefix, time.Now().UnixNano()%1e9, nameSeq.Add(1))
}

// mgmt calls the management API.
func mgmt(t testing.TB, method, path string, out any) {
	t.Helper()
	base, err := url.Parse(testenv.RabbitMQManagementURL(t))
	if err != nil {
		t.Fatalf("management URL: %v", err)
	}
	user := base.User
	base.User = nil
	req, err := http.NewRequest(method, strings.TrimRight(base.String(), "/")+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if user != nil {
		pw, _ := user.Password()
		req.SetBasicAuth(user.Username(), pw)
	}
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("management %s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 && resp.StatusCode != http.StatusNotFound {
		t.Fatalf("management %s %s: %s", method, path, resp.Status)
	}
	if out != nil && resp.StatusCode < 300 {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			t.Fatalf("management %s %s: decode: %v", method, path, err)
		}
	}
}

// forceClose closes cm's current connection from the broker side through
// the management API, addressing it by name ("client -> server"
// addresses). The API knows a new connection only once its first stats are
// in (up to 5 s), so forceClose waits for that. It reports whether it closed
// a connection.
func forceClose(t testing.TB, cm *connManager) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	conn, _, err := cm.connection(ctx)
	if err != nil {
		return false
	}
	path := "/api/connections/" + url.PathEscape(conn.LocalAddr().String()+" -> "+conn.RemoteAddr().String())
	for ctx.Err() == nil {
		var info struct {
			Name string `json:"name"`
		}
		mgmt(t, http.MethodGet, path, &info)
		if info.Name != "" {
			mgmt(t, http.MethodDelete, path, nil)
			return true
		}
		time.Sleep(100 * time.Millisecond)
	}
	return false
}

// rawConn opens a plain amqp091-go connection for test setup and checks.
func rawConn(t testing.TB) *amqp.Connection {
	t.Helper()
	conn, err := amqp.Dial(amqpURL(t))
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// declareTopic declares topic with groups and deletes everything at the end
// of the test, so the shared broker does not fill up.
func declareTopic(t testing.TB, topo Topology, topic string, groups ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := Declare(ctx, amqpURL(t), topic, groups, WithTopology(topo)); err != nil {
		t.Fatalf("declare %s: %v", topic, err)
	}
	restarts := brokerRestarts.Load()
	t.Cleanup(func() {
		if brokerRestarts.Load() != restarts {
			// RabbitMQ 3.10.8 bug: deleting an at-least-once quorum queue
			// whose dead-letter worker is still starting after a restart
			// crashes the worker in a loop until rabbit_fifo_dlx_sup gives
			// up, and from then on no such queue can start on the node.
			// Queues that lived through a restart are left in place.
			t.Logf("leaving the queues of %s: they lived through a broker restart", topic)
			return
		}
		deleteTopic(t, topo, topic, groups...)
	})
}

func deleteTopic(t testing.TB, topo Topology, topic string, groups ...string) {
	conn, err := amqp.Dial(amqpURL(t))
	if err != nil {
		t.Logf("cleanup dial: %v", err)
		return
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return
	}
	defer ch.Close()
	topo = topo.withDefaults()
	for _, g := range groups {
		qs, _ := topo.queues(topic, g, nil)
		for _, q := range qs {
			_, _ = ch.QueueDelete(q, false, false, false)
		}
		_, _ = ch.QueueDelete(DeadLetterQueueName(topic, g), false, false, false)
		if topo.Shards > 1 {
			_ = ch.ExchangeDelete(shardExchangeName(topic, g), false, false)
		}
	}
	_ = ch.ExchangeDelete(deadLetterExchangeName(topic), false, false)
	_ = ch.ExchangeDelete(ExchangeName(topic), false, false)
}

// queueDepth returns the ready plus unacked messages of queue.
func queueDepth(t testing.TB, queue string) int {
	t.Helper()
	conn := rawConn(t)
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
	if err != nil {
		t.Fatalf("inspect %s: %v", queue, err)
	}
	return q.Messages
}
