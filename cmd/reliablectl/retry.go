package main

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"

	"github.com/reliable-go/reliable/retry"
)

// retryFlags select a retry table and group.
type retryFlags struct {
	pg    pgFlags
	group string
	table string
}

func (r *retryFlags) register(f *flags) {
	r.pg.register(f, "schema of the retry table (default: the connection's search_path)")
	f.StringVar(&r.group, "group", "", "retry-table group: the consumer group whose entries to use")
	f.StringVar(&r.table, "table", retry.DefaultTable, "name of the retry table")
}

// runE sets the work of a retry command and returns the command: after the
// common checks, --group is required and check (if not nil) must pass; then
// work runs on the group's table within --timeout, and the pool is closed
// after.
func (r *retryFlags) runE(f *flags, check func() error, work func(context.Context, *retry.Table) error) *cobra.Command {
	return f.runE(func(ctx context.Context) error {
		if err := f.required(map[string]string{"group": r.group}); err != nil {
			return err
		}
		if check != nil {
			if err := check(); err != nil {
				return err
			}
		}
		return f.withPostgres(ctx, &r.pg, func(ctx context.Context, pool *pgxpool.Pool) error {
			t, err := retry.NewTable(pool, retry.TableConfig{Group: r.group, Schema: r.pg.schema, Table: r.table})
			if err != nil {
				return usagef("%v", err)
			}
			return work(ctx, t)
		})
	})
}

// tableError adds a hint to an error of a table that does not exist.
func (r *retryFlags) tableError(err error) error {
	return missingTable(err, "retry table "+r.table, r.pg.schema)
}

// entryView is a retry entry without its payload and header values.
type entryView struct {
	ID            int64             `json:"id"`
	Key           string            `json:"key"`
	KeyHex        string            `json:"key_hex,omitempty"` // when the key is not printable UTF-8
	Topic         string            `json:"topic"`
	Type          string            `json:"type,omitempty"`
	MessageID     string            `json:"message_id"`
	State         retry.State       `json:"state"`
	Attempts      int               `json:"attempts"`
	NextAttemptAt *time.Time        `json:"next_attempt_at,omitempty"`
	LastError     string            `json:"last_error"`
	CreatedAt     time.Time         `json:"created_at"`
	UpdatedAt     time.Time         `json:"updated_at"`
	FinishedAt    *time.Time        `json:"finished_at,omitempty"`
	Headers       map[string]string `json:"headers,omitempty"`
	HeaderNames   []string          `json:"header_names,omitempty"`
	PayloadBytes  int               `json:"payload_bytes"`
	Payload       string            `json:"payload,omitempty"`
}

func (a *app) viewEntry(e retry.Entry, values bool) entryView {
	v := entryView{ID: e.ID, State: e.State, Attempts: e.Attempts, LastError: e.LastError,
		CreatedAt: e.CreatedAt, UpdatedAt: e.UpdatedAt}
	if !e.NextAttemptAt.IsZero() {
		v.NextAttemptAt = &e.NextAttemptAt
	}
	if !e.FinishedAt.IsZero() {
		v.FinishedAt = &e.FinishedAt
	}
	if m := e.Message; m != nil {
		v.Key, v.Topic, v.Type, v.MessageID, v.PayloadBytes = a.showKey(m.Key), m.Topic, m.Type, m.ID, len(m.Payload)
		v.KeyHex = keyHexOf(m.Key)
		for k := range m.Headers {
			v.HeaderNames = append(v.HeaderNames, k)
		}
		sort.Strings(v.HeaderNames)
		if values {
			v.Headers, v.Payload = m.Headers, string(m.Payload)
		}
	}
	return v
}

