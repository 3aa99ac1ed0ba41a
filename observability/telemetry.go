package observability

import (
	"log/slog"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/reliable-go/reliable"
)

// ScopeName is the instrumentation scope of this package's meter and tracer.
const ScopeName = "github.com/reliable-go/reliable/observability"

// DefaultPollTimeout bounds each read of a watched source.
const DefaultPollTimeout = 5 * time.Second

// Config configures a Telemetry. The zero value uses the global OpenTelemetry
// providers.
type Config struct {
	// MeterProvider records the metrics. Defaults to otel.GetMeterProvider().
	// NewPrometheus returns one whose metrics an HTTP handler serves.
	MeterProvider metric.MeterProvider
	// TracerProvider creates the spans. Defaults to otel.GetTracerProvider().
	TracerProvider trace.TracerProvider
	// Propagator writes and reads the trace context in message headers.
	// Defaults to W3C Trace Context and Baggage ("traceparent",
	// "tracestate", "baggage" headers), whatever the global propagator is, so
	// a consumer in any language reads what a producer wrote.
	Propagator propagation.TextMapPropagator
	// System is the messaging.system attribute of spans: "kafka" or
	// "rabbitmq". Optional.
	System string
	// PollTimeout bounds each read of a watched retry table, outbox or
	// consumer group when metrics are collected. Defaults to
	// DefaultPollTimeout.
	PollTimeout time.Duration
	// Logger receives failed reads of watched sources. Defaults to
	// slog.Default().
	Logger *slog.Logger
}

// Validate returns every problem of c at once, or nil.
func (c Config) Validate() error {
	var p reliable.Problems
	p.Addf(c.PollTimeout < 0, "PollTimeout is negative")
	return p.Err("observability")
}

// Telemetry records the SDK's metrics and carries trace context through
// message headers. Create one per process with New and share it; it is safe
// for concurrent use.
type Telemetry struct {
	cfg    Config
	tracer trace.Tracer
	prop   propagation.TextMapPropagator
	meter  metric.Meter

	publishDuration  metric.Float64Histogram
	publishMessages  metric.Int64Counter
	deliveries       metric.Int64Counter
	consumerDuration metric.Float64Histogram
	dedupeHits       metric.Int64Counter
	notDeduplicated  metric.Int64Counter
	lag              metric.Int64ObservableGauge
	lagSkewed        metric.Int64ObservableGauge
	retryEntries     metric.Int64ObservableGauge
	retryDue         metric.Int64ObservableGauge
	retryBlockedKeys metric.Int64ObservableGauge
	retryOldestDue   metric.Float64ObservableGauge
	retryOldestEntry metric.Float64ObservableGauge
	outboxPending    metric.Int64ObservableGauge
	outboxOldest     metric.Float64ObservableGauge
	outboxDead       metric.Int64ObservableGauge
	slotRetained     metric.Int64ObservableGauge
	slotLag          metric.Int64ObservableGauge
	slotSafeWAL      metric.Int64ObservableGauge
	slotExists       metric.Int64ObservableGauge
	slotLost         metric.Int64ObservableGauge
	slotActive       metric.Int64ObservableGauge
	logState         metric.Int64ObservableGauge
	logReading       metric.Int64ObservableGauge
	logFallbacks     metric.Int64ObservableCounter
	logRows          metric.Int64ObservableCounter
	logPending       metric.Int64ObservableGauge
	logConfirmed     metric.Int64ObservableGauge
	observeErrors    metric.Int64Counter
}

// latencyBuckets suit publish confirms and handlers: 1 ms to 30 s.
var latencyBuckets = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}

