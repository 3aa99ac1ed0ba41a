package storetext

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// The stored forms hold any bytes as valid text without NUL, read back
// exactly, fit the index, and never map two values to one (L08, L11, L19:
// one key's rows, one message's record must never mix with another's);
// an ordinary value keeps the form older rows have.
func FuzzStoredText(f *testing.F) {
	for _, s := range []string{"", "order-1", "\x00\x00\x00\x00\x00\x00\x00*", "\xff\xfe", TextMarker + "AAAA", HashMarker, "\x01", strings.Repeat("k", 3000), strings.Repeat("i", 10_000)} {
		f.Add(s, s+"\x00")
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		for _, v := range []string{a, b} {
			s := Stored(v)
			if !utf8.ValidString(s) || strings.IndexByte(s, 0) >= 0 {
				t.Fatalf("Stored(%q) = %q: not storable text", v, s)
			}
			if got := FromStored(s); got != v {
				t.Fatalf("round trip of %q gave %q", v, got)
			}
			if l := Indexed(v); len(l) > MaxIndexed || !utf8.ValidString(l) || strings.IndexByte(l, 0) >= 0 {
				t.Fatalf("Indexed(%q) = %q: not indexable text", v, l)
			}
			if Safe(v) && len(v) <= MaxIndexed && (Indexed(v) != v || Stored(v) != v) {
				t.Fatalf("ordinary value %q stored as %q, indexed as %q: older rows would not match", v, Stored(v), Indexed(v))
			}
		}
		if a != b && (Stored(a) == Stored(b) || Indexed(a) == Indexed(b)) {
			t.Fatalf("%q and %q share a stored form", a, b)
		}
		h := FromStoredHeaders(StoredHeaders(map[string]string{a: b, b: a}))
		if h[a] != b || h[b] != a {
			t.Fatalf("headers %q: %q", map[string]string{a: b, b: a}, h)
		}
	})
}
