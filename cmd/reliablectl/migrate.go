package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"

	"github.com/reliable-go/reliable/idempotency"
	"github.com/reliable-go/reliable/outbox"
	"github.com/reliable-go/reliable/retry"
)

// The SQL components migrate knows, in the order it applies them.
var migrateComponents = []string{"outbox", "retry", "dedupe"}

// migrationSQL is one plain-SQL migration of a component.
type migrationSQL struct {
	Component string `json:"component"`
	Version   int    `json:"version"`
	Name      string `json:"name"`
	SQL       string `json:"sql,omitempty"`
}

// migrateStep is one component's result.
type migrateStep struct {
	Component  string `json:"component"`
	Table      string `json:"table"`
	Migrations int    `json:"migrations"`
	Status     string `json:"status"`
}

func migrateCmd(a *app) *cobra.Command {
	f := a.newFlags("migrate", "[--only outbox,retry,dedupe] [--schema S] [--print] [flags]", `
Creates or upgrades the SDK's PostgreSQL tables: the outbox (outbox.Migrate),
the retry table (retry.Migrate) and the dedupe table (idempotency.Migrate),
in --schema or the search_path. Each migration runs once, in a transaction,
under an advisory lock, and is recorded, so migrate is safe to run again and
from several places at once; services built with the SDK run the same
migrations through the same functions.

With --print nothing connects: the plain SQL of every migration is written
to stdout, for a migration tool of your own (goose, tern, atlas, flyway; see
docs/migrations.md). Every statement may run again on tables it already
upgraded.`)
	var p pgFlags
	p.register(f, "schema of the tables (default: the search_path)")
	var only listFlag
	f.Var(&only, "only", "only these components: outbox, retry, dedupe (repeatable, or comma-separated)")
	retryTable := f.String("retry-table", retry.DefaultTable, "the retry table's name (TableConfig.Table)")
	dedupeTable := f.String("dedupe-table", idempotency.DefaultTable, "the dedupe table's name (PostgresConfig.Table)")
	printSQL := f.Bool("print", false, "write the plain SQL instead of applying it")
	return f.runE(func(ctx context.Context) error {
		components := migrateComponents
		if len(only) > 0 {
			for _, c := range only {
				if !slices.Contains(migrateComponents, c) {
					return usagef("--only %q is not one of %s", c, strings.Join(migrateComponents, ", "))
				}
			}
			components = slices.DeleteFunc(slices.Clone(migrateComponents), func(c string) bool { return !slices.Contains(only, c) })
		}
		retryCfg := retry.TableConfig{Schema: p.schema, Table: *retryTable}
		dedupeCfg := idempotency.PostgresConfig{Schema: p.schema, Table: *dedupeTable}
		var migs []migrationSQL
		for _, c := range components {
			ms, err := componentMigrations(c, retryCfg, dedupeCfg)
			if err != nil {
				return usagef("%v", err)
			}
			migs = append(migs, ms...)
		}
		if *printSQL {
			if p.schema != "" && slices.Contains(components, "outbox") {
				// The outbox's tables live in the connection's current schema.
				migs = append([]migrationSQL{{Component: "outbox", Name: "search_path",
					SQL: "SET search_path TO " + quoteIdent(p.schema) + ";"}}, migs...)
			}
			return a.emit(f, migs, func(w io.Writer) {
				for _, m := range migs {
					fmt.Fprintf(w, "-- reliable %s %s\n%s\n\n", m.Component, m.Name, strings.TrimSpace(m.SQL))
				}
			})
		}

		return f.withPostgres(ctx, &p, func(ctx context.Context, pool *pgxpool.Pool) error {
			var steps []migrateStep
			for _, c := range components {
				var err error
				step := migrateStep{Component: c}
				switch c {
				case "outbox":
					step.Table, err = "reliable_outbox", outbox.Migrate(ctx, pool)
				case "retry":
					step.Table, err = *retryTable, retry.Migrate(ctx, pool, retryCfg)
				case "dedupe":
					step.Table, err = *dedupeTable, idempotency.Migrate(ctx, pool, dedupeCfg)
				}
				if err != nil {
					return fmt.Errorf("migrate %s (after %d of %d components): %w", c, len(steps), len(components), err)
				}
				for _, m := range migs {
					if m.Component == c {
						step.Migrations++
					}
				}
				step.Status = "up to date"
				steps = append(steps, step)
			}
			return a.emit(f, steps, func(w io.Writer) {
				row(w, "COMPONENT", "TABLE", "MIGRATIONS", "STATUS")
				for _, s := range steps {
					row(w, s.Component, s.Table, s.Migrations, s.Status)
				}
			})
		})
	})
}

// componentMigrations returns a component's migrations as plain SQL.
func componentMigrations(c string, retryCfg retry.TableConfig, dedupeCfg idempotency.PostgresConfig) ([]migrationSQL, error) {
	var out []migrationSQL
	switch c {
	case "outbox":
		ms, err := outbox.Migrations()
		if err != nil {
			return nil, err
		}
		for _, m := range ms {
			out = append(out, migrationSQL{Component: c, Version: m.Version, Name: m.Name, SQL: m.SQL})
		}
	case "retry":
		ms, err := retry.Migrations(retryCfg)
		if err != nil {
			return nil, err
		}
		for _, m := range ms {
			out = append(out, migrationSQL{Component: c, Version: m.Version, Name: m.Name, SQL: m.SQL})
		}
	case "dedupe":
		ms, err := idempotency.Migrations(dedupeCfg)
		if err != nil {
			return nil, err
		}
		for _, m := range ms {
			out = append(out, migrationSQL{Component: c, Version: m.Version, Name: m.Name, SQL: m.SQL})
		}
	}
	return out, nil
}

// quoteIdent quotes a PostgreSQL identifier.
func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }
