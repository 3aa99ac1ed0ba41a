// Package postgres holds the SDK's PostgreSQL schema as plain SQL migration
// files, for teams that run migrations with their own tool rather than
// outbox.Migrate, retry.Migrate and idempotency.Migrate.
//
// The files are generated from the embedded migrations of the outbox, retry
// and idempotency packages for their default table names, in the first
// schema of the search_path:
//
//	NNN_component_name.sql          goose, tern, atlas (goose format), plain psql
//	flyway/VN__component_name.sql   flyway
//
// NNN numbers the migrations of the three components in one sequence that
// only ever grows at the end, so a tool that applied 001 to 008 applies a
// new 009 next whichever component it belongs to. Each file starts with the
// annotation goose needs ("-- +goose Up"), a comment to every other tool,
// and each may run again on a schema it already upgraded. For other table
// names or a schema, render the SQL with outbox.Migrations,
// retry.Migrations and idempotency.Migrations instead. docs/migrations.md
// says how to run them with each tool.
//
// The flyway copies are the same bytes under Flyway's file names: Flyway
// finds migrations by name on disk, so they are committed for teams to
// copy as they are, not produced by a step of their own.
//
// A test fails when the files drift from the packages' migrations; go
// generate (or go test -run TestFilesMatchMigrations -update) rewrites them.
package postgres

import "embed"

//go:generate go test -run TestFilesMatchMigrations -update .

// FS holds the migration files: NNN_component_name.sql at its root (hand
// it to goose.NewProvider or tern's Migrator.LoadMigrations) and the flyway
// copies under flyway/.
//
//go:embed *.sql flyway/*.sql
var FS embed.FS
