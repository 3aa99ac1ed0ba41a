package observability

import (
	"context"
	"strconv"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/reliable-go/reliable"
)

// Handler wraps h so that each call runs in a consumer span ("process
// <topic>"), child of the producer's span whose context the message carries
// in its headers (see Publisher): one trace then spans the producer and the
// consumer. The span records the message's partition, offset and attempt,
// and the handler's error. h receives the span in its context, so its own
// spans, database queries and slog records (through LogHandler) join the
// trace.
//
// Give the wrapped handler to both consumer.New and retry.NewRetrier: a
// retried message keeps its headers in the retry table, so its later
// attempts join the same trace.
func (t *Telemetry) Handler(h reliable.Handler) reliable.Handler {
	return reliable.HandlerFunc(func(ctx context.Context, m *reliable.Message) error {
		ctx, span := t.StartConsumerSpan(ctx, m)
		defer span.End()
		err := h.Handle(ctx, m)
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, ErrorType(err))
			span.SetAttributes(attribute.Bool("reliable.permanent", reliable.IsPermanent(err)))
		}
		return err
	})
}

// StartConsumerSpan starts the "process <topic>" span of m as Handler does,
// for code that handles messages without a reliable.Handler. End the span
// when done.
func (t *Telemetry) StartConsumerSpan(ctx context.Context, m *reliable.Message) (context.Context, trace.Span) {
	parent := t.Extract(ctx, m)
	attrs := append(t.messageAttrs(m),
		semconv.MessagingOperationName("process"), semconv.MessagingOperationTypeProcess,
		attribute.Int("reliable.attempt", m.Delivery.Attempt))
	if m.Delivery.Queue != "" {
		attrs = append(attrs, attribute.String("reliable.queue", m.Delivery.Queue))
	} else {
		attrs = append(attrs, semconv.MessagingDestinationPartitionID(strconv.Itoa(int(m.Delivery.Partition))),
			semconv.MessagingKafkaOffset(int(m.Delivery.Offset)))
	}
	if m.Delivery.Redelivered {
		attrs = append(attrs, attribute.Bool("reliable.redelivered", true))
	}
	return t.tracer.Start(parent, "process "+m.Topic, trace.WithSpanKind(trace.SpanKindConsumer), trace.WithAttributes(attrs...))
}

// Extract returns ctx carrying the trace context (and baggage) found in m's
// headers, as a remote parent; ctx unchanged when there is none.
func (t *Telemetry) Extract(ctx context.Context, m *reliable.Message) context.Context {
	if m == nil || len(m.Headers) == 0 {
		return ctx
	}
	return t.prop.Extract(ctx, propagation.MapCarrier(m.Headers))
}
