package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/idempotency"
	"github.com/reliable-go/reliable/internal/testenv"
	"github.com/reliable-go/reliable/retry"
)

// usable checks that the SDK works on the tables in schema without
// migrating them itself: an outbox row, a parked retry entry, a dedupe
// claim.
func usable(t *testing.T, pool *pgxpool.Pool, schema string) {
	t.Helper()
	ctx := testenv.Context(t, 30*time.Second)
	addOutbox(t, pool, &reliable.Message{Topic: "orders", Key: "o-1", Payload: []byte("{}")})
	table, err := retry.NewTable(pool, retry.TableConfig{Group: "kitchen", Schema: schema, Logger: quietLog})
	if err != nil {
		t.Fatal(err)
	}
	m := &reliable.Message{ID: reliable.NewID(), Topic: "orders", Key: "o-1", Payload: []byte("{}")}
	m.Delivery.Attempt = 1
	if err := table.Park(ctx, m, nil); err != nil {
		t.Fatalf("retry table after migrate: %v", err)
	}
	store, err := idempotency.NewPostgres(pool, idempotency.PostgresConfig{Namespace: "kitchen", Schema: schema, CleanupInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	if st, err := store.Begin(ctx, "m-1"); err != nil || st != idempotency.StatusNew {
		t.Fatalf("dedupe table after migrate: %v %v", st, err)
	}
}

// reliablectl migrate applies every SQL migration of the outbox, the retry
// table and the dedupe table (issue 16), again without harm; --print writes
// the same migrations as plain SQL that a tool of one's own can run (here:
// executed as printed, then migrate on top of it still works).
func TestMigrate(t *testing.T) {
	dsn, schema, pool := pgSchema(t)
	env := map[string]string{envPostgresDSN: dsn}
	r := cli(t, env, "migrate", "--schema", schema, "-o", "json")
	r.expect(t, exitOK, "")
	var steps []migrateStep
	r.decode(t, &steps)
	if len(steps) != 3 || steps[0].Component != "outbox" || steps[0].Migrations == 0 || steps[2].Table != "reliable_idempotency" {
		t.Fatalf("steps %+v", steps)
	}
	cli(t, env, "migrate", "--schema", schema).expect(t, exitOK, "") // again
	usable(t, pool, schema)

	// --print, run as printed in another schema.
	r = cli(t, nil, "migrate", "--print", "--schema", "printed_placeholder")
	r.expect(t, exitOK, "")
	for _, want := range []string{"-- reliable outbox 001_", "-- reliable retry 001_", "-- reliable dedupe 001_", `"printed_placeholder"`} {
		if !strings.Contains(r.stdout, want) {
			t.Fatalf("--print does not contain %q:\n%s", want, r.stdout)
		}
	}
	if strings.Contains(r.stdout, "{{") {
		t.Fatalf("--print left a template in the SQL")
	}
	_, schema2, pool2 := pgSchema(t)
	sql := strings.ReplaceAll(r.stdout, "printed_placeholder", schema2)
	ctx := testenv.Context(t, 30*time.Second)
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.PgConn().Exec(ctx, sql).ReadAll(); err != nil {
		t.Fatalf("the printed SQL does not run: %v", err)
	}
	usable(t, pool2, schema2)
	cli(t, env, "migrate", "--schema", schema2).expect(t, exitOK, "")

	cli(t, env, "migrate", "--only", "outbox,queue").expect(t, exitUsage, `--only "queue"`)
	r = cli(t, nil, "migrate", "--print", "--only", "dedupe", "--dedupe-table", "my_dedupe")
	r.expect(t, exitOK, "")
	if strings.Contains(r.stdout, "reliable outbox") || !strings.Contains(r.stdout, "my_dedupe") {
		t.Fatalf("--only dedupe --dedupe-table my_dedupe:\n%s", r.stdout)
	}
}
