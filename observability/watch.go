package observability

import (
	"context"
	"log/slog"
	"math"
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

// WatchOutboxSlot reports outbox.SlotStatus of the replication slot that
// relays in outbox.ModeLog read (outbox.DefaultSlot when slot is empty)
// each time metrics are collected, with the attribute slot: retained WAL,
// WAL past the confirmed position, WAL left before max_slot_wal_keep_size
// invalidates it (-1: unlimited), and whether it exists, was invalidated
// (wal_status lost) and is streamed from. A missing slot reports exists 0
// and lost 0 without the byte gauges. Watch each slot once per service,
// not once per relay: the figures are the database's. Each collection runs
// one query, bounded by Config.PollTimeout; a failed one is logged and
// counted in MetricObserveErrors (source "outbox_slot"). Call Unregister on
// the result to stop.
//
// The relay's own Stats.SlotRetainedBytes and SlotLagBytes are not used:
// the relay updates them only while it reads the log, so a relay that
// polls or stands by, exactly when a slot is stuck, would report stale
// figures.
func (t *Telemetry) WatchOutboxSlot(db outbox.DB, slot string) (metric.Registration, error) {
	if slot == "" {
		slot = outbox.DefaultSlot
	}
	return t.watchSlot(slot, func(ctx context.Context) (outbox.SlotInfo, error) { return outbox.SlotStatus(ctx, db, slot) })
}

func (t *Telemetry) watchSlot(slot string, status func(context.Context) (outbox.SlotInfo, error)) (metric.Registration, error) {
	set := metric.WithAttributeSet(attribute.NewSet(attribute.String(AttrSlot, slot)))
	return t.meter.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		ctx, cancel := context.WithTimeout(ctx, t.cfg.PollTimeout)
		defer cancel()
		s, err := status(ctx)
		if err != nil {
			t.pollFailed(ctx, "outbox_slot", err, slog.String("slot", slot))
			return nil
		}
		o.ObserveInt64(t.slotExists, flag(s.Exists), set)
		o.ObserveInt64(t.slotLost, flag(s.WALStatus == "lost"), set)
		if !s.Exists {
			return nil
		}
		o.ObserveInt64(t.slotActive, flag(s.Active), set)
		o.ObserveInt64(t.slotRetained, s.RetainedBytes, set)
		o.ObserveInt64(t.slotLag, s.LagBytes, set)
		o.ObserveInt64(t.slotSafeWAL, s.SafeWALBytes, set)
		return nil
	}, t.slotExists, t.slotLost, t.slotActive, t.slotRetained, t.slotLag, t.slotSafeWAL)
}

// WatchRelay reports the log reader of r (outbox.ModeLog) from r.Stats()
// each time metrics are collected, with the attribute relay=r.Instance(): its
// state (MetricOutboxLogState, 1 for the current state; MetricOutboxLogReading,
// 1 while it reads the log, 0 while it polls or stands by), its fallbacks to
// polling and the rows it took from the log (counters), the rows of the log
// not yet done and the WAL position it last confirmed. It runs no query. A
// relay in outbox.ModePoll reports state "off". Call Unregister on the
// result to stop; watch each relay once.
func (t *Telemetry) WatchRelay(r *outbox.Relay) (metric.Registration, error) {
	return t.watchRelay(r.Instance(), r.Stats)
}

func (t *Telemetry) watchRelay(relay string, stats func() outbox.Stats) (metric.Registration, error) {
	id := attribute.String(AttrRelay, relay)
	set := metric.WithAttributeSet(attribute.NewSet(id))
	return t.meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		s := stats()
		if s.LogState != "" { // "" before Run started
			o.ObserveInt64(t.logState, 1, metric.WithAttributeSet(attribute.NewSet(id, attribute.String(AttrState, s.LogState))))
		}
		o.ObserveInt64(t.logReading, flag(s.LogState == "reading"), set)
		o.ObserveInt64(t.logFallbacks, clampInt64(s.LogFallbacks), set)
		o.ObserveInt64(t.logRows, clampInt64(s.LogRows), set)
		o.ObserveInt64(t.logPending, int64(s.LogPending), set)
		o.ObserveInt64(t.logConfirmed, clampInt64(s.LogConfirmed), set)
		return nil
	}, t.logState, t.logReading, t.logFallbacks, t.logRows, t.logPending, t.logConfirmed)
}

// flag is 1 for true, 0 for false.
func flag(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// clampInt64 converts a counter for an Int64 instrument.
func clampInt64(n uint64) int64 {
	return int64(min(n, math.MaxInt64))
}

// pollFailed logs and counts a failed read of a watched source. The callback
// then returns nil so the other sources' metrics are still exported.
func (t *Telemetry) pollFailed(ctx context.Context, source string, err error, attrs ...any) {
	t.observeErrors.Add(ctx, 1, metric.WithAttributes(attribute.String(AttrSource, source)))
	t.cfg.Logger.WarnContext(ctx, "observability: reading "+source+" for metrics failed",
		append(attrs, slog.String("error", err.Error()))...)
}
