package outbox

import "testing"

// The visibility rule that lets a log row join a lane (see feed): a
// committed transaction is visible to a snapshot when its ID precedes xmax,
// modulo 2^32 (the log reports 32-bit IDs, the snapshot 64-bit ones), and
// it was not in progress.
func TestSnapshotVisibilityOfCommittedTransactions(t *testing.T) {
	s, err := parseSnapshot("100:105:101,103")
	if err != nil {
		t.Fatal(err)
	}
	for xid, want := range map[uint32]bool{99: true, 100: true, 101: false, 102: true, 103: false, 104: true, 105: false, 200: false} {
		if got := s.visible(xid); got != want {
			t.Errorf("xid %d visible = %v, want %v", xid, got, want)
		}
	}
	// Epoch 1 (64-bit IDs past 2^32), xmax just past the wrap: 32-bit IDs
	// near 2^32 are older, small ones newer.
	w, err := parseSnapshot("4294967290:4294967300:4294967298")
	if err != nil {
		t.Fatal(err)
	}
	for xid, want := range map[uint32]bool{4294967290: true, 4294967295: true, 2: false, 3: true, 4: false, 10: false} {
		if got := w.visible(xid); got != want {
			t.Errorf("wrapped: xid %d visible = %v, want %v", xid, got, want)
		}
	}
	for _, bad := range []string{"", "1:2", "a:b:", "1:x:"} {
		if _, err := parseSnapshot(bad); err == nil {
			t.Errorf("parseSnapshot(%q) accepted", bad)
		}
	}
}
