package retry_test

import (
	"context"
	"encoding/binary"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/internal/pgmigrate"
	"github.com/reliable-go/reliable/retry"
)

// foreignKeys are keys that non-SDK producers put on the wire and that
// PostgreSQL text cannot hold as they are: an 8-byte big-endian long
// (Java's LongSerializer: NUL bytes), invalid UTF-8, and a 3 KB key (over the
// btree's entry limit of about 2.7 KB).
func foreignKeys() map[string]string {
	var long [8]byte
	binary.BigEndian.PutUint64(long[:], 42)
	return map[string]string{
		"long":    string(long[:]),
		"badutf8": "order-\xff\xfe-1",
		"3kb":     strings.Repeat("k", 3000),
		"marker":  "\x01b64:AAAA", // looks like the store's own encoding
		"plain":   "order-1",
	}
}

// foreignMsg is a message whose ID, type and headers are foreign bytes too.
func foreignMsg(key, n string) *reliable.Message {
	return &reliable.Message{
		ID: "id\x00" + n + "\xc3\x28" + key, Topic: "orders", Key: key, Type: "t\x00" + n,
		Headers: map[string]string{"trace": "a\x00b", "bin\xff": "\xff\xfe", "plain": "v"},
		Payload: []byte(n),
	}
}

// L11: keys, IDs and header values are arbitrary bytes. Each foreign key
// blocks, parks, replays through the retrier with the exact bytes, in order,
// once each, and unblocks once done.
func TestForeignBytesParkBlockAndReplayExactly(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	keys := foreignKeys()
	var (
		mu  sync.Mutex
		got = map[string][]*reliable.Message{}
	)
	h := reliable.HandlerFunc(func(_ context.Context, m *reliable.Message) error {
		mu.Lock()
		defer mu.Unlock()
		got[m.Key] = append(got[m.Key], m)
		return nil
	})
	for name, key := range keys {
		first := foreignMsg(key, "1")
		first.Delivery.Attempt = 1
		if err := b.table.Park(ctx, first, reliable.Retryable(errors.New("downstream blip"))); err != nil {
			t.Fatalf("%s: park: %v", name, err)
		}
		blocked, err := b.table.Blocked(ctx, key)
		if err != nil || !blocked {
			t.Fatalf("%s: Blocked = %v, %v; want true", name, blocked, err)
		}
		if err := b.table.Park(ctx, foreignMsg(key, "2"), nil); err != nil {
			t.Fatalf("%s: park behind: %v", name, err)
		}
		// Parking the same message again stays one entry.
		if err := b.table.Park(ctx, foreignMsg(key, "2"), nil); err != nil {
			t.Fatalf("%s: park again: %v", name, err)
		}
		entries, err := b.table.List(ctx, retry.ListFilter{Key: key})
		if err != nil {
			t.Fatalf("%s: list: %v", name, err)
		}
		if len(entries) != 2 {
			t.Fatalf("%s: %d entries listed, want 2", name, len(entries))
		}
		checkSame(t, name+" listed", entries[0].Message, foreignMsg(key, "1"))
		checkSame(t, name+" listed", entries[1].Message, foreignMsg(key, "2"))
	}
	// No key is a prefix or encoding of another: each is blocked on its own.
	if blocked, err := b.table.Blocked(ctx, "\x01b64:"+keys["marker"]); err != nil || blocked {
		t.Fatalf("an unrelated key: Blocked = %v, %v", blocked, err)
	}

	startRetrier(t, b.table, h, retry.RetrierConfig{})
	waitFor(t, 30*time.Second, "every key to replay", func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, key := range keys {
			if len(got[key]) < 2 {
				return false
			}
		}
		return true
	})
	for name, key := range keys {
		waitFor(t, 10*time.Second, name+" to unblock", func() bool {
			blocked, err := b.table.Blocked(ctx, key)
			return err == nil && !blocked
		})
		mu.Lock()
		ms := got[key]
		mu.Unlock()
		if len(ms) != 2 {
			t.Fatalf("%s: handled %d times, want 2", name, len(ms))
		}
		checkSame(t, name+" replayed", ms[0], foreignMsg(key, "1"))
		checkSame(t, name+" replayed", ms[1], foreignMsg(key, "2"))
	}
}

