package observability

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/reliable-go/reliable"
)

// Publisher wraps pub so that every message gets a producer span ("send
// <topic>") whose context is written into the message's headers (W3C
// traceparent), and publish latency and failures are recorded.
//
// The span's parent is the trace context already in the message's headers,
// if any (a message written to the outbox after Inject, now published by the
// relay), else the span in ctx. So a consumer's span, started by Handler,
// is a child of the producer's, and one trace runs from the request that
// created the message to the handler that applied it.
//
// Publisher never changes a caller's Headers map: it gives each message a
// copy holding the trace headers. Wrap the outermost publisher (the
// producer.Producer, not the adapter it retries through), so one span covers
// a Publish call's retries. A message published again after a failure gets a
// new span, child of the first attempt's.
func (t *Telemetry) Publisher(pub reliable.Publisher) reliable.Publisher {
	return &publisher{t: t, next: pub}
}

type publisher struct {
	t    *Telemetry
	next reliable.Publisher
}

// Publish implements reliable.Publisher.
func (p *publisher) Publish(ctx context.Context, msgs ...*reliable.Message) error {
	spans := make([]trace.Span, len(msgs))
	for i, m := range msgs {
		if m == nil {
			continue
		}
		m.EnsureID()
		spans[i] = p.t.startSpan(ctx, m, "send", trace.SpanKindProducer, semconv.MessagingOperationTypeSend)
	}
	start := time.Now()
	err := p.next.Publish(ctx, msgs...)
	elapsed := time.Since(start).Seconds()

	failed := failures(err)
	for i, m := range msgs {
		if m == nil {
			continue
		}
		merr := err
		if failed != nil {
			merr = failed[m.ID]
		}
		p.finish(ctx, m, spans[i], elapsed, merr)
	}
	return err
}

// PublishAsync implements reliable.AsyncPublisher when the wrapped publisher
// does (the span ends and the latency is recorded when done is called), so
// that wrapping keeps the outbox relay's per-message confirms. Otherwise it
// returns an error matching errors.ErrUnsupported.
func (p *publisher) PublishAsync(ctx context.Context, msg *reliable.Message, done func(*reliable.Message, error)) error {
	ap, ok := p.next.(reliable.AsyncPublisher)
	if !ok {
		return fmt.Errorf("observability: %T has no PublishAsync: %w", p.next, errors.ErrUnsupported)
	}
	if msg == nil {
		return ap.PublishAsync(ctx, msg, done) // the wrapped publisher's own error
	}
	msg.EnsureID()
	span := p.t.startSpan(ctx, msg, "send", trace.SpanKindProducer, semconv.MessagingOperationTypeSend)
	start := time.Now()
	err := ap.PublishAsync(ctx, msg, func(m *reliable.Message, err error) {
		p.finish(context.WithoutCancel(ctx), msg, span, time.Since(start).Seconds(), err)
		done(m, err)
	})
	if err != nil {
		p.finish(ctx, msg, span, time.Since(start).Seconds(), err)
	}
	return err
}

// finish records the outcome of publishing m, which took elapsed seconds,
// and ends its span.
func (p *publisher) finish(ctx context.Context, m *reliable.Message, span trace.Span, elapsed float64, err error) {
	attrs := []attribute.KeyValue{attribute.String(AttrTopic, m.Topic)}
	if err == nil {
		attrs = append(attrs, attribute.String(AttrOutcome, "ok"))
	} else {
		attrs = append(attrs, attribute.String(AttrOutcome, "failed"), attribute.String(AttrErrorType, ErrorType(err)))
		span.RecordError(err)
		span.SetStatus(codes.Error, ErrorType(err))
	}
	set := metric.WithAttributeSet(attribute.NewSet(attrs...))
	p.t.publishDuration.Record(ctx, elapsed, set)
	p.t.publishMessages.Add(ctx, 1, set)
	span.End()
}

// Close implements reliable.Publisher.
func (p *publisher) Close() error { return p.next.Close() }

