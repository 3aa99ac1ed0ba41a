package retry

import (
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/reliable-go/reliable"
)

// State is the life-cycle state of an [Entry].
type State string

const (
	// StatePending waits for its next attempt, or behind its key's earlier
	// entries. It blocks its key.
	StatePending State = "pending"
	// StateDead failed MaxAttempts times or permanently. It blocks its key
	// until an operator retries, discards or releases it (unless the table
	// has ReleaseOnDead).
	StateDead State = "dead"
	// StateReleased is dead but no longer blocks its key; it stays for
	// inspection until Cleanup removes it after the retention.
	StateReleased State = "released"
	// StateDone was applied by a retry; kept for the retention unless the
	// table has DeleteSucceeded.
	StateDone State = "done"
	// StateDiscarded was dropped by an operator.
	StateDiscarded State = "discarded"
)

// Blocking reports whether an entry in state s holds back its key.
func (s State) Blocking() bool { return s == StatePending || s == StateDead }

// Entry is one parked message.
type Entry struct {
	// ID is the entry's sequence number: a key's entries replay in ID order,
	// which is the order they were parked.
	ID    int64
	Group string
	// Message is the parked message as it was delivered. Its
	// Delivery.Attempt is the number of the next attempt.
	Message *reliable.Message
	State   State
	// Attempts counts failed attempts so far, including the consumer's.
	Attempts int
	// NextAttemptAt is when a pending entry is due. It is zero for an entry
	// waiting behind its key's head: it gets a time when it becomes the head.
	NextAttemptAt time.Time
	// LastError is the latest failure's message.
	LastError string
	CreatedAt time.Time
	UpdatedAt time.Time
	// FinishedAt is when the entry died, was released, discarded or done.
	FinishedAt time.Time
}

// DeadEntry is what a [Notifier] is told about.
type DeadEntry struct {
	Entry
	// Blocking is true when the entry keeps its key blocked.
	Blocking bool
}

// ListFilter selects entries for [Table.List]. The zero value lists the
// group's first 100 entries.
type ListFilter struct {
	// Key, when set, lists only that key's entries.
	Key string
	// States, when set, lists only entries in these states.
	States []State
	// AfterID lists entries with a larger ID, for paging.
	AfterID int64
	// Limit defaults to 100 and is capped at 1000.
	Limit int
}

// Status describes a group's retry table for metrics and alerts (L18).
type Status struct {
	// Pending and Dead count entries that block their keys.
	Pending, Dead int64
	// Released counts dead entries kept for inspection.
	Released int64
	// BlockedKeys counts keys with pending or dead entries.
	BlockedKeys int64
	// Due counts pending entries whose next attempt time has come: heads of
	// their keys, ready for a retrier.
	Due int64
	// OldestDue is the earliest NextAttemptAt of a pending entry; zero when
	// none has one. Far in the past means the retriers are not keeping up.
	OldestDue time.Time
	// OldestCreated is when the oldest pending or dead entry was parked.
	OldestCreated time.Time
}

const entryColumns = `id, grp, coalesce(message_id_full, message_id), msg_key, topic, msg_type, headers, payload, msg_time,
  src_partition, src_offset, src_queue, state, attempts, next_attempt_at, last_error,
  created_at, updated_at, finished_at`

func scanEntry(row pgx.Row) (Entry, error) {
	var (
		e        Entry
		m        reliable.Message
		msgTime  *time.Time
		next     *time.Time
		finished *time.Time
		state    string
	)
	err := row.Scan(&e.ID, &e.Group, &m.ID, &m.Key, &m.Topic, &m.Type, &m.Headers, &m.Payload, &msgTime,
		&m.Delivery.Partition, &m.Delivery.Offset, &m.Delivery.Queue, &state, &e.Attempts, &next, &e.LastError,
		&e.CreatedAt, &e.UpdatedAt, &finished)
	if err != nil {
		return Entry{}, err
	}
	m.ID, m.Key, m.Topic, m.Type = fromStoredText(m.ID), fromStoredText(m.Key), fromStoredText(m.Topic), fromStoredText(m.Type)
	m.Delivery.Queue = fromStoredText(m.Delivery.Queue)
	m.Headers = fromStoredHeaders(m.Headers)
	if msgTime != nil {
		m.Time = *msgTime
	}
	if next != nil {
		e.NextAttemptAt = *next
	}
	if finished != nil {
		e.FinishedAt = *finished
	}
	e.State = State(state)
	m.Delivery.Attempt = e.Attempts + 1
	m.Delivery.Redelivered = e.Attempts > 0
	m.Delivery.ReceivedAt = e.CreatedAt
	e.Message = &m
	return e, nil
}

// lane is the ordering unit of a message: its key, or for a keyless message
// its own ID, since keyless messages need no order among themselves. Both
// are stored in indexedText form (see encode.go), so a lane is valid text and
// short enough for the index whatever bytes the key holds.
func lane(msg *reliable.Message) string {
	if msg.Key == "" {
		return "i:" + indexedText(msg.ID)
	}
	return keyLane(msg.Key)
}

func keyLane(key string) string { return "k:" + indexedText(key) }
