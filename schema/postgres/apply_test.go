package postgres_test

import (
	"context"
	"io/fs"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/reliable-go/reliable/idempotency"
	"github.com/reliable-go/reliable/internal/pgmigrate/pgtest"
	"github.com/reliable-go/reliable/outbox"
	"github.com/reliable-go/reliable/retry"
	"github.com/reliable-go/reliable/schema/postgres"
)

// histories matches the SDK runner's history tables.
const histories = `_migrations$`

// applyFiles runs every file matching pattern in name order, each in a
// transaction of its own, as goose, tern and flyway do.
func applyFiles(ctx context.Context, t *testing.T, pool *pgxpool.Pool, pattern string) int {
	t.Helper()
	names, err := fs.Glob(postgres.FS, pattern)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		b, err := fs.ReadFile(postgres.FS, n)
		if err != nil {
			t.Fatal(err)
		}
		if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, string(b))
			return err
		}); err != nil {
			t.Fatalf("%s: %v", n, err)
		}
	}
	return len(names)
}

// migrateSDK runs the three packages' own Migrate functions for the default
// names.
func migrateSDK(ctx context.Context, t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	if err := outbox.Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	if err := retry.Migrate(ctx, pool, retry.TableConfig{}); err != nil {
		t.Fatal(err)
	}
	if err := idempotency.Migrate(ctx, pool, idempotency.PostgresConfig{}); err != nil {
		t.Fatal(err)
	}
}

// The committed files, applied in name order to an empty schema as a
// migration tool would, build the same tables, columns, constraints and
// indexes as the SDK's Migrate functions; the flyway copies build the same
// again. Running the files a second time, or over a schema the SDK
// migrated (a team switching to its own tool), changes nothing.
func TestFilesBuildTheSDKSchema(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	sdkSchema, sdk := pgtest.Schema(t, 2)
	migrateSDK(ctx, t, sdk)
	want, err := pgtest.Describe(ctx, sdk, sdkSchema, histories)
	if err != nil {
		t.Fatal(err)
	}
	if len(want) < 1000 {
		t.Fatalf("the SDK's schema describes in %d bytes; the description query is broken:\n%s", len(want), want)
	}

	for _, pattern := range []string{"*.sql", "flyway/*.sql"} {
		schema, pool := pgtest.Schema(t, 2)
		if n := applyFiles(ctx, t, pool, pattern); n != len(sequence) {
			t.Fatalf("%s: %d files, want %d", pattern, n, len(sequence))
		}
		got, err := pgtest.Describe(ctx, pool, schema, histories)
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Fatalf("%s built another schema than the SDK's Migrate.\nfiles:\n%s\n\nSDK:\n%s", pattern, got, want)
		}
		applyFiles(ctx, t, pool, pattern)
		if again, _ := pgtest.Describe(ctx, pool, schema, histories); again != want {
			t.Fatalf("%s applied twice changed the schema:\n%s", pattern, again)
		}
	}

	applyFiles(ctx, t, sdk, "*.sql")
	if got, _ := pgtest.Describe(ctx, sdk, sdkSchema, histories); got != want {
		t.Fatalf("the files applied over the SDK's migrations changed the schema:\n%s", got)
	}
	migrateSDK(ctx, t, sdk)
}