// failures maps the IDs of the messages a *reliable.PublishError lists to
// their errors; nil when err is not one (every message failed with err).
func failures(err error) map[string]error {
	if err == nil {
		return map[string]error{}
	}
	var pe *reliable.PublishError
	if !errors.As(err, &pe) {
		return nil
	}
	m := make(map[string]error, len(pe.Failed))
	for _, f := range pe.Failed {
		m[f.MessageID] = f.Err
	}
	return m
}

// Inject writes the trace context of a new "create <topic>" span, child of
// the span in ctx, into each message's headers (on a copy of its Headers
// map). Call it before outbox.Add: the outbox stores the headers, so the
// relay's publish, wrapped by Publisher, continues the trace of the request
// that wrote the message, across the database and any delay.
func (t *Telemetry) Inject(ctx context.Context, msgs ...*reliable.Message) {
	for _, m := range msgs {
		if m == nil {
			continue
		}
		m.EnsureID()
		span := t.startSpan(ctx, m, "create", trace.SpanKindProducer, semconv.MessagingOperationTypeCreate)
		span.End()
	}
}

// startSpan starts a span for m named "<operation> <topic>", parented on the
// trace context in m's headers when there is one, else on ctx, and writes
// the new span's context into a copy of m's headers.
func (t *Telemetry) startSpan(ctx context.Context, m *reliable.Message, op string, kind trace.SpanKind, opType attribute.KeyValue) trace.Span {
	parent := ctx
	var links []trace.Link
	if carried := t.prop.Extract(ctx, propagation.MapCarrier(m.Headers)); trace.SpanContextFromContext(carried).IsValid() {
		parent = carried
		if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
			links = append(links, trace.Link{SpanContext: sc})
		}
	}
	attrs := append(t.messageAttrs(m), semconv.MessagingOperationName(op), opType)
	ctx, span := t.tracer.Start(parent, op+" "+m.Topic,
		trace.WithSpanKind(kind), trace.WithAttributes(attrs...), trace.WithLinks(links...))
	h := make(map[string]string, len(m.Headers)+2)
	maps.Copy(h, m.Headers)
	t.prop.Inject(ctx, propagation.MapCarrier(h))
	m.Headers = h
	return span
}

// messageAttrs are the span attributes describing m.
func (t *Telemetry) messageAttrs(m *reliable.Message) []attribute.KeyValue {
	attrs := []attribute.KeyValue{
		semconv.MessagingDestinationName(m.Topic),
		semconv.MessagingMessageID(m.ID),
	}
	if t.cfg.System != "" {
		attrs = append(attrs, semconv.MessagingSystemKey.String(t.cfg.System))
	}
	if m.Key != "" {
		attrs = append(attrs, attribute.String("reliable.key", m.Key))
	}
	if m.Type != "" {
		attrs = append(attrs, attribute.String("reliable.type", m.Type))
	}
	return attrs
}

// ErrorType classifies a publish or handler error into a short, bounded label
// for metrics: "too_large", "unknown_topic", "not_authorized", "unroutable",
// "not_confirmed", "closed", "invalid", "wrong_environment", "canceled",
// "timeout", "permanent" or "other".
func ErrorType(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, reliable.ErrMessageTooLarge):
		return "too_large"
	case errors.Is(err, reliable.ErrUnknownTopic):
		return "unknown_topic"
	case errors.Is(err, reliable.ErrNotAuthorized):
		return "not_authorized"
	case errors.Is(err, reliable.ErrUnroutable):
		return "unroutable"
	case errors.Is(err, reliable.ErrNotConfirmed):
		return "not_confirmed"
	case errors.Is(err, reliable.ErrClosed):
		return "closed"
	case errors.Is(err, reliable.ErrInvalidMessage):
		return "invalid"
	case errors.Is(err, reliable.ErrWrongEnvironment):
		return "wrong_environment"
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case reliable.IsPermanent(err):
		return "permanent"
	}
	return "other"
}
