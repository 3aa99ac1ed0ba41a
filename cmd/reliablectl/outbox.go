package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"

	"github.com/reliable-go/reliable/outbox"
)

const outboxSchemaHelp = "schema of the outbox tables (default: the connection's search_path)"

// outboxReport is the output of outbox status.
type outboxReport struct {
	Pending              int64         `json:"pending"`
	OldestPendingSeconds float64       `json:"oldest_pending_seconds"`
	Dead                 int64         `json:"dead"`
	LeasedKeys           int64         `json:"leased_keys"`
	Relays               int64         `json:"relays"`
	DeadRows             []deadRowView `json:"dead_rows"`
}

// deadRowView is a dead outbox row without its payload and header values.
type deadRowView struct {
	ID        int64     `json:"id"`
	MessageID string    `json:"message_id"`
	Topic     string    `json:"topic"`
	Key       string    `json:"key"`
	KeyHex    string    `json:"key_hex,omitempty"` // when the key is not printable UTF-8
	Type      string    `json:"type"`
	Attempts  int       `json:"attempts"`
	CreatedAt time.Time `json:"created_at"`
	DeadAt    time.Time `json:"dead_at"`
	LastError string    `json:"last_error"`
}

func outboxStatus(a *app) *cobra.Command {
	f := a.newFlags("outbox status", "[flags]", `
Shows the outbox's pending rows, the age of the oldest one (alert on it, L18),
dead rows and live relays, then lists the dead rows: each blocks its key until
'reliablectl outbox retry' or 'discard'.`)
	var p pgFlags
	p.register(f, outboxSchemaHelp)
	f.keyFormatFlag()
	limit := f.Int("limit", defaultLimit, "list at most this many dead rows")
	return f.runE(func(ctx context.Context) error {
		if *limit < 0 {
			return usagef("--limit must not be negative")
		}
		return f.withPostgres(ctx, &p, func(ctx context.Context, pool *pgxpool.Pool) error {
			st, err := outbox.ReadStatus(ctx, pool)
			if err != nil {
				return missingTable(err, "outbox tables", p.schema)
			}
			r := outboxReport{Pending: st.Pending, OldestPendingSeconds: st.OldestPending.Seconds(), Dead: st.Dead,
				LeasedKeys: st.LeasedKeys, Relays: st.Relays, DeadRows: []deadRowView{}}
			if st.Dead > 0 && *limit > 0 {
				rows, err := outbox.DeadRows(ctx, pool, *limit)
				if err != nil {
					return err
				}
				for _, row := range rows {
					r.DeadRows = append(r.DeadRows, deadRowView{ID: row.ID, MessageID: row.Message.ID, Topic: row.Message.Topic,
						Key: a.showKey(row.Message.Key), KeyHex: keyHexOf(row.Message.Key), Type: row.Message.Type, Attempts: row.Attempts, CreatedAt: row.CreatedAt,
						DeadAt: row.DeadAt, LastError: row.LastError})
				}
			}
			return a.emit(f, r, func(w io.Writer) {
				row(w, "PENDING", "OLDEST PENDING", "DEAD", "LEASED KEYS", "RELAYS")
				row(w, r.Pending, age(st.OldestPending), r.Dead, r.LeasedKeys, r.Relays)
				if len(r.DeadRows) > 0 {
					fmt.Fprintln(w)
					row(w, "ID", "TOPIC", "KEY", "TYPE", "ATTEMPTS", "DEAD SINCE", "LAST ERROR")
					for _, d := range r.DeadRows {
						row(w, d.ID, d.Topic, d.Key, d.Type, d.Attempts, when(d.DeadAt), clip(d.LastError, 80))
					}
				}
			})
		})
	})
}

func outboxRetry(a *app) *cobra.Command {
	return outboxAct(a, "retry", `
Makes a dead outbox row pending again with a fresh attempt count; its key
resumes with it, in order.`, outbox.Retry, "is pending again; its key resumes with it")
}

func outboxDiscard(a *app) *cobra.Command {
	return outboxAct(a, "discard", `
Gives up on a dead outbox row: it is archived as discarded and never
published, and its key resumes with the next row. Consumers never see that
message: make sure that is right (the order may need a compensating event).`, outbox.Discard, "is discarded; its key resumes with the next row")
}

func outboxAct(a *app, name, help string, act func(context.Context, outbox.DB, int64) error, done string) *cobra.Command {
	f := a.newFlags("outbox "+name, "--id ROW [flags]", help)
	var p pgFlags
	p.register(f, outboxSchemaHelp)
	id := f.Int64("id", 0, "ID of the dead row (see 'reliablectl outbox status')")
	return f.runE(func(ctx context.Context) error {
		if *id <= 0 {
			return usagef("--id is required")
		}
		return f.withPostgres(ctx, &p, func(ctx context.Context, pool *pgxpool.Pool) error {
			err := act(ctx, pool, *id)
			switch {
			case errors.Is(err, outbox.ErrNotFound):
				return fmt.Errorf("no outbox row %d", *id)
			case errors.Is(err, outbox.ErrNotDead):
				return fmt.Errorf("outbox row %d is not dead: only dead rows can be retried or discarded", *id)
			case err != nil:
				return missingTable(err, "outbox tables", p.schema)
			}
			return a.emit(f, map[string]any{"id": *id, "action": name, "ok": true}, func(w io.Writer) {
				fmt.Fprintf(w, "outbox row %d %s\n", *id, done)
			})
		})
	})
}
