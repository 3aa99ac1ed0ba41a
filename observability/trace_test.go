package observability_test

import (
	"context"
	"sync"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/consumer"
	"github.com/reliable-go/reliable/reliabletest"
)

// spanNamed returns the recorded spans with the given name.
func spansNamed(spans []sdktrace.ReadOnlySpan, name string) []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, s := range spans {
		if s.Name() == name {
			out = append(out, s)
		}
	}
	return out
}

// One trace runs from the request that published a message, through the
// broker, to the consumer's handler: the consumer span is a child of the
// producer span, and the handler sees it in its context.
func TestTraceSpansProducerAndConsumer(t *testing.T) {
	b := setup(t)
	broker := reliabletest.NewBroker(reliabletest.BrokerOptions{Partitions: 2})
	broker.CreateTopic("orders")
	pub := b.tel.Publisher(broker.Publisher())

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// The order service's HTTP request.
	reqCtx, req := b.tp.Tracer("test").Start(ctx, "POST /orders", trace.WithSpanKind(trace.SpanKindServer))
	shared := map[string]string{"x": "1"} // shared by both messages: must not be changed
	msgs := []*reliable.Message{
		{Topic: "orders", Key: "o-1", Type: "order.placed", Headers: shared},
		{Topic: "orders", Key: "o-2", Type: "order.placed", Headers: shared},
	}
	if err := pub.Publish(reqCtx, msgs...); err != nil {
		t.Fatal(err)
	}
	req.End()
	if len(shared) != 1 {
		t.Fatalf("the caller's headers map was changed: %v", shared)
	}
	if msgs[0].Headers["traceparent"] == "" || msgs[0].Headers["traceparent"] == msgs[1].Headers["traceparent"] {
		t.Fatalf("each message must carry its own traceparent: %q %q", msgs[0].Headers["traceparent"], msgs[1].Headers["traceparent"])
	}

	var mu sync.Mutex
	handled := map[string]trace.SpanContext{}
	done := make(chan struct{})
	h := reliable.HandlerFunc(func(ctx context.Context, m *reliable.Message) error {
		mu.Lock()
		defer mu.Unlock()
		handled[m.ID] = trace.SpanContextFromContext(ctx)
		if len(handled) == len(msgs) {
			close(done)
		}
		return nil
	})
	c, err := consumer.New(broker.Subscriber("kitchen", reliabletest.SubscriberOptions{}), b.tel.Handler(h),
		consumer.Config{Topic: "orders", Logger: quiet, Observe: b.tel.Observe})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	ran := make(chan error, 1)
	go func() { ran <- c.Run(runCtx) }()
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatal("messages not handled")
	}
	stop()
	if err := <-ran; err != nil {
		t.Fatal(err)
	}

	spans := b.spans.Ended()
	sends := spansNamed(spans, "send orders")
	procs := spansNamed(spans, "process orders")
	if len(sends) != 2 || len(procs) != 2 {
		t.Fatalf("got %d send and %d process spans, want 2 and 2", len(sends), len(procs))
	}
	bySpanID := map[trace.SpanID]sdktrace.ReadOnlySpan{}
	for _, s := range sends {
		bySpanID[s.SpanContext().SpanID()] = s
		if s.Parent().SpanID() != req.SpanContext().SpanID() {
			t.Errorf("send span's parent is %s, want the request span", s.Parent().SpanID())
		}
		if s.SpanKind() != trace.SpanKindProducer {
			t.Errorf("send span kind %s", s.SpanKind())
		}
	}
	for _, p := range procs {
		if p.SpanContext().TraceID() != req.SpanContext().TraceID() {
			t.Errorf("process span in trace %s, want the request's %s", p.SpanContext().TraceID(), req.SpanContext().TraceID())
		}
		send, ok := bySpanID[p.Parent().SpanID()]
		if !ok || !p.Parent().IsRemote() {
			t.Errorf("process span's parent %s is not a (remote) send span", p.Parent().SpanID())
			continue
		}
		if p.SpanKind() != trace.SpanKindConsumer {
			t.Errorf("process span kind %s", p.SpanKind())
		}
		// The handler ran inside the process span.
		var id string
		for _, a := range send.Attributes() {
			if a.Key == "messaging.message.id" {
				id = a.Value.AsString()
			}
		}
		if got := handled[id]; got.SpanID() != p.SpanContext().SpanID() {
			t.Errorf("handler of %s saw span %s, want the process span %s", id, got.SpanID(), p.SpanContext().SpanID())
		}
	}
}

// The outbox pattern: Inject at outbox.Add time, and the relay's publish,
// in a context without any span, continues the request's trace from the
// headers stored with the row.
func TestTraceThroughOutboxHeaders(t *testing.T) {
	b := setup(t)
	broker := reliabletest.NewBroker(reliabletest.BrokerOptions{Partitions: 1})
	broker.CreateTopic("orders")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	reqCtx, req := b.tp.Tracer("test").Start(ctx, "POST /orders")
	m := &reliable.Message{Topic: "orders", Key: "o-1"}
	b.tel.Inject(reqCtx, m) // before outbox.Add
	req.End()
	stored := m.Clone() // what the outbox row holds, read back by the relay

	// The relay publishes with its own context: no span in it.
	if err := b.tel.Publisher(broker.Publisher()).Publish(ctx, stored); err != nil {
		t.Fatal(err)
	}
	got := broker.Messages("orders")
	if len(got) != 1 {
		t.Fatalf("%d messages", len(got))
	}
	_, span := b.tel.StartConsumerSpan(ctx, got[0])
	span.End()

	spans := b.spans.Ended()
	create := spansNamed(spans, "create orders")
	send := spansNamed(spans, "send orders")
	proc := spansNamed(spans, "process orders")
	if len(create) != 1 || len(send) != 1 || len(proc) != 1 {
		t.Fatalf("spans: %d create, %d send, %d process", len(create), len(send), len(proc))
	}
	if create[0].Parent().SpanID() != req.SpanContext().SpanID() {
		t.Error("create span is not a child of the request")
	}
	if send[0].Parent().SpanID() != create[0].SpanContext().SpanID() {
		t.Error("relay's send span is not a child of the create span")
	}
	if proc[0].Parent().SpanID() != send[0].SpanContext().SpanID() {
		t.Error("process span is not a child of the send span")
	}
	for _, s := range []sdktrace.ReadOnlySpan{create[0], send[0], proc[0]} {
		if s.SpanContext().TraceID() != req.SpanContext().TraceID() {
			t.Errorf("span %s is in another trace", s.Name())
		}
	}
}

// A failed publish marks its span as an error.
func TestPublishFailureSpan(t *testing.T) {
	b := setup(t)
	broker := reliabletest.NewBroker(reliabletest.BrokerOptions{})
	err := b.tel.Publisher(broker.Publisher()).Publish(context.Background(), &reliable.Message{Topic: "missing"})
	if err == nil {
		t.Fatal("publish to an unknown topic succeeded")
	}
	s := spansNamed(b.spans.Ended(), "send missing")
	if len(s) != 1 || s[0].Status().Description != "unknown_topic" {
		t.Fatalf("want one send span with status unknown_topic, got %v", s)
	}
}
