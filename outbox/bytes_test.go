package outbox_test

import (
	"context"
	"encoding/binary"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/outbox"
	"github.com/reliable-go/reliable/reliabletest"
)

// foreignKeys are keys PostgreSQL text cannot hold as they are: an 8-byte
// big-endian long (NUL bytes), invalid UTF-8, a 3 KB key (over the btree's
// entry limit), and one that looks like the store's own encoding.
func foreignKeys() map[string]string {
	var long [8]byte
	binary.BigEndian.PutUint64(long[:], 42)
	return map[string]string{
		"long":    string(long[:]),
		"badutf8": "order-\xff\xfe-1",
		"3kb":     strings.Repeat("k", 3000),
		"marker":  "\x01b64:AAAA",
		"plain":   "order-1",
	}
}

func foreignMsg(key, n string) *reliable.Message {
	return &reliable.Message{
		ID: "id\x00" + n + "\xc3\x28" + key, Topic: "orders", Key: key, Type: "t\x00" + n,
		Headers: map[string]string{"trace": "a\x00b", "bin\xff": "\xff\xfe", "plain": "v"},
		Payload: []byte(n),
	}
}

// L03, L08: rows whose key, ID, type and headers are arbitrary bytes are
// added, relayed and published byte-exact, in order per key.
func TestForeignBytesReachThePublisherExactly(t *testing.T) {
	t.Parallel()
	db := newTestDB(t, 8)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	broker := reliabletest.NewBroker(reliabletest.BrokerOptions{})
	broker.CreateTopic("orders")
	keys := foreignKeys()
	for _, key := range keys {
		if err := addTx(ctx, db.pool, foreignMsg(key, "1"), foreignMsg(key, "2")); err != nil {
			t.Fatalf("add %q: %v", trunc(key), err)
		}
	}
	// A keyless message with a foreign ID has a lane of its own.
	keyless := foreignMsg("", "keyless")
	keyless.ID = strings.Repeat("\xff", 2000)
	if err := addTx(ctx, db.pool, keyless); err != nil {
		t.Fatalf("add keyless: %v", err)
	}
	startRelay(t, db.pool, broker.Publisher(), testConfig())
	waitFor(t, 30*time.Second, "every row to be published", func() bool {
		return len(broker.Messages("orders")) == 2*len(keys)+1
	})
	byKey := map[string][]*reliable.Message{}
	for _, m := range broker.Messages("orders") {
		byKey[m.Key] = append(byKey[m.Key], m)
	}
	for name, key := range keys {
		got := byKey[key]
		if len(got) != 2 {
			t.Fatalf("%s: %d messages published for the key, want 2", name, len(got))
		}
		checkSame(t, name, got[0], foreignMsg(key, "1"))
		checkSame(t, name, got[1], foreignMsg(key, "2"))
	}
	if got := byKey[""]; len(got) != 1 || got[0].ID != keyless.ID {
		t.Fatalf("keyless message: %d published", len(got))
	}
	if n := db.count(t, `SELECT count(*) FROM reliable_outbox`); n != 0 {
		t.Fatalf("%d rows left", n)
	}
}

// A dead row with foreign bytes reads back exactly through the operator API.
func TestForeignBytesDeadRowsReadExactly(t *testing.T) {
	t.Parallel()
	db := newTestDB(t, 8)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	broker := reliabletest.NewBroker(reliabletest.BrokerOptions{}) // no topic: unknown topic is permanent
	want := foreignMsg(foreignKeys()["long"], "dead")
	if err := addTx(ctx, db.pool, want.Clone()); err != nil {
		t.Fatal(err)
	}
	r := startRelay(t, db.pool, broker.Publisher(), testConfig())
	waitFor(t, 20*time.Second, "the row to die", func() bool { return r.Stats().Dead == 1 })
	rows, err := outbox.DeadRows(ctx, db.pool, 10)
	if err != nil || len(rows) != 1 {
		t.Fatalf("dead rows: %d, %v", len(rows), err)
	}
	checkSame(t, "dead row", rows[0].Message, want)
}