// New creates the instruments on cfg's meter provider. It returns a
// *reliable.ConfigError for an invalid cfg, or the meter's error.
func New(cfg Config) (*Telemetry, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.MeterProvider == nil {
		cfg.MeterProvider = otel.GetMeterProvider()
	}
	if cfg.TracerProvider == nil {
		cfg.TracerProvider = otel.GetTracerProvider()
	}
	if cfg.Propagator == nil {
		cfg.Propagator = propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
	}
	if cfg.PollTimeout == 0 {
		cfg.PollTimeout = DefaultPollTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	t := &Telemetry{
		cfg:    cfg,
		tracer: cfg.TracerProvider.Tracer(ScopeName),
		prop:   cfg.Propagator,
		meter:  cfg.MeterProvider.Meter(ScopeName),
	}
	m := t.meter
	var err error
	set := func(e error) {
		if err == nil {
			err = e
		}
	}
	var e error
	t.publishDuration, e = m.Float64Histogram(MetricPublishDuration, metric.WithUnit("s"),
		metric.WithDescription("Time from Publish to the broker's confirm or failure, per message."),
		metric.WithExplicitBucketBoundaries(latencyBuckets...))
	set(e)
	t.publishMessages, e = m.Int64Counter(MetricPublishMessages, metric.WithUnit("{message}"),
		metric.WithDescription("Published messages by outcome (ok, failed)."))
	set(e)
	t.deliveries, e = m.Int64Counter(MetricConsumerDeliveries, metric.WithUnit("{delivery}"),
		metric.WithDescription("Consumer deliveries by outcome (handled, duplicate, parked, dead_lettered, held, unsettled); held counts each failed try of a message that holds its key."))
	set(e)
	t.consumerDuration, e = m.Float64Histogram(MetricConsumerDuration, metric.WithUnit("s"),
		metric.WithDescription("Time a delivery took through the consumer pipeline, handler included."),
		metric.WithExplicitBucketBoundaries(latencyBuckets...))
	set(e)
	t.dedupeHits, e = m.Int64Counter(MetricDedupeHits, metric.WithUnit("{delivery}"),
		metric.WithDescription("Deliveries recognised as duplicates and completed without calling the handler."))
	set(e)
	t.notDeduplicated, e = m.Int64Counter(MetricNotDeduplicated, metric.WithUnit("{delivery}"),
		metric.WithDescription("Deliveries without a message ID (published by another client), handled without deduplication."))
	set(e)
	t.lag, e = m.Int64ObservableGauge(MetricConsumerLag, metric.WithUnit("{message}"),
		metric.WithDescription("Consumer group lag per partition: newest offset minus committed offset."))
	set(e)
	t.lagSkewed, e = m.Int64ObservableGauge(MetricConsumerLagSkewed,
		metric.WithDescription("1 when one partition holds most of a topic's backlog (hot key), else 0."))
	set(e)
	t.retryEntries, e = m.Int64ObservableGauge(MetricRetryEntries, metric.WithUnit("{entry}"),
		metric.WithDescription("Retry-table entries by state (pending, dead, released)."))
	set(e)
	t.retryDue, e = m.Int64ObservableGauge(MetricRetryDue, metric.WithUnit("{entry}"),
		metric.WithDescription("Pending retry-table entries whose next attempt is due."))
	set(e)
	t.retryBlockedKeys, e = m.Int64ObservableGauge(MetricRetryBlockedKeys, metric.WithUnit("{key}"),
		metric.WithDescription("Keys with pending or dead retry-table entries."))
	set(e)
	t.retryOldestDue, e = m.Float64ObservableGauge(MetricRetryOldestDueAge, metric.WithUnit("s"),
		metric.WithDescription("How long the most overdue pending retry-table entry has been due; 0 when none is."))
	set(e)
	t.retryOldestEntry, e = m.Float64ObservableGauge(MetricRetryOldestEntryAge, metric.WithUnit("s"),
		metric.WithDescription("Age of the oldest pending or dead retry-table entry; 0 when none."))
	set(e)
	t.outboxPending, e = m.Int64ObservableGauge(MetricOutboxPending, metric.WithUnit("{row}"),
		metric.WithDescription("Outbox rows waiting to be published, dead ones excluded."))
	set(e)
	t.outboxOldest, e = m.Float64ObservableGauge(MetricOutboxOldestPendingAge, metric.WithUnit("s"),
		metric.WithDescription("Age of the oldest pending outbox row; 0 when none."))
	set(e)
	t.outboxDead, e = m.Int64ObservableGauge(MetricOutboxDead, metric.WithUnit("{row}"),
		metric.WithDescription("Dead outbox rows, each waiting for an operator."))
	set(e)
	t.slotRetained, e = m.Int64ObservableGauge(MetricOutboxSlotRetained, metric.WithUnit("By"),
		metric.WithDescription("WAL the outbox's replication slot keeps from being recycled."))
	set(e)
	t.slotLag, e = m.Int64ObservableGauge(MetricOutboxSlotLag, metric.WithUnit("By"),
		metric.WithDescription("WAL past the outbox replication slot's confirmed position."))
	set(e)
	t.slotSafeWAL, e = m.Int64ObservableGauge(MetricOutboxSlotSafeWAL, metric.WithUnit("By"),
		metric.WithDescription("WAL that may still be written before max_slot_wal_keep_size invalidates the slot; -1 when unlimited."))
	set(e)
	t.slotExists, e = m.Int64ObservableGauge(MetricOutboxSlotExists,
		metric.WithDescription("1 when the outbox replication slot exists, else 0."))
	set(e)
	t.slotLost, e = m.Int64ObservableGauge(MetricOutboxSlotLost,
		metric.WithDescription("1 when the outbox replication slot was invalidated (wal_status lost), else 0."))
	set(e)
	t.slotActive, e = m.Int64ObservableGauge(MetricOutboxSlotActive,
		metric.WithDescription("1 while a relay streams from the outbox replication slot, else 0."))
	set(e)
	t.logState, e = m.Int64ObservableGauge(MetricOutboxLogState,
		metric.WithDescription("1 for what the relay's log reader does now (state: reading, standby, slot missing, slot lost, over WAL budget, error, starting, off)."))
	set(e)
	t.logReading, e = m.Int64ObservableGauge(MetricOutboxLogReading,
		metric.WithDescription("1 while the relay reads the write-ahead log, 0 while it polls or stands by."))
	set(e)
	t.logFallbacks, e = m.Int64ObservableCounter(MetricOutboxLogFallbacks, metric.WithUnit("{fallback}"),
		metric.WithDescription("Switches of the relay from reading the write-ahead log to polling."))
	set(e)
	t.logRows, e = m.Int64ObservableCounter(MetricOutboxLogRows, metric.WithUnit("{row}"),
		metric.WithDescription("Outbox rows the relay took straight from the write-ahead log."))
	set(e)
	t.logPending, e = m.Int64ObservableGauge(MetricOutboxLogPending, metric.WithUnit("{row}"),
		metric.WithDescription("Rows of the write-ahead log the relay has not yet seen done; they hold the slot's confirmed position back."))
	set(e)
	t.logConfirmed, e = m.Int64ObservableGauge(MetricOutboxLogConfirmed,
		metric.WithDescription("The last WAL position (LSN as a number) the relay confirmed to the slot."))
	set(e)
	t.observeErrors, e = m.Int64Counter(MetricObserveErrors, metric.WithUnit("{error}"),
		metric.WithDescription("Failed reads of a watched retry table, outbox or consumer group."))
	set(e)
	if err != nil {
		return nil, err
	}
	return t, nil
}
