package ordering

import (
	"math/rand/v2"
	"testing"
)

func TestTrackerNeverPassesIncomplete(t *testing.T) {
	// L05: the committed offset must never pass a message that is not complete,
	// whatever order the workers finish in.
	tr := NewTracker(100)
	offsets := []int64{100, 101, 103, 104, 107} // gaps, as after compaction
	for _, o := range offsets {
		if err := tr.Track(o); err != nil {
			t.Fatal(err)
		}
	}
	steps := []struct {
		complete int64
		want     int64
	}{
		{104, 100}, {101, 100}, {100, 103}, {107, 103}, {103, 108},
	}
	for _, s := range steps {
		if got := tr.Complete(s.complete); got != s.want {
			t.Fatalf("after completing %d: commit position %d, want %d", s.complete, got, s.want)
		}
	}
	if tr.InFlight() != 0 {
		t.Fatalf("in flight %d, want 0", tr.InFlight())
	}
}

func TestTrackerRejectsOutOfOrderTrack(t *testing.T) {
	tr := NewTracker(10)
	if err := tr.Track(9); err == nil {
		t.Fatal("tracking below the start must fail")
	}
	if err := tr.Track(10); err != nil {
		t.Fatal(err)
	}
	if err := tr.Track(10); err == nil {
		t.Fatal("tracking the same offset twice must fail")
	}
}

func TestTrackerIgnoresUnknownOffsets(t *testing.T) {
	tr := NewTracker(0)
	_ = tr.Track(0)
	if got := tr.Complete(5); got != 0 {
		t.Fatalf("commit position %d, want 0", got)
	}
	if got := tr.Complete(0); got != 1 {
		t.Fatalf("commit position %d, want 1", got)
	}
	if got := tr.Complete(0); got != 1 {
		t.Fatalf("completing twice: commit position %d, want 1", got)
	}
}

func TestTrackerRandomCompletionOrder(t *testing.T) {
	// L05, L12: random completion over many offsets, checking the invariant at
	// every step against a brute-force model.
	rng := rand.New(rand.NewPCG(1, 2))
	tr := NewTracker(0)
	const n = 5000
	for o := int64(0); o < n; o++ {
		if err := tr.Track(o); err != nil {
			t.Fatal(err)
		}
	}
	order := rng.Perm(n)
	done := make([]bool, n)
	for _, o := range order {
		done[o] = true
		got := tr.Complete(int64(o))
		want := int64(0)
		for want < n && done[want] {
			want++
		}
		if got != want {
			t.Fatalf("commit position %d, want %d", got, want)
		}
	}
}

func BenchmarkTracker(b *testing.B) {
	tr := NewTracker(0)
	for i := 0; i < b.N; i++ {
		_ = tr.Track(int64(i))
		tr.Complete(int64(i))
	}
}
