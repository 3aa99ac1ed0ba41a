package outbox_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/reliable-go/reliable"
)

// Issue 15 item 7: Add rejects two messages with the same ID in one call
// (consumers would drop the second as a duplicate: a silent loss) and
// writes nothing. Before, both rows were written.
func TestAddRejectsTwoMessagesWithOneID(t *testing.T) {
	t.Parallel()
	db := newTestDB(t, 4)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	a, b := msg("orders", "order-1", "placed"), msg("orders", "order-2", "placed")
	a.ID, b.ID = "same", "same"
	err := addTx(ctx, db.pool, msg("orders", "order-0", "ok"), a, b)
	if !errors.Is(err, reliable.ErrInvalidMessage) || !reliable.IsPermanent(err) {
		t.Fatalf("Add of two messages with one ID: %v, want a permanent ErrInvalidMessage", err)
	}
	t.Logf("Add: %v", err)
	if n := db.count(t, `SELECT count(*) FROM reliable_outbox`); n != 0 {
		t.Fatalf("%d rows written, want none", n)
	}
	// Distinct IDs, and IDs Add generates, are fine.
	c, d := msg("orders", "order-1", "paid"), msg("orders", "order-1", "shipped")
	if err := addTx(ctx, db.pool, c, d, msg("orders", "order-1", "x")); err != nil {
		t.Fatal(err)
	}
}
