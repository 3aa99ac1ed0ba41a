// Package observability gives the SDK's services OpenTelemetry metrics and
// traces that follow a message from the request that created it to the
// handler that applied it, and the figures on-call engineers alert on
// (L14, L18).
//
// # Traces
//
// Telemetry.Publisher wraps a reliable.Publisher: each message gets a
// producer span ("send <topic>") and its W3C trace context is written to the
// message's headers ("traceparent", "tracestate"; "baggage"), which every
// adapter carries as broker headers. Telemetry.Handler wraps the handler:
// it reads that context and runs the handler in a consumer span ("process
// <topic>"), child of the producer's. One trace thus spans producer, broker
// and consumer, in any language whose OpenTelemetry SDK reads W3C headers.
//
// With the transactional outbox, call Telemetry.Inject on the messages
// before outbox.Add, inside the request's span: the outbox stores the
// headers, so the relay's publish (through a wrapped publisher) continues
// the request's trace, however much later it runs:
//
//	tel.Inject(ctx, msg)           // in the HTTP handler, span in ctx
//	outbox.Add(ctx, tx, msg)       // same transaction as the order
//	outbox.NewRelay(pool, tel.Publisher(producer), cfg)
//
// Retried messages keep their headers in the retry table, so their attempts
// join the same trace when the retrier's handler is wrapped too. LogHandler
// adds trace_id and span_id to slog records; MessageAttrs gives the message
// ID, key, topic and attempt to log.
//
// # Metrics
//
// Instrument names are the Metric* constants; with the Prometheus exporter
// (NewPrometheus) dots become underscores, "_seconds" follows durations and
// "_total" counters:
//
//   - publish latency and failures: Telemetry.Publisher records
//     reliable_publish_duration_seconds and reliable_publish_messages_total
//     (outcome ok or failed, with error_type);
//   - consumer outcomes, duration and dedupe hits: pass Telemetry.Observe as
//     consumer.Config.Observe (reliable_consumer_deliveries_total,
//     reliable_consumer_duration_seconds, reliable_dedupe_hits_total);
//   - consumer lag per partition and hot-partition skew (L14):
//     Telemetry.WatchLag with a function returning a GroupLag
//     (reliable_consumer_lag, reliable_consumer_lag_skewed); for Kafka,
//     kafkalag.Watch in package observability/kafkalag reads it with sarama;
//   - retry-table depth, due and dead entries, oldest due entry:
//     Telemetry.WatchRetryTable (reliable_retry_entries{state},
//     reliable_retry_oldest_due_age_seconds, ...);
//   - outbox pending rows, oldest pending age, dead rows:
//     Telemetry.WatchOutbox (reliable_outbox_pending,
//     reliable_outbox_oldest_pending_age_seconds, reliable_outbox_dead);
//   - the log-reading relay (outbox.ModeLog): Telemetry.WatchOutboxSlot
//     reads outbox.SlotStatus (reliable_outbox_slot_retained_bytes,
//     reliable_outbox_slot_lag_bytes, reliable_outbox_slot_safe_wal_bytes,
//     reliable_outbox_slot_exists, _lost, _active, by slot) and
//     Telemetry.WatchRelay the relay's Stats without a query
//     (reliable_outbox_log_state{state}, reliable_outbox_log_reading,
//     reliable_outbox_log_fallbacks_total, reliable_outbox_log_rows_total,
//     reliable_outbox_log_pending, reliable_outbox_log_confirmed_lsn, by
//     relay).
//
// The watched figures are read when metrics are collected (a Prometheus
// scrape), one query each, bounded by Config.PollTimeout; scrape every 15 to
// 60 seconds, not faster.
//
// # Alerts
//
// The Alert* and Skew* constants are documented default thresholds, and
// deploy/prometheus/alerts.yml holds example Prometheus rules using them:
// lag above AlertLagMessages for AlertLagFor, a skewed backlog, an outbox row
// pending longer than AlertOutboxOldestPending, more than AlertRetryPending
// retry entries or one overdue by AlertRetryOverdue, any dead entry or
// dead outbox row, and for the log-reading relay a slot retaining more than
// AlertSlotRetainedBytes, within AlertSlotSafeWALBytes of invalidation,
// missing or lost, lagging AlertSlotLagBytes, or more than
// AlertLogFallbacks fallbacks to polling in 15 minutes. The reliablectl command shows the same figures to an
// operator.
//
// # Brokers
//
// This package imports no broker client: a RabbitMQ-only service compiles
// no sarama by importing it. The lag types (GroupLag, TopicLag,
// PartitionLag, ErrUnknownGroup) are broker-neutral; reading them from
// Kafka is package observability/kafkalag (kafkalag.Read, kafkalag.Watch),
// which imports sarama.
package observability
