package observability

import "time"

// Default alert thresholds (L18: backlogs were noticed by complaints). They
// are starting points for the example rules in deploy/prometheus/alerts.yml
// and the defaults of reliablectl; tune them to the traffic of each service.
const (
	// AlertLagMessages: a consumer group whose total lag on a topic stays
	// above this many messages for AlertLagFor is falling behind.
	AlertLagMessages = 1000
	// AlertLagFor is how long the lag must stay high before alerting, so a
	// burst that the consumers absorb (L23) does not page anyone.
	AlertLagFor = 10 * time.Minute

	// SkewShare: a topic's backlog is skewed when one partition holds more
	// than this share of it (and at least twice the next partition's lag),
	// the sign of a hot key or a coarse partition key (L14).
	SkewShare = 0.5
	// SkewMinLag: skew is reported only when the topic's total lag is at
	// least this many messages; a handful of messages is never a hot spot.
	SkewMinLag = AlertLagMessages

	// AlertOutboxOldestPending: the relay publishes a row within
	// milliseconds, so a pending row older than this means the relay is down,
	// the broker is unreachable, or a key is blocked.
	AlertOutboxOldestPending = 5 * time.Minute

	// AlertRetryPending: more pending retry-table entries than this means
	// a dependency of the handler is failing for many keys.
	AlertRetryPending = 100
	// AlertRetryOverdue: a pending entry due for longer than this means the
	// retriers do not run or do not keep up.
	AlertRetryOverdue = 5 * time.Minute

	// AlertSlotRetainedBytes: a replication slot of the log-reading relay
	// (outbox.ModeLog) that retains more WAL than this for
	// AlertSlotRetainedFor is held back (a broker outage, a dead row, a
	// relay down). Half of outbox.Config.SlotWALBudget's default (512 MiB),
	// where the relay falls back and moves the slot on: this warns first.
	AlertSlotRetainedBytes = 256 << 20
	// AlertSlotRetainedFor is how long the slot must retain that much.
	AlertSlotRetainedFor = 10 * time.Minute
	// AlertSlotSafeWALBytes: a slot less than this many bytes of WAL away
	// from invalidation by max_slot_wal_keep_size needs an operator now.
	AlertSlotSafeWALBytes = 128 << 20
	// AlertSlotLagBytes: a healthy slot lagging more than this for
	// AlertSlotLagFor is read slowly or by nobody (all relays poll).
	AlertSlotLagBytes = 64 << 20
	// AlertSlotLagFor is how long the slot must lag that much.
	AlertSlotLagFor = 15 * time.Minute
	// AlertLogFallbacks: a relay that falls back from the log to polling
	// more often than this in 15 minutes keeps failing to read the log.
	AlertLogFallbacks = 3

	// AlertDeadEntries: any dead retry entry or dead outbox row needs an
	// operator (each blocks its key by default): alert above zero.
	AlertDeadEntries = 0
)
