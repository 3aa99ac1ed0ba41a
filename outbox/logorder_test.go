package outbox

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/reliable-go/reliable"
)

// L19 (per-key order), ModeLog: the polling claim reads a key's rows, and
// before it makes the key's lane (adopt) the log reader feeds a newer row of
// the key. The log reader finds no lane and cannot lease the key (the
// claim's lease is live), so it skips the row: "polling relays it". But the
// claim's read, taken before the row was visible, does not have it either,
// and the lane adopt makes keeps that read's snapshot: the key's next row
// from the log is newer than the snapshot and than every row the lane
// holds, so it joined the lane and was published before the skipped row
// (seen once in CI: TestLogRelayBoundsTheRowsItTracks, "key order-5:
// message 25 is …, commit order says …"). The steps run the relay's own
// functions in that order against the real PostgreSQL, without the loops.
//
// Before the fix: the lane held rows 1 and 3 of the key while row 2 was
// pending. After: the lane holds row 1 and reads on before taking more.
func TestLogRowSkippedDuringAClaimKeepsKeyOrder(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pool := internalTestPool(t, ctx)
	r, err := NewRelay(pool, nopPublisher{}, Config{
		Instance: "logorder", Mode: ModeLog, Slot: "logorder_unused",
		LeaseTTL: 20 * time.Second, PublishTimeout: 2 * time.Second,
		PollInterval: time.Hour, // no sweep
		Logger:       slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	r.lastSweep = time.Now()
	r.logActive.Store(true)
	r.mu.Lock()
	r.tracker = newLogTracker()
	r.mu.Unlock()
	const laneK = "k:k"
	// add commits a row of the key and returns it as the log shows it.
	add := func(body string) logRow {
		m := &reliable.Message{Topic: "orders", Key: "k", Type: "t", Payload: []byte(body)}
		if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { return Add(ctx, tx, m) }); err != nil {
			t.Fatal(err)
		}
		var (
			id  int64
			xid uint32
		)
		if err := pool.QueryRow(ctx, `SELECT id, xmin::text::bigint FROM reliable_outbox WHERE msg_id = $1`, m.ID).Scan(&id, &xid); err != nil {
			t.Fatal(err)
		}
		r.tracker.add(&logTxn{pending: map[int64]bool{id: true}, at: time.Now()})
		return logRow{rw: &row{id: id, msg: m}, lane: laneK, xid: xid}
	}
	first := add("1")

	// The claim loop's claim: lease and read; adopt comes after the feed.
	start := time.Now()
	names, got, snap, _, err := r.claimFrom(ctx, "", 10, 10, false, nil)
	if err != nil || len(names) != 1 {
		t.Fatalf("claim: %v, %v", names, err)
	}
	second := add("2")
	if err := r.feed(ctx, []logRow{second}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.adopt(ctx, start, names, got, 10, snap); err != nil {
		t.Fatal(err)
	}
	third := add("3")
	if err := r.feed(ctx, []logRow{third}); err != nil {
		t.Fatal(err)
	}

	// The lane's rows must be the key's first pending rows, in order.
	rows, err := pool.Query(ctx, `SELECT id FROM reliable_outbox WHERE lane = $1 AND dead_at IS NULL ORDER BY id`, laneK)
	if err != nil {
		t.Fatal(err)
	}
	pending, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		t.Fatal(err)
	}
	if want := []int64{first.rw.id, second.rw.id, third.rw.id}; len(pending) != 3 || pending[0] != want[0] || pending[1] != want[1] || pending[2] != want[2] {
		t.Fatalf("pending rows %v, want %v", pending, want)
	}
	r.mu.Lock()
	l := r.lanes[laneK]
	var held []int64
	if l != nil {
		for _, rw := range l.rows {
			held = append(held, rw.id)
		}
	}
	r.mu.Unlock()
	if l == nil || len(held) == 0 {
		t.Fatalf("no lane holds the key's first row")
	}
	for i, id := range held {
		if id != pending[i] {
			t.Fatalf("the lane holds rows %v while rows %v are pending: row %d would be published before row %d",
				held, pending, id, pending[i])
		}
	}
	// Publishing the lane's rows in order reaches every row of the key.
	var sent []int64
	for range 3 {
		batch, _ := r.takeBatch(time.Now())
		if len(batch) != 1 {
			if _, err := r.refill(ctx); err != nil {
				t.Fatal(err)
			}
			if batch, _ = r.takeBatch(time.Now()); len(batch) != 1 {
				t.Fatalf("after rows %v nothing to publish (held %v)", sent, held)
			}
		}
		sent = append(sent, batch[0].id)
		p := r.planMark([]markItem{{row: batch[0], kind: markSent}})
		if err := r.execMark(ctx, p); err != nil {
			t.Fatal(err)
		}
		r.applyMark(p)
	}
	if sent[0] != pending[0] || sent[1] != pending[1] || sent[2] != pending[2] {
		t.Fatalf("published rows %v, want %v", sent, pending)
	}
}

// The same with a lane whose lease was lost while its row was in flight
// (renew found it gone) and that a polling claim takes back "rows and all":
// the log reader skipped the key's row meanwhile (the lane was lost), and
// the lane, which never read it, must read it before it takes the key's
// next row from the log.
//
// Before the fix: the lane took row 3 from the log while row 2 was pending
// and unread. After: it reads on and publishes 2, then 3.
func TestLogRowSkippedWhileTheLaneWasLostKeepsKeyOrder(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pool := internalTestPool(t, ctx)
	r, err := NewRelay(pool, nopPublisher{}, Config{
		Instance: "logorder", Mode: ModeLog, Slot: "logorder_unused",
		LeaseTTL: 20 * time.Second, PublishTimeout: 2 * time.Second,
		PollInterval: time.Hour, // no sweep
		Logger:       slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	r.lastSweep = time.Now()
	r.logActive.Store(true)
	r.mu.Lock()
	r.tracker = newLogTracker()
	r.mu.Unlock()
	const laneK = "k:k"
	add := func(body string) logRow {
		m := &reliable.Message{Topic: "orders", Key: "k", Type: "t", Payload: []byte(body)}
		if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { return Add(ctx, tx, m) }); err != nil {
			t.Fatal(err)
		}
		var (
			id  int64
			xid uint32
		)
		if err := pool.QueryRow(ctx, `SELECT id, xmin::text::bigint FROM reliable_outbox WHERE msg_id = $1`, m.ID).Scan(&id, &xid); err != nil {
			t.Fatal(err)
		}
		r.tracker.add(&logTxn{pending: map[int64]bool{id: true}, at: time.Now()})
		return logRow{rw: &row{id: id, msg: m}, lane: laneK, xid: xid}
	}
	first := add("1")
	if n, err := r.claim(ctx); err != nil || n != 1 {
		t.Fatalf("claim: %d keys, %v", n, err)
	}
	batch, _ := r.takeBatch(time.Now())
	if len(batch) != 1 || batch[0].id != first.rw.id {
		t.Fatalf("took %d rows, want the first", len(batch))
	}
	// Another relay holds the lease (it expired and was taken): renew finds
	// it lost, and the log reader cannot lease the key for the next row.
	if _, err := pool.Exec(ctx, `UPDATE reliable_outbox_leases SET owner = 'other' WHERE lane = $1`, laneK); err != nil {
		t.Fatal(err)
	}
	if err := r.renew(ctx); err != nil {
		t.Fatal(err)
	}
	second := add("2")
	if err := r.feed(ctx, []logRow{second}); err != nil {
		t.Fatal(err)
	}
	// The other relay lets the key go (it published nothing of it).
	if _, err := pool.Exec(ctx, `DELETE FROM reliable_outbox_leases WHERE lane = $1`, laneK); err != nil {
		t.Fatal(err)
	}
	// A polling claim takes the key back while the first row is in flight.
	if n, err := r.claim(ctx); err != nil || n != 1 {
		t.Fatalf("claim after the loss: %d keys, %v", n, err)
	}
	p := r.planMark([]markItem{{row: batch[0], kind: markSent}})
	if err := r.execMark(ctx, p); err != nil {
		t.Fatal(err)
	}
	r.applyMark(p)
	third := add("3")
	if err := r.feed(ctx, []logRow{third}); err != nil {
		t.Fatal(err)
	}
	sent := []int64{first.rw.id}
	for _, want := range []int64{second.rw.id, third.rw.id} {
		batch, _ := r.takeBatch(time.Now())
		if len(batch) != 1 {
			if _, err := r.refill(ctx); err != nil {
				t.Fatal(err)
			}
			if batch, _ = r.takeBatch(time.Now()); len(batch) != 1 {
				t.Fatalf("after rows %v nothing to publish", sent)
			}
		}
		if batch[0].id != want {
			t.Fatalf("after rows %v the relay publishes row %d, want %d: a later row of the key before an earlier one", sent, batch[0].id, want)
		}
		sent = append(sent, batch[0].id)
		p := r.planMark([]markItem{{row: batch[0], kind: markSent}})
		if err := r.execMark(ctx, p); err != nil {
			t.Fatal(err)
		}
		r.applyMark(p)
	}
}
