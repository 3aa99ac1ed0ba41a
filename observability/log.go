package observability

import (
	"context"
	"log/slog"

	"go.opentelemetry.io/otel/trace"

	"github.com/reliable-go/reliable"
)

// MessageAttrs returns the slog attributes that identify m in logs: message
// ID, key, topic, type and attempt. Payload and header values are left out:
// they may hold personal data or secrets.
//
//	log.InfoContext(ctx, "order applied", observability.MessageAttrs(msg)...)
func MessageAttrs(m *reliable.Message) []any {
	if m == nil {
		return nil
	}
	attrs := []any{
		slog.String("message_id", m.ID),
		slog.String("key", m.Key),
		slog.String("topic", m.Topic),
	}
	if m.Type != "" {
		attrs = append(attrs, slog.String("type", m.Type))
	}
	if m.Delivery.Attempt > 0 {
		attrs = append(attrs, slog.Int("attempt", m.Delivery.Attempt))
	}
	return attrs
}

// LogHandler wraps a slog.Handler so that every record logged with a context
// holding a span (slog's *Context methods, e.g. InfoContext) carries its
// trace_id and span_id: logs and traces of one message can be joined.
func LogHandler(h slog.Handler) slog.Handler { return logHandler{h} }

type logHandler struct{ slog.Handler }

// Handle adds the span's IDs and passes r on.
func (l logHandler) Handle(ctx context.Context, r slog.Record) error {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		r = r.Clone()
		r.AddAttrs(slog.String("trace_id", sc.TraceID().String()), slog.String("span_id", sc.SpanID().String()))
	}
	return l.Handler.Handle(ctx, r)
}

// WithAttrs keeps the wrapper.
func (l logHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return logHandler{l.Handler.WithAttrs(attrs)}
}

// WithGroup keeps the wrapper.
func (l logHandler) WithGroup(name string) slog.Handler {
	return logHandler{l.Handler.WithGroup(name)}
}
