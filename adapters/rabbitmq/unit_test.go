package rabbitmq

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/reliable-go/reliable"
)

// TestHeaderMappingRoundTrip: L02, messages are published persistent; the
// SDK's fields travel as CloudEvents headers and AMQP properties.
func TestHeaderMappingRoundTrip(t *testing.T) {
	m := &reliable.Message{
		ID: "id-1", Topic: "orders", Key: "order-7", Type: "order.paid",
		Headers: map[string]string{"x-seq": "3", reliable.HeaderEnvironment: "prod"},
		Payload: []byte("body"),
		Time:    time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC),
	}
	p := toPublishing(m)
	if p.DeliveryMode != amqp.Persistent {
		t.Fatalf("delivery mode %d, want persistent (L02)", p.DeliveryMode)
	}
	if p.MessageId != "id-1" || p.Type != "order.paid" {
		t.Fatalf("properties: id %q type %q", p.MessageId, p.Type)
	}
	if routingKey(m) != "order-7" {
		t.Fatalf("routing key %q", routingKey(m))
	}
	headers := p.Headers
	headers[headerDeliveryCount] = int64(2)
	headers["x-death"] = []any{amqp.Table{"count": int64(1)}}
	d := &amqp.Delivery{
		Headers: headers, MessageId: p.MessageId, Type: p.Type, Timestamp: p.Timestamp,
		Body: p.Body, DeliveryTag: 9, Redelivered: true, Exchange: "orders",
	}
	got := fromDelivery(d, "orders", "orders.kitchen")
	if got.ID != m.ID || got.Key != m.Key || got.Type != m.Type || got.Topic != m.Topic || string(got.Payload) != "body" {
		t.Fatalf("got %v", got)
	}
	if !got.Time.Equal(m.Time) {
		t.Fatalf("time %v, want %v (nanoseconds kept through ce_time)", got.Time, m.Time)
	}
	if got.Headers["x-seq"] != "3" || got.Headers[reliable.HeaderEnvironment] != "prod" {
		t.Fatalf("headers %v", got.Headers)
	}
	for _, k := range []string{reliable.HeaderID, reliable.HeaderKey, reliable.HeaderType, reliable.HeaderTime, "x-death", headerDeliveryCount} {
		if _, ok := got.Headers[k]; ok {
			t.Fatalf("header %s leaked into Headers", k)
		}
	}
	want := reliable.DeliveryInfo{Offset: 9, Queue: "orders.kitchen", Attempt: 3, Redelivered: true}
	got.Delivery.ReceivedAt = time.Time{}
	if got.Delivery != want {
		t.Fatalf("delivery info %+v, want %+v", got.Delivery, want)
	}
}

func TestFromDeliveryWithoutSDKHeaders(t *testing.T) {
	// A message published by another client: properties only.
	d := &amqp.Delivery{MessageId: "m", Type: "t", Body: []byte("x"), DeliveryTag: 1}
	got := fromDelivery(d, "orders", "orders.g")
	if got.ID != "m" || got.Type != "t" || got.Delivery.Attempt != 1 || got.Delivery.Redelivered {
		t.Fatalf("got %+v", got)
	}
}

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"amqp://user:s3cret@host:5672/vh": "amqp://user:xxxxx@host/vh",
		"amqps://user:s3cret@host/":       "amqps://user:xxxxx@host/",
		"amqp://host":                     "amqp://guest:xxxxx@host/",
		"amqp://u:s3cret@host:notaport/":  "amqp://xxxxx@host:notaport/",
	} {
		got := RedactURL(in)
		if strings.Contains(got, "s3cret") {
			t.Fatalf("RedactURL(%q) = %q leaks the password", in, got)
		}
		if got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestInvalidURLHidesPassword(t *testing.T) {
	_, err := NewPublisher("amqp://u:s3cret@host:notaport/")
	if !errors.Is(err, reliable.ErrInvalidConfig) {
		t.Fatalf("err %v, want ErrInvalidConfig", err)
	}
	if strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("error leaks the password: %v", err)
	}
}

func TestOptionsValidateListsEveryProblem(t *testing.T) {
	_, err := NewSubscriber("amqp://localhost/", "g",
		WithPrefetch(-1), WithTopology(Topology{QueueType: "lazy", DeliveryLimit: -2, Shards: 2}),
		WithShardIndexes(5))
	var ce *reliable.ConfigError
	if !errors.As(err, &ce) {
		t.Fatalf("err %v, want *reliable.ConfigError", err)
	}
	if len(ce.Problems) != 4 {
		t.Fatalf("problems %q, want 4", ce.Problems)
	}
	_, err = NewPublisher("amqp://localhost/", WithConfirmChannels(-1), WithConfirmWindow(-1))
	if !errors.As(err, &ce) || len(ce.Problems) != 2 {
		t.Fatalf("publisher err %v, want 2 problems", err)
	}
}

