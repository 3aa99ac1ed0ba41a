package main

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/reliable-go/reliable/internal/testenv"
	"github.com/reliable-go/reliable/outbox"
)

// outbox slot status|create|drop manage the log-reading relay's replication
// slot and publication (outbox.SlotStatus, CreateSlot, DropSlot): status
// exits 1 while the slot is missing, create is idempotent, drop removes
// both.
func TestOutboxSlotCommands(t *testing.T) {
	dsn, schema, pool := pgSchema(t)
	ctx := testenv.Context(t, 60*time.Second)
	if err := outbox.Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	slot := testenv.UniqueName(t, "slot")
	// A leaked slot would keep WAL forever.
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cfg, _ := pgxpool.ParseConfig(dsn)
		cfg.ConnConfig.RuntimeParams["search_path"] = schema
		if p, err := pgxpool.NewWithConfig(ctx, cfg); err == nil {
			_ = outbox.DropSlot(ctx, p, slot)
			p.Close()
		}
	})
	env := map[string]string{envPostgresDSN: dsn}
	args := func(cmd string, extra ...string) []string {
		return append([]string{"outbox", "slot", cmd, "--schema", schema, "--slot", slot}, extra...)
	}
	status := func(code int, want string) outbox.SlotInfo {
		t.Helper()
		r := cli(t, env, args("status", "-o", "json")...)
		if r.code != code {
			t.Fatalf("status exit %d, want %d: %s", r.code, code, r.stderr)
		}
		if want != "" && !contains(r.stderr, want) {
			t.Fatalf("status says %q, want %q", r.stderr, want)
		}
		var info outbox.SlotInfo
		r.decode(t, &info)
		return info
	}

	if info := status(exitFailure, "does not exist"); info.Exists || info.Publication {
		t.Fatalf("before create: %+v", info)
	}
	cli(t, env, args("create")...).expect(t, exitOK, "")
	cli(t, env, args("create")...).expect(t, exitOK, "") // idempotent
	info := status(exitOK, "")
	if !info.Exists || !info.Publication || info.Plugin != "pgoutput" || info.Active || !info.Healthy() {
		t.Fatalf("after create: %+v", info)
	}
	cli(t, env, args("status")...).expect(t, exitOK, "")
	cli(t, env, args("drop")...).expect(t, exitOK, "")
	if info := status(exitFailure, "does not exist"); info.Exists || info.Publication {
		t.Fatalf("after drop: %+v", info)
	}
}