func retryList(a *app) *cobra.Command {
	f := a.newFlags("retry list", "--group GROUP [--key KEY] [--state STATE,...] [flags]", `
Lists a group's retry-table entries in replay order, with attempts, the next
attempt time and the last error. Pending and dead entries block their key
(L11).`)
	var r retryFlags
	r.register(f)
	f.keyFormatFlag()
	key := f.keyFlag("only this key's entries")
	var states listFlag
	f.Var(&states, "state", "only entries in these states: pending, dead, released, done, discarded (repeatable, or comma-separated)")
	limit := f.Int("limit", defaultLimit, "at most this many entries (max 1000)")
	after := f.Int64("after", 0, "only entries with a larger ID, for paging")
	var filter retry.ListFilter
	return r.runE(f, func() error {
		if *limit < 1 || *limit > 1000 {
			return usagef("--limit must be between 1 and 1000")
		}
		filter = retry.ListFilter{Key: *key, AfterID: *after, Limit: *limit}
		known := []retry.State{retry.StatePending, retry.StateDead, retry.StateReleased, retry.StateDone, retry.StateDiscarded}
		for _, s := range states {
			if !slices.Contains(known, retry.State(s)) {
				return usagef("--state %q is not one of pending, dead, released, done, discarded", s)
			}
			filter.States = append(filter.States, retry.State(s))
		}
		return nil
	}, func(ctx context.Context, t *retry.Table) error {
		entries, err := t.List(ctx, filter)
		if err != nil {
			return r.tableError(err)
		}
		views := make([]entryView, len(entries))
		for i, e := range entries {
			views[i] = a.viewEntry(e, false)
		}
		return a.emit(f, map[string]any{"group": r.group, "entries": views}, func(w io.Writer) {
			row(w, "ID", "KEY", "TOPIC", "STATE", "ATTEMPTS", "NEXT ATTEMPT", "LAST ERROR")
			for i, e := range entries {
				row(w, e.ID, views[i].Key, e.Message.Topic, e.State, e.Attempts, when(e.NextAttemptAt), clip(e.LastError, 80))
			}
			if len(entries) == 0 {
				fmt.Fprintln(w, "(no entries)")
			}
		})
	})
}

func retryShow(a *app) *cobra.Command {
	f := a.newFlags("retry show", "--group GROUP --id ENTRY [--values] [flags]", `
Shows one retry-table entry. Header values and the payload may hold personal
data: they are shown only with --values.`)
	var r retryFlags
	r.register(f)
	f.keyFormatFlag()
	id := f.Int64("id", 0, "entry ID (see 'reliablectl retry list')")
	values := f.Bool("values", false, "also show header values and the payload")
	return r.runE(f, func() error {
		if *id <= 0 {
			return usagef("--id is required")
		}
		return nil
	}, func(ctx context.Context, t *retry.Table) error {
		e, err := t.Get(ctx, *id)
		if errors.Is(err, retry.ErrNotFound) {
			return fmt.Errorf("no retry entry %d in group %q", *id, r.group)
		}
		if err != nil {
			return r.tableError(err)
		}
		v := a.viewEntry(e, *values)
		return a.emit(f, v, func(w io.Writer) {
			row(w, "id:", v.ID)
			row(w, "state:", v.State)
			row(w, "key:", v.Key)
			row(w, "topic:", v.Topic)
			row(w, "type:", v.Type)
			row(w, "message id:", v.MessageID)
			row(w, "attempts:", v.Attempts)
			row(w, "next attempt:", when(e.NextAttemptAt))
			row(w, "last error:", v.LastError)
			row(w, "created:", when(v.CreatedAt))
			row(w, "updated:", when(v.UpdatedAt))
			row(w, "finished:", when(e.FinishedAt))
			row(w, "headers:", strings.Join(v.HeaderNames, ", "))
			row(w, "payload:", fmt.Sprintf("%d bytes", v.PayloadBytes))
			if *values {
				for _, k := range v.HeaderNames {
					row(w, "  "+k+":", v.Headers[k])
				}
				row(w, "payload value:", v.Payload)
			}
		})
	})
}

func retryNow(a *app) *cobra.Command {
	f := a.newFlags("retry retry-now", "--group GROUP (--id ENTRY | --key KEY) [flags]", `
Makes an entry due now; a dead or released entry becomes pending again with a
fresh attempt budget, in its original position, so its key waits for it
again. With --key, every pending and dead entry of the key.`)
	var r retryFlags
	r.register(f)
	f.keyFormatFlag()
	id := f.Int64("id", 0, "entry ID")
	key := f.keyFlag("key whose pending and dead entries to retry")
	return r.runE(f, func() error {
		if (*id > 0) == (*key != "") {
			return usagef("give exactly one of --id and --key")
		}
		return nil
	}, func(ctx context.Context, t *retry.Table) error {
		if *id > 0 {
			err := t.RetryNow(ctx, *id)
			if errors.Is(err, retry.ErrNotFound) {
				return fmt.Errorf("no retry entry %d in group %q that can be retried", *id, r.group)
			}
			if err != nil {
				return r.tableError(err)
			}
			return a.emit(f, map[string]any{"id": *id, "action": "retry-now", "ok": true}, func(w io.Writer) {
				fmt.Fprintf(w, "retry entry %d is due now\n", *id)
			})
		}
		n, err := t.RetryKeyNow(ctx, *key)
		if err != nil {
			return r.tableError(err)
		}
		if n == 0 {
			return fmt.Errorf("key %q has no pending or dead entries in group %q", *key, r.group)
		}
		return a.emit(f, map[string]any{"key": a.showKey(*key), "key_hex": hex.EncodeToString([]byte(*key)), "action": "retry-now", "entries": n}, func(w io.Writer) {
			fmt.Fprintf(w, "%d entries of key %s are due now\n", n, a.showKey(*key))
		})
	})
}

