package ordering

import (
	"context"
	"testing"
	"time"
)

// TestSlotsBoundHoldersAndAdmitInArrivalOrder: with limit 1, waiters get
// the slot in the order they asked; raising the limit admits the next at
// once; a waiter whose context ends leaves the queue without a slot.
func TestSlotsBoundHoldersAndAdmitInArrivalOrder(t *testing.T) {
	s := NewSlots(1)
	ctx := context.Background()
	if err := s.Acquire(ctx); err != nil {
		t.Fatal(err)
	}
	order := make(chan int, 3)
	for i := range 3 {
		go func() {
			if err := s.Acquire(ctx); err != nil {
				t.Error(err)
				return
			}
			order <- i
		}()
		waitFor(t, func() bool { s.mu.Lock(); defer s.mu.Unlock(); return len(s.waiters) == i+1 })
	}
	gone, cancel := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() { errc <- s.Acquire(gone) }()
	waitFor(t, func() bool { s.mu.Lock(); defer s.mu.Unlock(); return len(s.waiters) == 4 })
	cancel()
	if err := <-errc; err == nil {
		t.Fatal("Acquire with an ended context returned nil")
	}
	select {
	case i := <-order:
		t.Fatalf("waiter %d admitted while the slot was held", i)
	case <-time.After(20 * time.Millisecond):
	}
	s.Release()
	if i := <-order; i != 0 {
		t.Fatalf("first admitted = %d, want 0", i)
	}
	s.SetLimit(3)                  // 1 held: two more fit
	got := []int{<-order, <-order} // granted together: either order
	if got[0]+got[1] != 3 {
		t.Fatalf("admitted %v after raising the limit, want 1 and 2", got)
	}
	if n := s.InUse(); n != 3 {
		t.Fatalf("in use = %d, want 3", n)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 5s")
		}
		time.Sleep(time.Millisecond)
	}
}
