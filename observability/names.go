package observability

// Names of the metrics this package records, as OpenTelemetry instrument
// names. The Prometheus exporter replaces dots with underscores and appends
// the unit and "_total" for counters; the PrometheusName of each is in the
// comment, and deploy/prometheus/alerts.yml uses those.
const (
	// MetricPublishDuration is how long a Publish call took until the broker
	// confirmed (or failed) a message, per message: histogram, seconds,
	// attributes topic and outcome ("ok", "failed").
	// Prometheus: reliable_publish_duration_seconds.
	MetricPublishDuration = "reliable.publish.duration"
	// MetricPublishMessages counts published messages by topic and outcome
	// ("ok", "failed") and, for failures, error_type.
	// Prometheus: reliable_publish_messages_total.
	MetricPublishMessages = "reliable.publish.messages"

	// MetricConsumerDeliveries counts consumer deliveries by topic and
	// outcome (handled, duplicate, parked, dead_lettered, unsettled).
	// Prometheus: reliable_consumer_deliveries_total.
	MetricConsumerDeliveries = "reliable.consumer.deliveries"
	// MetricConsumerDuration is how long a delivery took through the consumer
	// pipeline (dedupe check, retry table, handler, settle): histogram,
	// seconds, attributes topic and outcome.
	// Prometheus: reliable_consumer_duration_seconds.
	MetricConsumerDuration = "reliable.consumer.duration"
	// MetricDedupeHits counts deliveries recognised as duplicates and
	// completed without calling the handler (L20), by topic.
	// Prometheus: reliable_dedupe_hits_total.
	MetricDedupeHits = "reliable.dedupe.hits"
	// MetricNotDeduplicated counts deliveries handled without deduplication
	// because they carried no message ID (another client published them).
	// Prometheus: reliable_dedupe_skipped_without_id_total.
	MetricNotDeduplicated = "reliable.dedupe.skipped_without_id"

	// MetricConsumerLag is a Kafka consumer group's lag per partition:
	// newest offset minus committed offset (L14, L18). Attributes group,
	// topic, partition. Prometheus: reliable_consumer_lag.
	MetricConsumerLag = "reliable.consumer.lag"
	// MetricConsumerLagSkewed is 1 when one partition of a group's topic
	// holds most of its backlog (see Skewed), else 0. Attributes group,
	// topic. Prometheus: reliable_consumer_lag_skewed.
	MetricConsumerLagSkewed = "reliable.consumer.lag.skewed"

	// MetricRetryEntries is the number of retry-table entries by group and
	// state (pending, dead, released). Pending and dead entries block their
	// keys. Prometheus: reliable_retry_entries.
	MetricRetryEntries = "reliable.retry.entries"
	// MetricRetryDue is the number of pending entries whose next attempt is
	// due, by group. Prometheus: reliable_retry_due.
	MetricRetryDue = "reliable.retry.due"
	// MetricRetryBlockedKeys is the number of keys with pending or dead
	// entries, by group. Prometheus: reliable_retry_blocked_keys.
	MetricRetryBlockedKeys = "reliable.retry.blocked_keys"
	// MetricRetryOldestDueAge is how long the most overdue pending entry has
	// been due, by group: 0 when none is due. Growing means the retriers do
	// not keep up or do not run. Prometheus:
	// reliable_retry_oldest_due_age_seconds.
	MetricRetryOldestDueAge = "reliable.retry.oldest_due.age"
	// MetricRetryOldestEntryAge is the age of the oldest pending or dead
	// entry, by group. Prometheus: reliable_retry_oldest_entry_age_seconds.
	MetricRetryOldestEntryAge = "reliable.retry.oldest_entry.age"

	// MetricOutboxPending is the number of outbox rows waiting to be
	// published, dead ones excluded, by outbox.
	// Prometheus: reliable_outbox_pending.
	MetricOutboxPending = "reliable.outbox.pending"
	// MetricOutboxOldestPendingAge is the age of the oldest pending outbox
	// row, by outbox: 0 when none (L18).
	// Prometheus: reliable_outbox_oldest_pending_age_seconds.
	MetricOutboxOldestPendingAge = "reliable.outbox.oldest_pending.age"
	// MetricOutboxDead is the number of dead outbox rows, by outbox.
	// Prometheus: reliable_outbox_dead.
	MetricOutboxDead = "reliable.outbox.dead"

	// MetricOutboxSlotRetained is the WAL a replication slot of the
	// log-reading relay (outbox.ModeLog) keeps from being recycled, in
	// bytes (outbox.SlotInfo.RetainedBytes), by slot.
	// Prometheus: reliable_outbox_slot_retained_bytes.
	MetricOutboxSlotRetained = "reliable.outbox.slot.retained"
	// MetricOutboxSlotLag is the WAL past the slot's confirmed position, in
	// bytes (SlotInfo.LagBytes), by slot.
	// Prometheus: reliable_outbox_slot_lag_bytes.
	MetricOutboxSlotLag = "reliable.outbox.slot.lag"
	// MetricOutboxSlotSafeWAL is how much more WAL may be written before
	// max_slot_wal_keep_size invalidates the slot, in bytes
	// (SlotInfo.SafeWALBytes), -1 when unlimited, by slot.
	// Prometheus: reliable_outbox_slot_safe_wal_bytes.
	MetricOutboxSlotSafeWAL = "reliable.outbox.slot.safe_wal"
	// MetricOutboxSlotExists is 1 when the slot exists, else 0, by slot.
	// Prometheus: reliable_outbox_slot_exists.
	MetricOutboxSlotExists = "reliable.outbox.slot.exists"
	// MetricOutboxSlotLost is 1 when the slot was invalidated (wal_status
	// lost: relays poll until it is dropped and created again), else 0, by
	// slot. Prometheus: reliable_outbox_slot_lost.
	MetricOutboxSlotLost = "reliable.outbox.slot.lost"
	// MetricOutboxSlotActive is 1 while a relay streams from the slot, else
	// 0, by slot. Prometheus: reliable_outbox_slot_active.
	MetricOutboxSlotActive = "reliable.outbox.slot.active"

	// MetricOutboxLogState is 1 for what a relay's log reader does now
	// (outbox.Stats.LogState: reading, standby, slot missing, slot lost,
	// over WAL budget, error, starting, off), by relay and state; the
	// relay's other states have no sample.
	// Prometheus: reliable_outbox_log_state.
	MetricOutboxLogState = "reliable.outbox.log.state"
	// MetricOutboxLogReading is 1 while a relay reads the write-ahead log,
	// 0 while it polls (or stands by), by relay.
	// Prometheus: reliable_outbox_log_reading.
	MetricOutboxLogReading = "reliable.outbox.log.reading"
	// MetricOutboxLogFallbacks counts a relay's switches from reading the
	// log to polling (Stats.LogFallbacks), by relay.
	// Prometheus: reliable_outbox_log_fallbacks_total.
	MetricOutboxLogFallbacks = "reliable.outbox.log.fallbacks"
	// MetricOutboxLogRows counts rows a relay took straight from the log
	// (Stats.LogRows), by relay. Prometheus: reliable_outbox_log_rows_total.
	MetricOutboxLogRows = "reliable.outbox.log.rows"
	// MetricOutboxLogPending is the number of rows of the log a relay has
	// not yet seen done, which hold the slot's confirmed position back
	// (Stats.LogPending), by relay. Prometheus: reliable_outbox_log_pending.
	MetricOutboxLogPending = "reliable.outbox.log.pending"
	// MetricOutboxLogConfirmed is the last WAL position (an LSN as a
	// number) a relay confirmed to the slot (Stats.LogConfirmed), by relay:
	// a reading relay whose position stops moving while rows are added is
	// stuck. Prometheus: reliable_outbox_log_confirmed_lsn.
	MetricOutboxLogConfirmed = "reliable.outbox.log.confirmed_lsn"

	// MetricObserveErrors counts failed reads of the watched sources, by
	// source ("retry", "outbox", "outbox_slot", "kafka_lag"): a gauge that stops updating
	// is otherwise silent. Prometheus: reliable_observe_errors_total.
	MetricObserveErrors = "reliable.observe.errors"
)

// Attribute keys of the metrics. Spans use the OpenTelemetry messaging
// semantic conventions instead.
const (
	AttrTopic     = "topic"
	AttrOutcome   = "outcome"
	AttrErrorType = "error_type"
	AttrGroup     = "group"
	AttrPartition = "partition"
	AttrState     = "state"
	AttrOutbox    = "outbox"
	AttrSource    = "source"
	AttrSlot      = "slot"
	AttrRelay     = "relay"
)