func retryDiscard(a *app) *cobra.Command {
	f := a.newFlags("retry discard", "--group GROUP --id ENTRY [flags]", `
Drops a pending, dead or released entry: it no longer blocks its key and is
never replayed (kept as discarded for the retention). The handler never
applies that message: make sure that is right.`)
	var r retryFlags
	r.register(f)
	id := f.Int64("id", 0, "entry ID")
	return r.runE(f, func() error {
		if *id <= 0 {
			return usagef("--id is required")
		}
		return nil
	}, func(ctx context.Context, t *retry.Table) error {
		err := t.Discard(ctx, *id)
		if errors.Is(err, retry.ErrNotFound) {
			return fmt.Errorf("no retry entry %d in group %q that can be discarded", *id, r.group)
		}
		if err != nil {
			return r.tableError(err)
		}
		return a.emit(f, map[string]any{"id": *id, "action": "discard", "ok": true}, func(w io.Writer) {
			fmt.Fprintf(w, "retry entry %d is discarded\n", *id)
		})
	})
}

func retryRelease(a *app) *cobra.Command {
	f := a.newFlags("retry release", "--group GROUP --key KEY [flags]", `
Unblocks a key whose head entry is dead: its dead entries become released
(kept for inspection) and its later entries and messages flow again, so they
apply without the dead one.`)
	var r retryFlags
	r.register(f)
	f.keyFormatFlag()
	key := f.keyFlag("key to release")
	return r.runE(f, func() error { return f.required(map[string]string{"key": *key}) }, func(ctx context.Context, t *retry.Table) error {
		n, err := t.Release(ctx, *key)
		if err != nil {
			return r.tableError(err)
		}
		if n == 0 {
			return fmt.Errorf("key %q has no dead entries in group %q", *key, r.group)
		}
		return a.emit(f, map[string]any{"key": a.showKey(*key), "key_hex": hex.EncodeToString([]byte(*key)), "action": "release", "entries": n}, func(w io.Writer) {
			fmt.Fprintf(w, "released %d dead entries of key %s; its later entries flow again\n", n, a.showKey(*key))
		})
	})
}

// statsView is the output of retry stats.
type statsView struct {
	Group              string     `json:"group"`
	Pending            int64      `json:"pending"`
	Dead               int64      `json:"dead"`
	Released           int64      `json:"released"`
	BlockedKeys        int64      `json:"blocked_keys"`
	Due                int64      `json:"due"`
	OldestDue          *time.Time `json:"oldest_due,omitempty"`
	OldestDueOverdueS  float64    `json:"oldest_due_overdue_seconds"`
	OldestCreated      *time.Time `json:"oldest_created,omitempty"`
	OldestEntryAgeSecs float64    `json:"oldest_entry_age_seconds"`
}

func retryStats(a *app) *cobra.Command {
	f := a.newFlags("retry stats", "--group GROUP [flags]", `
Summarises a group's retry table, as its metrics do (L18): pending and dead
entries (both block their keys), blocked keys, entries due now and how long
the most overdue one has waited, and the oldest entry's age.`)
	var r retryFlags
	r.register(f)
	return r.runE(f, nil, func(ctx context.Context, t *retry.Table) error {
		s, err := t.Status(ctx)
		if err != nil {
			return r.tableError(err)
		}
		now := time.Now()
		v := statsView{Group: r.group, Pending: s.Pending, Dead: s.Dead, Released: s.Released, BlockedKeys: s.BlockedKeys, Due: s.Due}
		var overdue, oldest time.Duration
		if !s.OldestDue.IsZero() {
			v.OldestDue = &s.OldestDue
			overdue = max(now.Sub(s.OldestDue), 0)
			v.OldestDueOverdueS = overdue.Seconds()
		}
		if !s.OldestCreated.IsZero() {
			v.OldestCreated = &s.OldestCreated
			oldest = now.Sub(s.OldestCreated)
			v.OldestEntryAgeSecs = oldest.Seconds()
		}
		return a.emit(f, v, func(w io.Writer) {
			row(w, "PENDING", "DEAD", "RELEASED", "BLOCKED KEYS", "DUE", "OLDEST DUE OVERDUE", "OLDEST ENTRY")
			row(w, v.Pending, v.Dead, v.Released, v.BlockedKeys, v.Due, age(overdue), age(oldest))
		})
	})
}
