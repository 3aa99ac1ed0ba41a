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

	// AlertDeadEntries: any dead retry entry or dead outbox row needs an
	// operator (each blocks its key by default): alert above zero.
	AlertDeadEntries = 0
)
