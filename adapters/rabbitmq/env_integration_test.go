package rabbitmq

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Endpoints of the shared test services: from the environment or the env
// file scripts/services.sh writes. Tests skip without them unless
// RELIABLE_REQUIRE_SERVICES=1.

func serviceEnv(key string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	dir, _ := os.Getwd()
	for ; dir != "/" && dir != "."; dir = filepath.Dir(dir) {
		f, err := os.Open(filepath.Join(dir, ".cache", "services.env"))
		if err != nil {
			continue
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			k, v, ok := strings.Cut(strings.TrimPrefix(strings.TrimSpace(sc.Text()), "export "), "=")
			if ok && k == key {
				return strings.Trim(v, `'"`)
			}
		}
		return ""
	}
	return ""
}

func need(t testing.TB, key string) string {
	t.Helper()
	v := serviceEnv(key)
	if v == "" {
		if os.Getenv("RELIABLE_REQUIRE_SERVICES") == "1" {
			t.Fatalf("%s is not set and RELIABLE_REQUIRE_SERVICES=1", key)
		}
		t.Skipf("%s not set: no RabbitMQ to test against", key)
	}
	return v
}

func amqpURL(t testing.TB) string { return need(t, "RELIABLE_AMQP_URL") }

var nameSeq atomic.Int64

// uniqueName returns a topic or connection name no other test uses.
func uniqueName(prefix string) string {
	return fmt.Sprintf("%s-%d-%d", prefix, time.Now().UnixNano()%1e9, nameSeq.Add(1))
}

// mgmt calls the management API.
func mgmt(t testing.TB, method, path string, out any) {
	t.Helper()
	base, err := url.Parse(need(t, "RELIABLE_RABBITMQ_MANAGEMENT_URL"))
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

// closeConnections force-closes, through the management API, every broker
// connection whose client-provided name starts with prefix, and returns how
// many it closed. Only this test's connections are touched: the broker is
// shared.
func closeConnections(t testing.TB, prefix string) int {
	t.Helper()
	var conns []struct {
		Name             string `json:"name"`
		UserProvidedName string `json:"user_provided_name"`
	}
	mgmt(t, http.MethodGet, "/api/connections?columns=name,user_provided_name", &conns)
	n := 0
	for _, c := range conns {
		if strings.HasPrefix(c.UserProvidedName, prefix) {
			mgmt(t, http.MethodDelete, "/api/connections/"+url.PathEscape(c.Name), nil)
			n++
		}
	}
	return n
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

// waitConnections waits until count connections named with prefix exist.
func waitConnections(t testing.TB, prefix string, count int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var conns []struct {
			UserProvidedName string `json:"user_provided_name"`
		}
		mgmt(t, http.MethodGet, "/api/connections?columns=user_provided_name", &conns)
		n := 0
		for _, c := range conns {
			if strings.HasPrefix(c.UserProvidedName, prefix) {
				n++
			}
		}
		if n >= count {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d connections named %s*, want %d", n, prefix, count)
		}
		time.Sleep(200 * time.Millisecond)
	}
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
	t.Cleanup(func() { deleteTopic(t, topo, topic, groups...) })
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