// L02, L03: a closed publisher (the application closed its producer while
// the relay still runs) is an outage, not a property of the rows: they are
// charged no attempt, never die, and are published in order once publishes
// succeed again. Issue 13 item 9, issue 15 item 6.
func TestClosedPublisherIsAnOutageNotDeadRows(t *testing.T) {
	t.Parallel()
	for name, async := range map[string]bool{"publish": false, "async": true} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			db := newTestDB(t, 8)
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			broker := reliabletest.NewBroker(reliabletest.BrokerOptions{})
			broker.CreateTopic("orders")
			var pub reliable.Publisher = broker.Publisher()
			if async {
				pub = broker.AsyncPublisher()
			}
			// Every publish fails with ErrClosed for a while: more failures
			// than MaxAttempts allows.
			closed := make([]error, 8)
			for i := range closed {
				closed[i] = reliable.ErrClosed
			}
			broker.FailPublishes(closed...)
			for i := range 3 {
				if err := addTx(ctx, db.pool, msg("orders", "order-1", string(rune('a'+i)))); err != nil {
					t.Fatal(err)
				}
			}
			cfg := testConfig()
			cfg.MaxAttempts = 2
			r := startRelay(t, db.pool, pub, cfg)
			waitFor(t, 30*time.Second, "the rows to be published or die", func() bool {
				return len(broker.Messages("orders")) == 3 || r.Stats().Dead > 0
			})
			var body []string
			for _, m := range broker.Messages("orders") {
				body = append(body, string(m.Payload))
			}
			if st := r.Stats(); st.Dead != 0 {
				t.Fatalf("%d rows died of a closed publisher; published %v", st.Dead, body)
			}
			if strings.Join(body, "") != "abc" {
				t.Fatalf("published %v, want a, b, c", body)
			}
			if st := r.Stats(); st.Outages == 0 {
				t.Fatalf("a closed publisher was not counted as an outage: %+v", st)
			}
			if n := db.count(t, `SELECT count(*) FROM reliable_outbox`); n != 0 {
				t.Fatalf("%d rows left", n)
			}
		})
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

// L08, L17: an outbox created before arbitrary bytes were supported holds a
// key over 512 bytes in its lane as plain text. After Migrate a new row of
// that key joins the same lane, so the key's old and new rows stay in order.
func TestMigrateKeepsLongKeysInOneLane(t *testing.T) {
	t.Parallel()
	db := newTestDB(t, 4) // migrated: roll it back to version 1 below
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	old, err := os.ReadFile("migrations/001_outbox.sql")
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		`DROP TABLE reliable_outbox, reliable_outbox_archive, reliable_outbox_keys, reliable_outbox_leases, reliable_outbox_migrations`,
		string(old),
		`CREATE TABLE reliable_outbox_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`,
		`INSERT INTO reliable_outbox_migrations (version, name) VALUES (1, '001_outbox.sql')`,
	} {
		if _, err := db.pool.Exec(ctx, q); err != nil {
			t.Fatalf("%.60s: %v", q, err)
		}
	}
	key := strings.Repeat("k", 1500)
	// The row as the previous version's Add wrote it.
	if _, err := db.pool.Exec(ctx, `INSERT INTO reliable_outbox (lane, msg_id, topic, key, type, event_time)
VALUES ($1, 'old-1', 'orders', $2, 'order.placed', now())`, "k:"+key, key); err != nil {
		t.Fatal(err)
	}
	if err := outbox.Migrate(ctx, db.pool); err != nil {
		t.Fatal(err)
	}
	if err := addTx(ctx, db.pool, msg("orders", key, "new")); err != nil {
		t.Fatal(err)
	}
	if n := db.count(t, `SELECT count(DISTINCT lane) FROM reliable_outbox`); n != 1 {
		t.Fatalf("the key's old and new rows are in %d lanes, want 1", n)
	}
	broker := reliabletest.NewBroker(reliabletest.BrokerOptions{})
	broker.CreateTopic("orders")
	startRelay(t, db.pool, broker.Publisher(), testConfig())
	waitFor(t, 20*time.Second, "both rows to be published", func() bool { return len(broker.Messages("orders")) == 2 })
	if got := broker.Messages("orders"); got[0].ID != "old-1" || got[0].Key != key || string(got[1].Payload) != "new" {
		t.Fatalf("published %q then %q, want old-1 then the new row", got[0].ID, got[1].ID)
	}
}

// A value PostgreSQL cannot hold even encoded (a time before 4713 BC,
// SQLSTATE 22008) fails Add with an error that matches reliable.IsPermanent
// and says why, so a caller does not retry it forever.
func TestAddUnstorableMessageIsAPermanentError(t *testing.T) {
	t.Parallel()
	db := newTestDB(t, 4)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m := msg("orders", "order-1", "x")
	m.Time = time.Date(-10000, 1, 1, 0, 0, 0, 0, time.UTC)
	err := addTx(ctx, db.pool, m)
	if err == nil || !reliable.IsPermanent(err) || !strings.Contains(err.Error(), "cannot hold") {
		t.Fatalf("Add = %v; want a permanent error saying the outbox cannot hold it", err)
	}
}
