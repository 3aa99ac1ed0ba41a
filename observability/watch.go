package observability

import (
	"context"
	"log/slog"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/reliable-go/reliable/outbox"
	"github.com/reliable-go/reliable/retry"
)

// WatchRetryTable reports tbl's Status (L18) each time metrics are collected:
// entries by state, due entries, blocked keys, how overdue the oldest due
// entry is and the age of the oldest entry, with the group as attribute.
// Each collection runs one query, bounded by Config.PollTimeout; a failed
// one is logged and counted in MetricObserveErrors, and its gauges are
// skipped. Call Unregister on the result to stop.
func (t *Telemetry) WatchRetryTable(tbl *retry.Table) (metric.Registration, error) {
	return t.watchRetry(tbl.Config().Group, tbl.Status)
}

func (t *Telemetry) watchRetry(group string, stats func(context.Context) (retry.Status, error)) (metric.Registration, error) {
	g := attribute.String(AttrGroup, group)
	byState := func(state string) metric.ObserveOption {
		return metric.WithAttributeSet(attribute.NewSet(g, attribute.String(AttrState, state)))
	}
	set := metric.WithAttributeSet(attribute.NewSet(g))
	return t.meter.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		ctx, cancel := context.WithTimeout(ctx, t.cfg.PollTimeout)
		defer cancel()
		s, err := stats(ctx)
		if err != nil {
			t.pollFailed(ctx, "retry", err, slog.String("group", group))
			return nil
		}
		now := time.Now()
		o.ObserveInt64(t.retryEntries, s.Pending, byState(string(retry.StatePending)))
		o.ObserveInt64(t.retryEntries, s.Dead, byState(string(retry.StateDead)))
		o.ObserveInt64(t.retryEntries, s.Released, byState(string(retry.StateReleased)))
		o.ObserveInt64(t.retryDue, s.Due, set)
		o.ObserveInt64(t.retryBlockedKeys, s.BlockedKeys, set)
		o.ObserveFloat64(t.retryOldestDue, overdue(now, s.OldestDue), set)
		o.ObserveFloat64(t.retryOldestEntry, overdue(now, s.OldestCreated), set)
		return nil
	}, t.retryEntries, t.retryDue, t.retryBlockedKeys, t.retryOldestDue, t.retryOldestEntry)
}

// overdue is how many seconds ago at was, 0 when zero or in the future.
func overdue(now, at time.Time) float64 {
	if at.IsZero() || at.After(now) {
		return 0
	}
	return now.Sub(at).Seconds()
}

// WatchOutbox reports outbox.ReadStatus of db (the outbox tables in db's
// search_path) each time metrics are collected: pending rows, the oldest
// pending row's age and dead rows, with the attribute outbox=name (e.g. the
// service or schema). Each collection runs one query, bounded by
// Config.PollTimeout. Call Unregister on the result to stop.
func (t *Telemetry) WatchOutbox(db outbox.DB, name string) (metric.Registration, error) {
	return t.watchOutbox(name, func(ctx context.Context) (outbox.Status, error) { return outbox.ReadStatus(ctx, db) })
}

func (t *Telemetry) watchOutbox(name string, status func(context.Context) (outbox.Status, error)) (metric.Registration, error) {
	set := metric.WithAttributeSet(attribute.NewSet(attribute.String(AttrOutbox, name)))
	return t.meter.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		ctx, cancel := context.WithTimeout(ctx, t.cfg.PollTimeout)
		defer cancel()
		s, err := status(ctx)
		if err != nil {
			t.pollFailed(ctx, "outbox", err, slog.String("outbox", name))
			return nil
		}
		o.ObserveInt64(t.outboxPending, s.Pending, set)
		o.ObserveFloat64(t.outboxOldest, s.OldestPending.Seconds(), set)
		o.ObserveInt64(t.outboxDead, s.Dead, set)
		return nil
	}, t.outboxPending, t.outboxOldest, t.outboxDead)
}

// pollFailed logs and counts a failed read of a watched source. The callback
// then returns nil so the other sources' metrics are still exported.
func (t *Telemetry) pollFailed(ctx context.Context, source string, err error, attrs ...any) {
	t.observeErrors.Add(ctx, 1, metric.WithAttributes(attribute.String(AttrSource, source)))
	t.cfg.Logger.WarnContext(ctx, "observability: reading "+source+" for metrics failed",
		append(attrs, slog.String("error", err.Error()))...)
}
