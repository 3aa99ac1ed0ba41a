package rabbitmq_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/adapters/rabbitmq"
	"github.com/reliable-go/reliable/consumer"
	"github.com/reliable-go/reliable/internal/testenv"
)

// These tests use only the public API, as a team copying the quick start
// would: rabbitmq.Declare without options, rabbitmq.NewConsumer with a
// Config holding only the topic.

// orderLedger records what the handlers applied. An event applied while an
// earlier event of its key was never applied is out of order; an event
// applied again is a repeat (there is no dedupe store here).
type orderLedger struct {
	mu         sync.Mutex
	next       map[string]int // the next seq each key expects
	applied    map[string]map[int]bool
	byInstance map[string]int
	outOfOrder int
	repeats    int
	distinct   int
	firstBad   string
}

func newOrderLedger() *orderLedger {
	return &orderLedger{next: map[string]int{}, applied: map[string]map[int]bool{}, byInstance: map[string]int{}}
}

func (l *orderLedger) apply(instance string, m *reliable.Message) error {
	seq, err := strconv.Atoi(m.Headers["x-seq"])
	if err != nil {
		return reliable.Permanent(fmt.Errorf("message %s without x-seq: %w", m.ID, err))
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.byInstance[instance]++
	seen := l.applied[m.Key]
	if seen == nil {
		seen = map[int]bool{}
		l.applied[m.Key] = seen
	}
	switch {
	case seen[seq]:
		l.repeats++
		return nil
	case seq != l.next[m.Key]:
		l.outOfOrder++
		if l.firstBad == "" {
			l.firstBad = fmt.Sprintf("key %s: applied seq %d while expecting %d (instance %s)", m.Key, seq, l.next[m.Key], instance)
		}
	}
	seen[seq] = true
	l.distinct++
	for seen[l.next[m.Key]] {
		l.next[m.Key]++
	}
	return nil
}

func (l *orderLedger) counts() (distinct, outOfOrder, repeats int, byInstance map[string]int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	byInstance = make(map[string]int, len(l.byInstance))
	for k, v := range l.byInstance {
		byInstance[k] = v
	}
	return l.distinct, l.outOfOrder, l.repeats, byInstance
}

// waitLedger waits until the ledger holds want distinct events.
func waitLedger(t *testing.T, l *orderLedger, want int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got, _, _, _ := l.counts()
		if got >= want {
			return
		}
		if time.Now().After(deadline) {
			d, o, r, by := l.counts()
			t.Fatalf("after %s: %d of %d events applied (out of order %d, repeats %d, per instance %v)", timeout, d, want, o, r, by)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// instance is one running consumer of the group.
type instance struct {
	name   string
	cancel context.CancelFunc
	done   chan error
}

func startInstance(t *testing.T, amqpURL, topic, group, name string, l *orderLedger) *instance {
	t.Helper()
	h := reliable.HandlerFunc(func(ctx context.Context, m *reliable.Message) error {
		// A little work, so a key's consecutive events overlap when two
		// instances get them at once.
		time.Sleep(time.Millisecond)
		return l.apply(name, m)
	})
	c, err := rabbitmq.NewConsumer(amqpURL, group, h, consumer.Config{Topic: topic},
		rabbitmq.WithConnectionName(name))
	if err != nil {
		t.Fatalf("consumer %s: %v", name, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	in := &instance{name: name, cancel: cancel, done: make(chan error, 1)}
	go func() { in.done <- c.Run(ctx) }()
	t.Cleanup(func() { in.stop(t) })
	return in
}

func (in *instance) stop(t *testing.T) {
	in.cancel()
	select {
	case err := <-in.done:
		if err != nil {
			t.Errorf("consumer %s: %v", in.name, err)
		}
		in.done <- nil // later stops return at once
	case <-time.After(45 * time.Second):
		t.Errorf("consumer %s did not stop", in.name)
	}
}

// publishInOrder publishes keys x perKey events, each key's events one at a
// time: every event is confirmed before the key's next one is sent.
func publishInOrder(ctx context.Context, pub reliable.Publisher, topic string, keys, perKey int) error {
	var wg sync.WaitGroup
	errs := make(chan error, keys)
	for k := 0; k < keys; k++ {
		wg.Add(1)
		go func(k int) {
			defer wg.Done()
			for s := 0; s < perKey; s++ {
				m := &reliable.Message{Topic: topic, Key: "order-" + strconv.Itoa(k), Type: "order.event",
					Headers: map[string]string{"x-seq": strconv.Itoa(s)}, Payload: []byte("e")}
				if err := pub.Publish(ctx, m); err != nil {
					errs <- fmt.Errorf("key %d seq %d: %w", k, s, err)
					return
				}
			}
		}(k)
	}
	wg.Wait()
	close(errs)
	return <-errs // nil when every event was confirmed
}

func declareDefault(t *testing.T, amqpURL, topic, group string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := rabbitmq.Declare(ctx, amqpURL, topic, []string{group}); err != nil {
		t.Fatalf("declare: %v", err)
	}
	t.Cleanup(func() {
		conn, err := amqp.Dial(amqpURL)
		if err != nil {
			return
		}
		defer conn.Close()
		ch, err := conn.Channel()
		if err != nil {
			return
		}
		_, _ = ch.QueueDelete(rabbitmq.QueueName(topic, group), false, false, false)
		_, _ = ch.QueueDelete(rabbitmq.DeadLetterQueueName(topic, group), false, false, false)
		_ = ch.ExchangeDelete(topic+".dlx", false, false)
		_ = ch.ExchangeDelete(rabbitmq.ExchangeName(topic), false, false)
	})
}

func testTopic(prefix string) string {
	return fmt.Sprintf("%s-%d", prefix, time.Now().UnixNano()%1e9)
}

// TestDefaultTopologyTwoInstancesKeepOrder: L08, L12. Two instances of one
// group on the default topology (no shards), 20 keys x 60 events published
// strictly in order per key. Before the unsharded queue had a single active
// consumer, the broker spread a key's consecutive events over both
// instances and 199-216 of 1,200 were applied out of order. Now one
// instance is active and the other stands by: 0 out of order, 0 lost.
func TestDefaultTopologyTwoInstancesKeepOrder(t *testing.T) {
	amqpURL := testenv.AMQPURL(t)
	const keys, perKey = 20, 60
	topic, group := testTopic("sac-order"), "kitchen"
	declareDefault(t, amqpURL, topic, group)
	l := newOrderLedger()
	startInstance(t, amqpURL, topic, group, topic+"-a", l)
	startInstance(t, amqpURL, topic, group, topic+"-b", l)

	pub, err := rabbitmq.NewPublisher(amqpURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := publishInOrder(ctx, pub, topic, keys, perKey); err != nil {
		t.Fatalf("publish: %v", err)
	}
	waitLedger(t, l, keys*perKey, time.Minute)
	d, o, r, by := l.counts()
	t.Logf("applied %d distinct of %d, out of order %d, repeats %d, per instance %v", d, keys*perKey, o, r, by)
	if o != 0 {
		t.Errorf("%d of %d events applied out of order; first: %s", o, keys*perKey, l.firstBad)
	}
}

// TestDefaultTopologyStandbyTakesOver: with two instances on the default
// topology, the active one is stopped mid-stream, by closing it (its Run
// ends) or by killing its connection from the broker: the standby takes
// the queue over and every key's events are still applied in order, none
// lost.
func TestDefaultTopologyStandbyTakesOver(t *testing.T) {
	for _, mode := range []string{"close", "kill"} {
		t.Run(mode, func(t *testing.T) {
			amqpURL := testenv.AMQPURL(t)
			const keys, perKey = 20, 60
			topic, group := testTopic("sac-"+mode), "kitchen"
			declareDefault(t, amqpURL, topic, group)
			l := newOrderLedger()
			insts := map[string]*instance{}
			names := []string{topic + "-a", topic + "-b"}
			for _, n := range names {
				insts[n] = startInstance(t, amqpURL, topic, group, n, l)
			}
			// Known before the stream starts, so the kill lands mid-stream.
			conns := brokerConnections(t, names...)
			pub, err := rabbitmq.NewPublisher(amqpURL)
			if err != nil {
				t.Fatal(err)
			}
			defer pub.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			published := make(chan error, 1)
			go func() { published <- publishInOrder(ctx, pub, topic, keys, perKey) }()

			waitLedger(t, l, keys*perKey/3, time.Minute)
			_, _, _, by := l.counts()
			if len(by) != 1 {
				t.Fatalf("before the stop, events were applied by %d instances (%v), want 1 active", len(by), by)
			}
			var active string
			for n := range by {
				active = n
			}
			switch mode {
			case "close":
				insts[active].stop(t)
			case "kill":
				killConnection(t, conns[active])
			}
			t.Logf("%s the active instance %s after %d events", mode, active, by[active])
			if err := <-published; err != nil {
				t.Fatalf("publish: %v", err)
			}
			waitLedger(t, l, keys*perKey, time.Minute)
			d, o, r, by := l.counts()
			t.Logf("applied %d distinct of %d, out of order %d, repeats %d, per instance %v", d, keys*perKey, o, r, by)
			if o != 0 {
				t.Errorf("%d events applied out of order; first: %s", o, l.firstBad)
			}
			if len(by) != 2 {
				t.Errorf("the standby never took over: per instance %v", by)
			}
		})
	}
}

// management calls the RabbitMQ management API.
func management(t *testing.T, method, path string, out any) error {
	t.Helper()
	base, err := url.Parse(testenv.RabbitMQManagementURL(t))
	if err != nil {
		t.Fatal(err)
	}
	user := base.User
	base.User = nil
	req, err := http.NewRequest(method, strings.TrimRight(base.String(), "/")+path, nil)
	if err != nil {
		return err
	}
	if user != nil {
		pw, _ := user.Password()
		req.SetBasicAuth(user.Username(), pw)
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %s", method, path, resp.Status)
	}
	if out != nil {
		return json.NewDecoder(resp.Body).Decode(out)
	}
	return nil
}

// brokerConnections waits until the management API lists a connection for
// each of names (connection_name client property; the API learns of a
// connection with its first stats, up to 5 s), and returns the API's
// connection names by those names.
func brokerConnections(t *testing.T, names ...string) map[string]string {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		var conns []struct {
			Name             string         `json:"name"`
			ClientProperties map[string]any `json:"client_properties"`
		}
		if err := management(t, http.MethodGet, "/api/connections?columns=name,client_properties", &conns); err != nil {
			t.Fatal(err)
		}
		found := map[string]string{}
		for _, c := range conns {
			if n, ok := c.ClientProperties["connection_name"].(string); ok {
				found[n] = c.Name
			}
		}
		missing := 0
		for _, n := range names {
			if found[n] == "" {
				missing++
			}
		}
		if missing == 0 {
			return found
		}
		if time.Now().After(deadline) {
			t.Fatalf("the management API does not list connections %v", names)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// killConnection force-closes a connection by its management API name, as
// an operator (or a dying node) would: the client sees CONNECTION_FORCED.
func killConnection(t *testing.T, apiName string) {
	t.Helper()
	if err := management(t, http.MethodDelete, "/api/connections/"+url.PathEscape(apiName), nil); err != nil {
		t.Fatalf("kill connection %s: %v", apiName, err)
	}
}
