package idempotency

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// L19: records of two different IDs never share a key, and every key is
// storable, indexable text.
func FuzzRecordID(f *testing.F) {
	for _, s := range []string{"", "id-1", "\x00\x00\x00\x00\x00\x00\x00*", "\xff\xfe", textMarker + "AAAA", hashMarker, "\x01", strings.Repeat("i", 10_000)} {
		f.Add(s, s+"\x00")
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		for _, v := range []string{a, b} {
			if r := recordID(v); len(r) > maxIndexed || !utf8.ValidString(r) || strings.IndexByte(r, 0) >= 0 {
				t.Fatalf("recordID(%q) = %q: not indexable text", v, r)
			}
		}
		if a != b && recordID(a) == recordID(b) {
			t.Fatalf("%q and %q share a record", a, b)
		}
		if utf8.ValidString(a) && !strings.ContainsRune(a, 0) && !strings.HasPrefix(a, "\x01") && len(a) <= maxIndexed && recordID(a) != a {
			t.Fatalf("recordID(%q) = %q: an ordinary ID must keep its older records' key", a, recordID(a))
		}
	})
}
