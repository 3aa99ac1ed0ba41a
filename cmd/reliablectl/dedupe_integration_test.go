package main

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/reliable-go/reliable/idempotency"
	"github.com/reliable-go/reliable/internal/testenv"
)

// dedupeCase runs the dedupe commands against a store holding a claim, a
// done record, a done record of a binary ID and an expired claim.
func dedupeCase(t *testing.T, env map[string]string, sel []string, store, expiring idempotency.Store) {
	ctx := testenv.Context(t, 60*time.Second)
	const binaryID = "\x00\x01id\xff"
	if st, err := store.Begin(ctx, "m-claimed"); err != nil || st != idempotency.StatusNew {
		t.Fatalf("begin: %v %v", st, err)
	}
	for _, id := range []string{"m-done", binaryID} {
		if _, err := store.Begin(ctx, id); err != nil {
			t.Fatal(err)
		}
		if err := store.Done(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := expiring.Begin(ctx, "m-expired"); err != nil {
		t.Fatal(err)
	}
	show := func(extra ...string) dedupeRecord {
		t.Helper()
		r := cli(t, env, append(append([]string{"dedupe", "show"}, sel...), append(extra, "-o", "json")...)...)
		r.expect(t, exitOK, "")
		var rec dedupeRecord
		r.decode(t, &rec)
		return rec
	}
	start := time.Now()
	if rec := show("--id", "m-claimed"); rec.State != dedupeClaimed || rec.Owner == "" || rec.Expires == nil || rec.Expires.Before(start) {
		t.Errorf("m-claimed: %+v, want claimed with an owner and a future expiry", rec)
	}
	if rec := show("--id", "m-done"); rec.State != dedupeDone || rec.Since == nil || rec.Since.After(time.Now()) || rec.Expires == nil {
		t.Errorf("m-done: %+v, want done since a past time", rec)
	}
	if rec := show("--id-hex", "00016964ff"); rec.State != dedupeDone || rec.IDHex != "00016964ff" || rec.ID != `"\x00\x01id\xff"` {
		t.Errorf("binary ID: %+v", rec)
	}
	if rec := show("--id", "m-never"); rec.State != dedupeAbsent {
		t.Errorf("m-never: %+v, want absent", rec)
	}
	// The 1 ms claim has lapsed by now (bounded wait, not a sleep).
	for deadline := time.Now().Add(10 * time.Second); ; {
		rec := show("--id", "m-expired")
		if rec.State == dedupeExpired || rec.State == dedupeAbsent {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("m-expired: %+v after 10s", rec)
		}
	}

	list := func(state string) []dedupeRecord {
		t.Helper()
		args := append(append([]string{"dedupe", "list"}, sel...), "-o", "json")
		if state != "" {
			args = append(args, "--state", state)
		}
		r := cli(t, env, args...)
		r.expect(t, exitOK, "")
		var out struct {
			Records []dedupeRecord `json:"records"`
		}
		r.decode(t, &out)
		return out.Records
	}
	if recs := list(dedupeDone); len(recs) != 2 {
		t.Errorf("done records %+v, want m-done and the binary ID", recs)
	}
	if recs := list(dedupeClaimed); len(recs) != 1 || recs[0].ID != "m-claimed" {
		t.Errorf("claimed records %+v, want m-claimed", recs)
	}
	r := cli(t, env, append(append([]string{"dedupe", "list"}, sel...), "--key-format", "hex")...)
	r.expect(t, exitOK, "")
	if !contains(r.stdout, "00016964ff") || !contains(r.stdout, "6d2d646f6e65") {
		t.Errorf("list --key-format hex:\n%s", r.stdout)
	}
}

// Dedupe lookups on the PostgreSQL store (issue 17).
func TestDedupePostgres(t *testing.T) {
	dsn, schema, pool := pgSchema(t)
	ctx := testenv.Context(t, 30*time.Second)
	store, err := idempotency.NewPostgres(pool, idempotency.PostgresConfig{Namespace: "kitchen", Schema: schema, CleanupInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	expiring, err := idempotency.NewPostgres(pool, idempotency.PostgresConfig{Namespace: "kitchen", Schema: schema, ClaimTTL: time.Millisecond, CleanupInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{envPostgresDSN: dsn}
	dedupeCase(t, env, []string{"--namespace", "kitchen", "--schema", schema}, store, expiring)
	cli(t, env, "dedupe", "show", "--namespace", "kitchen", "--schema", schema, "--table", "nope", "--id", "x").expect(t, exitFailure, "dedupe table not found")
	r := cli(t, env, "dedupe", "list", "--namespace", "other", "--schema", schema)
	r.expect(t, exitOK, "")
	if !contains(r.stdout, "(no records)") {
		t.Errorf("another namespace is not empty:\n%s", r.stdout)
	}
}

// Dedupe lookups on the Redis store (issue 17).
func TestDedupeRedis(t *testing.T) {
	addr := testenv.RedisAddr(t)
	client := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { _ = client.Close() })
	ns := testenv.UniqueName(t, "ns")
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		keys, _ := client.Keys(ctx, "reliable:idem:"+ns+":*").Result()
		if len(keys) > 0 {
			client.Del(ctx, keys...)
		}
	})
	store, err := idempotency.NewRedis(client, idempotency.RedisConfig{Namespace: ns, Logger: quietLog})
	if err != nil {
		t.Fatal(err)
	}
	expiring, err := idempotency.NewRedis(client, idempotency.RedisConfig{Namespace: ns, ClaimTTL: time.Millisecond, Logger: quietLog})
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{envRedisAddr: addr}
	dedupeCase(t, env, []string{"--store", "redis", "--namespace", ns}, store, expiring)
	cli(t, nil, "dedupe", "show", "--store", "redis", "--namespace", ns, "--id", "x", "--redis-addr", "127.0.0.1:1").expect(t, exitFailure, "cannot reach Redis at 127.0.0.1:1")
}