// TestQueueArguments: L22, group queues are quorum queues (replicated) by
// default, with a dead-letter exchange, at-least-once dead-lettering and a
// delivery limit (PITFALLS B4); L08, L12: a single active consumer, sharded
// or not, so a key's events never go to two instances at once.
func TestQueueArguments(t *testing.T) {
	q := Topology{}.withDefaults().queueArgs("orders", "orders.g")
	want := amqp.Table{
		"x-queue-type":              "quorum",
		"x-dead-letter-exchange":    "orders.dlx",
		"x-dead-letter-routing-key": "orders.g",
		"x-delivery-limit":          int64(DefaultDeliveryLimit),
		"x-dead-letter-strategy":    "at-least-once",
		"x-overflow":                "reject-publish",
		"x-single-active-consumer":  true,
	}
	if len(q) != len(want) {
		t.Fatalf("args %v, want %v", q, want)
	}
	for k, v := range want {
		if q[k] != v {
			t.Fatalf("arg %s = %v, want %v", k, q[k], v)
		}
	}
	c := Topology{QueueType: Classic}.withDefaults().queueArgs("orders", "orders.g")
	if _, ok := c["x-delivery-limit"]; ok {
		t.Fatalf("classic queue got a delivery limit: %v", c)
	}
	primary, standby := Topology{Shards: 3}.withDefaults().queues("orders", "g", []int{2, 0})
	if strings.Join(primary, ",") != "orders.g.2,orders.g.0" || strings.Join(standby, ",") != "orders.g.1" {
		t.Fatalf("shard queues %v, standby %v", primary, standby)
	}
	all, none := Topology{Shards: 2}.withDefaults().queues("orders", "g", nil)
	if strings.Join(all, ",") != "orders.g.0,orders.g.1" || none != nil {
		t.Fatalf("all shards %v, standby %v", all, none)
	}
}

func TestClassify(t *testing.T) {
	if err := classify(amqp.ErrCredentials); !errors.Is(err, reliable.ErrNotAuthorized) || !reliable.IsPermanent(err) {
		t.Fatalf("403: %v", err)
	}
	if err := classify(&amqp.Error{Code: amqp.NotFound, Reason: "NOT_FOUND - no exchange"}); !errors.Is(err, reliable.ErrUnknownTopic) {
		t.Fatalf("404: %v", err)
	}
	if err := classify(&amqp.Error{Code: amqp.NotAllowed, Reason: "access to vhost '/x' refused"}); !errors.Is(err, reliable.ErrNotAuthorized) {
		t.Fatalf("530 vhost: %v", err)
	}
	if err := classify(amqp.ErrClosed); reliable.IsPermanent(err) {
		t.Fatalf("a closed channel is retryable: %v", err)
	}
}

func TestReturnsCorrelatedByMessageID(t *testing.T) {
	pc := &pubChan{returns: make(chan amqp.Return, 4), returned: map[string]amqp.Return{}}
	msgs := []*reliable.Message{{ID: "a"}, {ID: "b"}, {ID: "c"}}
	dcs := []*amqp.DeferredConfirmation{{}, {}, nil} // c was never sent
	pc.returns <- amqp.Return{MessageId: "b", ReplyCode: 312, ReplyText: "NO_ROUTE"}
	pc.returns <- amqp.Return{MessageId: "c"}
	pc.returns <- amqp.Return{MessageId: "other-call"}
	got := pc.takeReturns(msgs, dcs)
	if len(got) != 1 || got[1].ReplyCode != 312 {
		t.Fatalf("returns %v, want only message b", got)
	}
	if _, ok := pc.returned["other-call"]; !ok {
		t.Fatal("another call's return was dropped")
	}
	if again := pc.takeReturns(msgs, dcs); len(again) != 0 {
		t.Fatalf("a return was reported twice: %v", again)
	}
}

func TestWaitUnblockedNamesTheAlarm(t *testing.T) {
	m := &connManager{log: discardUnitLogger()}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := m.waitUnblocked(ctx); err != nil {
		t.Fatalf("not blocked: %v", err)
	}
	m.setBlocked(amqp.Blocking{Active: true, Reason: "low on disk"})
	err := m.waitUnblocked(ctx)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "low on disk") {
		t.Fatalf("blocked: %v", err)
	}
	go m.setBlocked(amqp.Blocking{Active: false})
	if err := m.waitUnblocked(context.Background()); err != nil {
		t.Fatalf("after unblock: %v", err)
	}
}

func discardUnitLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// TestForeignMessageKeyFromRoutingKey: a message another client published
// to the topic exchange with routing key order-1 and neither message-id
// nor ce_ headers has Key order-1 (before: empty, so all such messages
// shared one lane and their order per key was lost) and an empty ID.
func TestForeignMessageKeyFromRoutingKey(t *testing.T) {
	d := &amqp.Delivery{Exchange: "orders", RoutingKey: "order-1", Body: []byte("{}"), DeliveryTag: 4,
		Headers: amqp.Table{"x-tenant": "acme"}}
	got := fromDelivery(d, "orders", "orders.g")
	if got.Key != "order-1" || got.ID != "" || got.Topic != "orders" || got.Headers["x-tenant"] != "acme" {
		t.Fatalf("got key %q id %q topic %q headers %v, want key order-1, no ID", got.Key, got.ID, got.Topic, got.Headers)
	}
	// The key header wins over the routing key, even when empty.
	d.Headers = amqp.Table{reliable.HeaderKey: ""}
	if got := fromDelivery(d, "orders", "orders.g"); got.Key != "" {
		t.Fatalf("key %q, want the header's empty key", got.Key)
	}
}

// TestCheckWireLimits: 255 bytes is the longest short string AMQP carries;
// one more is refused with the field named, before any connection is used.
func TestCheckWireLimits(t *testing.T) {
	ok := &reliable.Message{Topic: "orders", Key: strings.Repeat("k", 255), ID: strings.Repeat("i", 255),
		Type: strings.Repeat("t", 255), Headers: map[string]string{strings.Repeat("h", 255): "v"}}
	if err := checkWire(ok, 0); err != nil {
		t.Fatalf("255-byte fields refused: %v", err)
	}
	bad := &reliable.Message{Topic: "orders", Key: strings.Repeat("k", 256)}
	err := checkWire(bad, 0)
	if !errors.Is(err, reliable.ErrInvalidMessage) || !strings.Contains(err.Error(), "Key is 256 bytes") {
		t.Fatalf("256-byte key: %v", err)
	}
	big := &reliable.Message{Topic: "orders", Headers: map[string]string{"x": strings.Repeat("v", 3800)}}
	if err := checkWire(big, 4096); err != nil {
		t.Fatalf("headers under frame_max 4096 refused: %v", err)
	}
	big.Headers["y"] = strings.Repeat("v", 300)
	if err := checkWire(big, 4096); !errors.Is(err, reliable.ErrInvalidMessage) || !strings.Contains(err.Error(), "frame_max is 4096") {
		t.Fatalf("headers over frame_max: %v", err)
	}
}

// TestLongNamesRefused: a topic or group whose derived names exceed 255
// bytes, or are not UTF-8, is a configuration error in Declare and
// Subscribe, before any declare is sent (amqp091-go would shut the
// connection down on encoding it; the broker closes it on bad UTF-8).
func TestLongNamesRefused(t *testing.T) {
	long := strings.Repeat("t", 250)
	err := Declare(context.Background(), "amqp://localhost:1/", long, []string{"g"})
	if !errors.Is(err, reliable.ErrInvalidConfig) || !strings.Contains(err.Error(), "at most 255 bytes") {
		t.Fatalf("Declare: %v", err)
	}
	sub := &Subscriber{cfg: subscriberConfig{}, group: "g", done: make(chan struct{})}
	sub.cfg.topology = Topology{}.withDefaults()
	if _, err := sub.Subscribe(context.Background(), long); !errors.Is(err, reliable.ErrInvalidConfig) {
		t.Fatalf("Subscribe: %v", err)
	}
	if _, err := sub.Subscribe(context.Background(), "orders\xff"); !errors.Is(err, reliable.ErrInvalidConfig) ||
		!strings.Contains(err.Error(), "UTF-8") {
		t.Fatalf("Subscribe to a topic that is not UTF-8: %v", err)
	}
}

// TestRefusedExchange: the topic is read from RabbitMQ's 403 close reason.
func TestRefusedExchange(t *testing.T) {
	for reason, want := range map[string]string{
		"ACCESS_REFUSED - access to exchange 'orders' in vhost '/' refused for user 'u'":       "orders",
		"ACCESS_REFUSED - write access to exchange 'a.b' in vhost 'prod' refused for user 'u'": "a.b",
		"ACCESS_REFUSED - access to queue 'q' in vhost '/' refused for user 'u'":               "",
		"ACCESS_REFUSED - access to exchange 'it''s' in vhost '/' refused for user 'u'":        "it''s",
		"NOT_FOUND - no exchange 'orders' in vhost '/'":                                        "",
	} {
		got, ok := refusedExchange(reason)
		if got != want || ok != (want != "") {
			t.Errorf("refusedExchange(%q) = %q, %v; want %q", reason, got, ok, want)
		}
	}
}