// L11: a poison message with foreign bytes is stored dead, blocks its key,
// and reaches the notifier and the operator API byte-exact; Release,
// RetryKeyNow and Discard act on exactly that key.
func TestForeignBytesDeadLetter(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for name, key := range foreignKeys() {
		msg := foreignMsg(key, "poison")
		if err := b.table.DeadLetter(ctx, msg, reliable.Permanent(errors.New("bad payload \x00\xff"))); err != nil {
			t.Fatalf("%s: dead letter: %v", name, err)
		}
		select {
		case d := <-b.dead:
			checkSame(t, name+" notified", d.Message, msg)
		case <-ctx.Done():
			t.Fatalf("%s: no notification", name)
		}
		if blocked, err := b.table.Blocked(ctx, key); err != nil || !blocked {
			t.Fatalf("%s: Blocked = %v, %v; want true", name, blocked, err)
		}
		entries, err := b.table.List(ctx, retry.ListFilter{Key: key, States: []retry.State{retry.StateDead}})
		if err != nil || len(entries) != 1 {
			t.Fatalf("%s: list dead: %d, %v", name, len(entries), err)
		}
		e, err := b.table.Get(ctx, entries[0].ID)
		if err != nil {
			t.Fatal(err)
		}
		checkSame(t, name+" get", e.Message, msg)
		if n, err := b.table.Release(ctx, key); err != nil || n != 1 {
			t.Fatalf("%s: release = %d, %v", name, n, err)
		}
		if blocked, err := b.table.Blocked(ctx, key); err != nil || blocked {
			t.Fatalf("%s: after release Blocked = %v, %v", name, blocked, err)
		}
		// The other operator paths reliablectl uses: retry the key's dead
		// entry, then discard it.
		second := foreignMsg(key, "poison2")
		must(t, b.table.DeadLetter(ctx, second, reliable.Permanent(errors.New("bad"))))
		<-b.dead
		if n, err := b.table.RetryKeyNow(ctx, key); err != nil || n != 1 {
			t.Fatalf("%s: RetryKeyNow = %d, %v", name, n, err)
		}
		pending, err := b.table.List(ctx, retry.ListFilter{Key: key, States: []retry.State{retry.StatePending}})
		if err != nil || len(pending) != 1 {
			t.Fatalf("%s: pending after RetryKeyNow: %d, %v", name, len(pending), err)
		}
		checkSame(t, name+" retried", pending[0].Message, second)
		must(t, b.table.Discard(ctx, pending[0].ID))
		if blocked, err := b.table.Blocked(ctx, key); err != nil || blocked {
			t.Fatalf("%s: after discard Blocked = %v, %v", name, blocked, err)
		}
	}
}

func checkSame(t *testing.T, what string, got, want *reliable.Message) {
	t.Helper()
	if got.ID != want.ID || got.Key != want.Key || got.Type != want.Type || got.Topic != want.Topic ||
		string(got.Payload) != string(want.Payload) {
		t.Fatalf("%s: got ID %q key %q type %q topic %q payload %q, want ID %q key %q type %q topic %q payload %q",
			what, got.ID, trunc(got.Key), got.Type, got.Topic, got.Payload, want.ID, trunc(want.Key), want.Type, want.Topic, want.Payload)
	}
	if len(got.Headers) != len(want.Headers) {
		t.Fatalf("%s: headers %q, want %q", what, got.Headers, want.Headers)
	}
	for k, v := range want.Headers {
		if gv, ok := got.Headers[k]; !ok || gv != v {
			t.Fatalf("%s: header %q = %q, want %q (all: %q)", what, k, gv, v, got.Headers)
		}
	}
}

func trunc(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}

