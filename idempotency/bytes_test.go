package idempotency_test

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"os"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/idempotency"
	"github.com/reliable-go/reliable/internal/pgmigrate"
)

// foreignIDs are message IDs that non-SDK producers put on the wire and
// that PostgreSQL text cannot hold as they are, plus IDs that look like the
// store's own encodings of the others (they must stay distinct records).
func foreignIDs() map[string]string {
	var long [8]byte
	binary.BigEndian.PutUint64(long[:], 42)
	big := strings.Repeat("i", 10_000)
	sum := sha256.Sum256([]byte(big))
	return map[string]string{
		"long":         string(long[:]),
		"nul":          "id\x00-1",
		"badutf8":      "id-\xff\xfe",
		"10kb":         big,
		"b64 of long":  "\x01b64:" + base64.RawStdEncoding.EncodeToString(long[:]),
		"hash of 10kb": "\x01sha256:" + hex.EncodeToString(sum[:]),
		"plain":        "id-1",
	}
}

// L19, L20: every store deduplicates any message ID byte-exact: Begin,
// duplicate detection by a second instance, Done, Abort.
func TestForeignIDsDeduplicate(t *testing.T) {
	t.Parallel()
	for name, f := range map[string]func(*testing.T) storeFactory{
		"memory":   func(*testing.T) storeFactory { return memoryFactory() },
		"redis":    redisFactory,
		"postgres": postgresFactory,
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			newStore := f(t)
			ns := uniqueName("ns")
			a, b := newStore(t, ns, time.Minute, time.Hour), newStore(t, ns, time.Minute, time.Hour)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			ids := foreignIDs()
			for _, id := range ids {
				begin(t, a, id, idempotency.StatusNew)
			}
			for _, id := range ids {
				begin(t, b, id, idempotency.StatusInProgress)
				must(t, a.Done(ctx, id))
				begin(t, b, id, idempotency.StatusDone)
				// Abort of another ID with the same bytes plus one: only that
				// claim goes.
				begin(t, a, id+"\x00", idempotency.StatusNew)
				must(t, a.Abort(ctx, id+"\x00"))
				begin(t, b, id+"\x00", idempotency.StatusNew)
			}
		})
	}
}

// L20: ProcessTx and DoneTx take any ID; a second ProcessTx of the same ID
// skips.
func TestPostgresForeignIDsInTransactions(t *testing.T) {
	t.Parallel()
	pool := testPool(t)
	s := newPostgresStore(t, pool, idempotency.PostgresConfig{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for name, id := range foreignIDs() {
		ran := 0
		for range 2 {
			st, err := s.ProcessTx(ctx, "tx:"+id, func(context.Context, pgx.Tx) error { ran++; return nil })
			if err != nil {
				t.Fatalf("%s: ProcessTx: %v", name, err)
			}
			_ = st
		}
		if ran != 1 {
			t.Fatalf("%s: ProcessTx ran fn %d times, want 1", name, ran)
		}
		begin(t, s, id, idempotency.StatusNew)
		must(t, pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { return s.DoneTx(ctx, tx, id) }))
		begin(t, s, id, idempotency.StatusDone)
	}
}

// L17: a table created before arbitrary IDs were supported holds an ID over
// 512 bytes as plain text; after Migrate it is still found done.
func TestPostgresMigrateKeepsLongIDs(t *testing.T) {
	t.Parallel()
	pool := testPool(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	table := uniqueName("idem_")
	dropTable(t, pool, table, table+"_migrations")
	b, err := os.ReadFile("migrations/001_create.sql")
	must(t, err)
	target := pgmigrate.Target{Table: table}
	must(t, pgmigrate.Apply(ctx, pool, fstest.MapFS{"m/001_create.sql": {Data: b}}, "m", target))
	id := strings.Repeat("i", 1200)
	_, err = pool.Exec(ctx, `INSERT INTO `+target.Ident("")+` (namespace, id, done, expires_at) VALUES ('kitchen', $1, true, now() + interval '1 hour')`, id)
	must(t, err)
	s, err := idempotency.NewPostgres(pool, idempotency.PostgresConfig{Namespace: "kitchen", Table: table})
	must(t, err)
	must(t, s.Migrate(ctx))
	begin(t, s, id, idempotency.StatusDone)
}

// An outage stays a retryable error (the consumer retries store calls
// without charging the message); it is never reported permanent.
func TestPostgresOutageIsNotPermanent(t *testing.T) {
	t.Parallel()
	pool := testPool(t)
	s := newPostgresStore(t, pool, idempotency.PostgresConfig{})
	pool.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := s.Begin(ctx, "id\x00")
	if err == nil || reliable.IsPermanent(err) || errors.Is(err, idempotency.ErrEmptyID) {
		t.Fatalf("Begin on a closed pool = %v; want a retryable error", err)
	}
}
