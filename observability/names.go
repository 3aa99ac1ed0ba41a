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

	// MetricObserveErrors counts failed reads of the watched sources, by
	// source ("retry", "outbox", "kafka_lag"): a gauge that stops updating
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
)