// L11, L17: an installation created before arbitrary bytes were supported
// holds a key and an ID longer than 512 bytes as plain text. After Migrate
// the key still blocks, the ID still deduplicates its parks, and both read
// back exactly.
func TestMigrateKeepsLongKeysOfOlderTables(t *testing.T) {
	t.Parallel()
	pool := testPool(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	name := uniqueName("rtm_")
	dropTable(t, pool, name, name+"_leases", name+"_migrations")
	old := fstest.MapFS{}
	for _, f := range []string{"001_create.sql", "002_due_heads.sql"} {
		b, err := os.ReadFile("migrations/" + f)
		if err != nil {
			t.Fatal(err)
		}
		old["migrations/"+f] = &fstest.MapFile{Data: b}
	}
	target := pgmigrate.Target{Table: name}
	if err := pgmigrate.Apply(ctx, pool, old, "migrations", target); err != nil {
		t.Fatal(err)
	}
	key, id := strings.Repeat("k", 1500), strings.Repeat("i", 1200)
	// The row as the previous version wrote it: lane 'k:' || key, plain ID.
	if _, err := pool.Exec(ctx, `INSERT INTO `+target.Ident("")+` (grp, lane, message_id, msg_key, topic, msg_type, state, attempts, next_attempt_at)
VALUES ('kitchen', $1, $2, $3, 'orders', 'order.placed', 'pending', 1, now() + interval '1 hour')`, "k:"+key, id, key); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO `+target.Ident("_leases")+` (grp, lane, owner, expires_at) VALUES ('kitchen', $1, 'old', now() + interval '1 hour')`, "k:"+key); err != nil {
		t.Fatal(err)
	}
	tbl, err := retry.NewTable(pool, retry.TableConfig{Group: "kitchen", Table: name, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	must(t, tbl.Migrate(ctx))
	if blocked, err := tbl.Blocked(ctx, key); err != nil || !blocked {
		t.Fatalf("after migration Blocked = %v, %v; want true", blocked, err)
	}
	// A redelivery of the parked message stays one entry.
	must(t, tbl.Park(ctx, &reliable.Message{ID: id, Topic: "orders", Key: key, Type: "order.placed"}, nil))
	entries, err := tbl.List(ctx, retry.ListFilter{Key: key})
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Message.ID != id || entries[0].Message.Key != key {
		t.Fatalf("after migration: %d entries, first ID %d bytes", len(entries), len(entries[0].Message.ID))
	}
	var leaseLane string
	if err := pool.QueryRow(ctx, `SELECT lane FROM `+target.Ident("_leases")).Scan(&leaseLane); err != nil {
		t.Fatal(err)
	}
	if len(leaseLane) > 600 {
		t.Fatalf("lease lane not migrated: %d bytes", len(leaseLane))
	}
}

// L11: a value PostgreSQL cannot hold even encoded (here a Kafka record's
// timestamp before 4713 BC, SQLSTATE 22008) is refused with an error that
// matches reliable.IsPermanent and says why, so the consumer dead-letters or
// skips the message instead of retrying forever; an outage stays retryable.
func TestUnstorableMessageIsAPermanentError(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	msg := orderMsg("order-1", "placed")
	msg.Time = time.Date(-10000, 1, 1, 0, 0, 0, 0, time.UTC)
	err := b.table.Park(ctx, msg, reliable.Retryable(errors.New("blip")))
	if err == nil || !reliable.IsPermanent(err) || !strings.Contains(err.Error(), "cannot hold") {
		t.Fatalf("Park = %v; want a permanent error saying the table cannot hold it", err)
	}
	// An outage: the pool is closed. Not permanent.
	pool := testPool(t)
	tbl, err := retry.NewTable(pool, b.cfg)
	if err != nil {
		t.Fatal(err)
	}
	pool.Close()
	if _, err := tbl.Blocked(ctx, "order-1"); err == nil || reliable.IsPermanent(err) {
		t.Fatalf("Blocked on a closed pool = %v; want a retryable error", err)
	}
}
