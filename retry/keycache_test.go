package retry_test

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/retry"
)

// TestKeyCacheLoadsMarksAndForgets: a load finds the keys another process
// parked; a park through the cache marks its key at once; a key the table
// has freed (an operator discarded its entry) is forgotten the first time
// it is asked about, and a free key is never asked about.
func TestKeyCacheLoadsMarksAndForgets(t *testing.T) {
	b := setup(t, nil)
	ctx := context.Background()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(b.table.Park(ctx, orderMsg("order-1", "created"), errors.New("down")))
	c := b.table.NewKeyCache()
	must(c.Load(ctx))
	if !c.MaybeBlocked("order-1") || c.MaybeBlocked("order-2") || c.Len() != 1 {
		t.Fatalf("after load: order-1 %v, order-2 %v, len %d; want only order-1", c.MaybeBlocked("order-1"), c.MaybeBlocked("order-2"), c.Len())
	}
	must(c.Park(ctx, orderMsg("order-2", "created"), errors.New("down")))
	if !c.MaybeBlocked("order-2") {
		t.Fatal("a key parked through the cache is not marked")
	}
	es, err := b.table.List(ctx, filterKey("order-1"))
	must(err)
	must(b.table.Discard(ctx, es[0].ID))
	if !c.MaybeBlocked("order-1") {
		t.Fatal("the cache forgot a key without asking the table")
	}
	blocked, err := c.Blocked(ctx, "order-1")
	must(err)
	if blocked || c.MaybeBlocked("order-1") {
		t.Fatalf("after the discard: blocked %v, still held %v; want free and forgotten", blocked, c.MaybeBlocked("order-1"))
	}
	if blocked, err := c.Blocked(ctx, "order-2"); err != nil || !blocked || !c.MaybeBlocked("order-2") {
		t.Fatalf("order-2: blocked %v, %v, held %v; want blocked and kept", blocked, err, c.MaybeBlocked("order-2"))
	}
}

// TestKeyCacheHearsRetryNowOfAReleasedEntry: an operator's RetryNow of a
// released entry blocks its key again; the listening cache marks the key
// from the announcement, without a load, and so it does for a key another
// process parks.
func TestKeyCacheHearsRetryNowOfAReleasedEntry(t *testing.T) {
	b := setup(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	poison := orderMsg("order-7", "created")
	if err := b.table.DeadLetter(ctx, poison, reliable.Permanent(errors.New("bad"))); err != nil {
		t.Fatal(err)
	}
	if _, err := b.table.Release(ctx, "order-7"); err != nil {
		t.Fatal(err)
	}
	c := b.table.NewKeyCache()
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx, testLogger()) }()
	waitFor(t, 10*time.Second, "the listener's first load", func() bool { return c.Listening() })
	if c.MaybeBlocked("order-7") {
		t.Fatal("a released key is held as blocked")
	}
	es, err := b.table.List(ctx, filterKey("order-7"))
	if err != nil || len(es) != 1 {
		t.Fatalf("entries = %v, %v", es, err)
	}
	if err := b.table.RetryNow(ctx, es[0].ID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the RetryNow announcement", func() bool { return c.MaybeBlocked("order-7") })
	if err := b.table.Park(ctx, orderMsg("order-8", "created"), errors.New("down")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "another process's park announced", func() bool { return c.MaybeBlocked("order-8") })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func filterKey(key string) retry.ListFilter { return retry.ListFilter{Key: key} }

// TestKeyCacheKeepsParksThatALoadMissed: parks through the cache while
// loads run: a load whose snapshot was taken before a park committed must
// not make the cache forget the key once the park returned.
func TestKeyCacheKeepsParksThatALoadMissed(t *testing.T) {
	b := setup(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := b.table.NewKeyCache()
	loads := make(chan error, 1)
	go func() {
		for ctx.Err() == nil {
			if err := c.Load(ctx); err != nil && ctx.Err() == nil {
				loads <- err
				return
			}
		}
		loads <- nil
	}()
	keys := make([]string, 40)
	errs := make(chan error, len(keys))
	for i := range keys {
		keys[i] = "order-" + strconv.Itoa(i)
		go func() { errs <- c.Park(ctx, orderMsg(keys[i], "created"), errors.New("down")) }()
	}
	for range keys {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	for _, k := range keys {
		if !c.MaybeBlocked(k) {
			t.Errorf("key %s parked through the cache is not held after a concurrent load", k)
		}
	}
	cancel()
	if err := <-loads; err != nil {
		t.Fatal(err)
	}
}
