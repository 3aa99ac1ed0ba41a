package outbox

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// DefaultSlot is the replication slot (and publication) name a relay in
// ModeLog uses when Config.Slot is empty.
const DefaultSlot = "reliable_outbox"

// ErrSlotMissing means the replication slot does not exist.
var ErrSlotMissing = errors.New("outbox: replication slot does not exist")

// SlotInfo describes the relay's logical replication slot, for operators
// and metrics. Sizes are in bytes of WAL.
type SlotInfo struct {
	// Name is the slot's name; Exists says whether it exists at all.
	Name   string
	Exists bool
	// Plugin is the output plugin (pgoutput).
	Plugin string
	// Active says a walsender streams from the slot now, for the process
	// ActivePID (the active relay's walsender).
	Active    bool
	ActivePID int
	// WALStatus is pg_replication_slots.wal_status: reserved, extended,
	// unreserved, or lost (the slot was invalidated: max_slot_wal_keep_size
	// removed WAL it needed; it must be dropped and created again).
	WALStatus string
	// RestartLSN and ConfirmedFlushLSN are the slot's positions;
	// CurrentLSN is the server's current WAL insert position.
	RestartLSN, ConfirmedFlushLSN, CurrentLSN string
	// RetainedBytes is the WAL the slot keeps from being recycled
	// (current - restart_lsn); LagBytes is the WAL not yet confirmed by the
	// relay (current - confirmed_flush_lsn).
	RetainedBytes, LagBytes int64
	// SafeWALBytes is how much more WAL may be written before the slot is
	// invalidated by max_slot_wal_keep_size, or -1 when unlimited.
	SafeWALBytes int64
	// Failover is PostgreSQL 17's failover flag (the slot is synchronized
	// to standbys); false on older servers.
	Failover bool
	// Publication says whether the publication named like the slot exists.
	Publication bool
}

// Healthy says whether a relay can read from the slot: it exists and was
// not invalidated.
func (s SlotInfo) Healthy() bool { return s.Exists && s.WALStatus != "lost" }

// SlotStatus reads the state of the named slot (DefaultSlot when name is
// empty). A missing slot is reported with Exists false, not an error.
func SlotStatus(ctx context.Context, db DB, name string) (SlotInfo, error) {
	if name == "" {
		name = DefaultSlot
	}
	s := SlotInfo{Name: name, SafeWALBytes: -1}
	// to_jsonb reads failover, a PostgreSQL 17 column, without failing on
	// older servers.
	var safe *int64
	var restart, confirmed *string
	err := db.QueryRow(ctx, `SELECT s.plugin, s.active, coalesce(s.active_pid, 0), coalesce(s.wal_status, ''),
			s.restart_lsn::text, s.confirmed_flush_lsn::text, pg_current_wal_lsn()::text,
			coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), s.restart_lsn), 0)::bigint,
			coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), s.confirmed_flush_lsn), 0)::bigint,
			s.safe_wal_size, coalesce((to_jsonb(s)->>'failover')::boolean, false),
			EXISTS (SELECT 1 FROM pg_publication p WHERE p.pubname = s.slot_name)
		FROM pg_replication_slots s WHERE s.slot_name = $1 AND s.database = current_database()`, name).Scan(
		&s.Plugin, &s.Active, &s.ActivePID, &s.WALStatus, &restart, &confirmed, &s.CurrentLSN,
		&s.RetainedBytes, &s.LagBytes, &safe, &s.Failover, &s.Publication)
	if errors.Is(err, pgx.ErrNoRows) {
		err = db.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1), pg_current_wal_lsn()::text`, name).
			Scan(&s.Publication, &s.CurrentLSN)
		return s, err
	}
	if err != nil {
		return s, fmt.Errorf("outbox: reading slot %s: %w", name, err)
	}
	s.Exists = true
	if restart != nil {
		s.RestartLSN = *restart
	}
	if confirmed != nil {
		s.ConfirmedFlushLSN = *confirmed
	}
	if safe != nil {
		s.SafeWALBytes = *safe
	}
	return s, nil
}

// CreateSlot creates the publication of the outbox table's inserts (in the
// connection's current schema) and the logical replication slot (pgoutput)
// that a relay in ModeLog reads, both named name (DefaultSlot when empty).
// What exists already is kept. The role needs the REPLICATION attribute (or
// rds_replication and the like on managed services) and must own the outbox
// table. The slot starts at the current WAL position: rows pending before
// it are relayed by the relay's polling, which keeps running beside the log.
func CreateSlot(ctx context.Context, db DB, name string) error {
	if name == "" {
		name = DefaultSlot
	}
	var pub bool
	if err := db.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)`, name).Scan(&pub); err != nil {
		return fmt.Errorf("outbox: creating slot %s: %w", name, err)
	}
	if !pub {
		_, err := db.Exec(ctx, `CREATE PUBLICATION `+pgx.Identifier{name}.Sanitize()+
			` FOR TABLE reliable_outbox WITH (publish = 'insert')`)
		if pe := (*pgconn.PgError)(nil); errors.As(err, &pe) && pe.Code == "42710" {
			err = nil // created meanwhile by another relay
		}
		if err != nil {
			return fmt.Errorf("outbox: creating publication %s: %w", name, err)
		}
	}
	_, err := db.Exec(ctx, `SELECT pg_create_logical_replication_slot($1, 'pgoutput')
		WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)`, name)
	if pe := (*pgconn.PgError)(nil); errors.As(err, &pe) && pe.Code == "42710" {
		err = nil // created meanwhile by another relay
	}
	if err != nil {
		return fmt.Errorf("outbox: creating replication slot %s (wal_level=logical and a role with REPLICATION are needed): %w", name, err)
	}
	return nil
}

// DropSlot drops the replication slot and its publication (DefaultSlot
// when name is empty); what is missing is ignored. Nothing is lost: the
// outbox table holds every pending row, and a relay in ModeLog falls back
// to polling until a slot exists again. It fails while a relay streams
// from the slot (stop it, or wait for its fallback).
func DropSlot(ctx context.Context, db DB, name string) error {
	if name == "" {
		name = DefaultSlot
	}
	if _, err := db.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
		WHERE slot_name = $1 AND database = current_database()`, name); err != nil {
		return fmt.Errorf("outbox: dropping replication slot %s: %w", name, err)
	}
	if _, err := db.Exec(ctx, `DROP PUBLICATION IF EXISTS `+pgx.Identifier{name}.Sanitize()); err != nil {
		return fmt.Errorf("outbox: dropping publication %s: %w", name, err)
	}
	return nil
}
