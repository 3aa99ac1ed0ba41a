package retry

import (
	"context"
	"errors"
	"log/slog"
)

// Notifier is told when an entry dies: it failed MaxAttempts times, or
// permanently (L11: "developers are notified"). Notify runs with a timeout
// (TableConfig.NotifyTimeout); an error is logged and not retried, so a
// notifier that must not miss one should queue durably itself. Dead entries
// also show in Stats and List whatever the notifier does.
type Notifier interface {
	Notify(ctx context.Context, e DeadEntry) error
}

// NotifierFunc adapts a function to a Notifier.
type NotifierFunc func(ctx context.Context, e DeadEntry) error

// Notify calls f(ctx, e).
func (f NotifierFunc) Notify(ctx context.Context, e DeadEntry) error { return f(ctx, e) }

// LogNotifier logs dead entries at error level. It is the default notifier.
type LogNotifier struct {
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Notify implements [Notifier].
func (n LogNotifier) Notify(ctx context.Context, e DeadEntry) error {
	l := n.Logger
	if l == nil {
		l = slog.Default()
	}
	l.ErrorContext(ctx, "retry entry is dead: inspect it, then retry, discard or release it",
		"group", e.Group, "entry", e.ID, "message_id", e.Message.ID, "key", e.Message.Key,
		"topic", e.Message.Topic, "type", e.Message.Type, "attempts", e.Attempts,
		"blocking", e.Blocking, "error", e.LastError)
	return nil
}

// Notifiers calls each notifier in turn and joins their errors.
type Notifiers []Notifier

// Notify implements [Notifier].
func (ns Notifiers) Notify(ctx context.Context, e DeadEntry) error {
	var errs []error
	for _, n := range ns {
		if err := n.Notify(ctx, e); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
