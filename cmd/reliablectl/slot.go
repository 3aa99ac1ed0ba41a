package main

import (
	"context"
	"fmt"
	"io"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"

	"github.com/reliable-go/reliable/outbox"
)

// slotFlags select the log-reading relay's replication slot.
type slotFlags struct {
	pg   pgFlags
	name string
}

func (s *slotFlags) register(f *flags) {
	s.pg.register(f, outboxSchemaHelp)
	f.StringVar(&s.name, "slot", outbox.DefaultSlot, "replication slot and publication name (outbox Config.Slot)")
}

func slotStatus(a *app) *cobra.Command {
	f := a.newFlags("outbox slot status", "[--slot NAME] [flags]", `
Shows the logical replication slot that an outbox relay in ModeLog reads
(outbox.SlotStatus): whether it and its publication exist, whether a relay
streams from it now, its WAL status, how much WAL it retains and how much the
relay has not confirmed yet, and how much more WAL may be written before
max_slot_wal_keep_size invalidates it. Exits 1 when the slot is missing or
was invalidated (wal_status lost): the relay then polls the table, and the
slot must be created again.`)
	var s slotFlags
	s.register(f)
	return f.runE(func(ctx context.Context) error {
		return f.withPostgres(ctx, &s.pg, func(ctx context.Context, pool *pgxpool.Pool) error {
			info, err := outbox.SlotStatus(ctx, pool, s.name)
			if err != nil {
				return err
			}
			err = a.emit(f, info, func(w io.Writer) {
				row(w, "slot", info.Name)
				row(w, "exists", info.Exists)
				row(w, "publication", info.Publication)
				if info.Exists {
					row(w, "plugin", info.Plugin)
					active := fmt.Sprint(info.Active)
					if info.Active {
						active += fmt.Sprintf(" (walsender pid %d)", info.ActivePID)
					}
					row(w, "active", active)
					row(w, "wal status", info.WALStatus)
					row(w, "restart lsn", info.RestartLSN)
					row(w, "confirmed lsn", info.ConfirmedFlushLSN)
					row(w, "current lsn", info.CurrentLSN)
					row(w, "retained WAL", bytesText(info.RetainedBytes))
					row(w, "unconfirmed WAL", bytesText(info.LagBytes))
					safe := "unlimited"
					if info.SafeWALBytes >= 0 {
						safe = bytesText(info.SafeWALBytes)
					}
					row(w, "WAL until invalidated", safe)
					row(w, "failover", info.Failover)
				}
			})
			if err != nil {
				return err
			}
			switch {
			case !info.Exists:
				return &findingsError{msg: fmt.Sprintf("slot %s does not exist: relays in ModeLog poll the table; create it with 'reliablectl outbox slot create'", info.Name)}
			case !info.Healthy():
				return &findingsError{msg: fmt.Sprintf("slot %s was invalidated (wal_status %s): drop and create it again; nothing is lost, the table holds every pending row", info.Name, info.WALStatus)}
			}
			return nil
		})
	})
}

func slotCreate(a *app) *cobra.Command {
	f := a.newFlags("outbox slot create", "[--slot NAME] [flags]", `
Creates the publication of the outbox table's inserts and the logical
replication slot (pgoutput) that a relay in ModeLog reads (outbox.CreateSlot);
what exists is kept. The role needs REPLICATION and must own the outbox
table; the server needs wal_level=logical. A slot keeps WAL until a relay
confirms it: watch 'reliablectl outbox slot status', and drop a slot no relay
reads any more.`)
	var s slotFlags
	s.register(f)
	return f.runE(func(ctx context.Context) error {
		return f.withPostgres(ctx, &s.pg, func(ctx context.Context, pool *pgxpool.Pool) error {
			if err := outbox.CreateSlot(ctx, pool, s.name); err != nil {
				return missingTable(err, "outbox table", s.pg.schema)
			}
			return a.emit(f, map[string]any{"slot": s.name, "action": "create", "ok": true}, func(w io.Writer) {
				fmt.Fprintf(w, "slot and publication %s exist\n", s.name)
			})
		})
	})
}

func slotDrop(a *app) *cobra.Command {
	f := a.newFlags("outbox slot drop", "[--slot NAME] [flags]", `
Drops the replication slot and its publication (outbox.DropSlot), releasing
the WAL the slot retains. Nothing is lost: the outbox table holds every
pending row, and relays in ModeLog poll it until a slot exists again. It
fails while a relay streams from the slot.`)
	var s slotFlags
	s.register(f)
	return f.runE(func(ctx context.Context) error {
		return f.withPostgres(ctx, &s.pg, func(ctx context.Context, pool *pgxpool.Pool) error {
			if err := outbox.DropSlot(ctx, pool, s.name); err != nil {
				return fmt.Errorf("%w (a relay streams from it? stop it first)", err)
			}
			return a.emit(f, map[string]any{"slot": s.name, "action": "drop", "ok": true}, func(w io.Writer) {
				fmt.Fprintf(w, "slot and publication %s dropped\n", s.name)
			})
		})
	})
}

// bytesText formats a byte count for tables.
func bytesText(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB (%d bytes)", float64(n)/float64(div), "KMGTPE"[exp], n)
}
