package outbox

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/reliable-go/reliable"
)

// DB runs statements: *pgxpool.Pool, *pgx.Conn and pgx.Tx satisfy it.
type DB interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// ErrNotFound means no outbox row has the given ID.
var ErrNotFound = errors.New("outbox: no such row")

// ErrNotDead means Retry or Discard was called on a row that is not dead.
var ErrNotDead = errors.New("outbox: row is not dead")

// Status is the state of the outbox tables, for metrics and operators.
type Status struct {
	// Pending counts rows waiting to be published, dead ones excluded.
	Pending int64
	// OldestPending is the age of the oldest pending row, 0 when none (L18:
	// alert on it).
	OldestPending time.Duration
	// Dead counts dead rows; each blocks its key unless the relay runs with
	// ReleaseOnDead.
	Dead int64
	// LeasedKeys counts keys leased by live relays; Relays counts those
	// relays.
	LeasedKeys, Relays int64
}

// ReadStatus reads the outbox's status. Counting is exact, so it reads every
// pending row's index entry: call it every few seconds, not per message.
func ReadStatus(ctx context.Context, db DB) (Status, error) {
	var s Status
	var oldest *time.Duration
	err := db.QueryRow(ctx, `SELECT
			(SELECT count(*) FROM reliable_outbox WHERE dead_at IS NULL),
			(SELECT clock_timestamp() - min(created_at) FROM reliable_outbox WHERE dead_at IS NULL),
			(SELECT count(*) FROM reliable_outbox WHERE dead_at IS NOT NULL),
			(SELECT count(*) FROM reliable_outbox_leases WHERE expires_at > now()),
			(SELECT count(DISTINCT owner) FROM reliable_outbox_leases WHERE expires_at > now())`).
		Scan(&s.Pending, &oldest, &s.Dead, &s.LeasedKeys, &s.Relays)
	if err != nil {
		return Status{}, fmt.Errorf("outbox: status: %w", err)
	}
	if oldest != nil {
		s.OldestPending = *oldest
	}
	return s, nil
}

// Row is an outbox row as operators see it.
type Row struct {
	ID        int64
	Message   *reliable.Message
	CreatedAt time.Time
	Attempts  int
	LastError string
	// DeadAt is when the row became dead; zero for a pending row.
	DeadAt time.Time
}

// DeadRows lists up to limit dead rows, oldest first.
func DeadRows(ctx context.Context, db DB, limit int) ([]Row, error) {
	rows, err := db.Query(ctx, `SELECT id, msg_id, topic, key, type, headers, payload, event_time, created_at,
			attempts, coalesce(last_error, ''), dead_at
		FROM reliable_outbox WHERE dead_at IS NOT NULL ORDER BY id LIMIT $1`, limit)
	if err != nil {
		return nil, fmt.Errorf("outbox: dead rows: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(rs pgx.CollectableRow) (Row, error) {
		r := Row{Message: newMessage()}
		m := r.Message
		err := rs.Scan(&r.ID, &m.ID, &m.Topic, &m.Key, &m.Type, &m.Headers, &m.Payload, &m.Time,
			&r.CreatedAt, &r.Attempts, &r.LastError, &r.DeadAt)
		decodeStored(m)
		return r, err
	})
	if err != nil {
		return nil, fmt.Errorf("outbox: dead rows: %w", err)
	}
	return out, nil
}

// Retry makes a dead row pending again with a fresh attempt count; its key
// resumes with it, in order. (Under Config.ReleaseOnDead the key's later
// rows did not wait, so the retried row is published after them.)
func Retry(ctx context.Context, db DB, id int64) error {
	tag, err := db.Exec(ctx, `WITH r AS (
			UPDATE reliable_outbox SET dead_at = NULL, attempts = 0 WHERE id = $1 AND dead_at IS NOT NULL RETURNING id
		) SELECT pg_notify($2, current_schema()) FROM r`, id, NotifyChannel)
	if err != nil {
		return fmt.Errorf("outbox: retry row %d: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		return deadCheck(ctx, db, id)
	}
	return nil
}

// Discard gives up on a dead row: it is moved to the archive, marked
// discarded, and its key resumes with the next row. The message is never
// published.
func Discard(ctx context.Context, db DB, id int64) error {
	tag, err := db.Exec(ctx, `WITH d AS (
			DELETE FROM reliable_outbox WHERE id = $1 AND dead_at IS NOT NULL
			RETURNING id, lane, msg_id, topic, key, type, headers, payload, event_time, created_at, attempts, last_error
		), a AS (
			INSERT INTO reliable_outbox_archive (id, lane, msg_id, topic, key, type, headers, payload, event_time, created_at, attempts, last_error, discarded)
			SELECT *, true FROM d ON CONFLICT (id) DO NOTHING
		) SELECT pg_notify($2, current_schema()) FROM d`, id, NotifyChannel)
	if err != nil {
		return fmt.Errorf("outbox: discard row %d: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		return deadCheck(ctx, db, id)
	}
	return nil
}

func deadCheck(ctx context.Context, db DB, id int64) error {
	var exists bool
	if err := db.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM reliable_outbox WHERE id = $1)`, id).Scan(&exists); err != nil {
		return fmt.Errorf("outbox: row %d: %w", id, err)
	}
	if exists {
		return fmt.Errorf("row %d: %w", id, ErrNotDead)
	}
	return fmt.Errorf("row %d: %w", id, ErrNotFound)
}
