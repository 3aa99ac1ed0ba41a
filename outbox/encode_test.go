package outbox

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// The stored forms hold any bytes as valid text without NUL, read back
// exactly, fit the index, and never map two values to one (L08: one key's
// rows must never mix with another's).
func FuzzStoredText(f *testing.F) {
	for _, s := range []string{"", "order-1", "\x00\x00\x00\x00\x00\x00\x00*", "\xff\xfe", textMarker + "AAAA", hashMarker, "\x01", strings.Repeat("k", 3000)} {
		f.Add(s, s+"\x00")
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		for _, v := range []string{a, b} {
			s := storedText(v)
			if !utf8.ValidString(s) || strings.IndexByte(s, 0) >= 0 {
				t.Fatalf("storedText(%q) = %q: not storable text", v, s)
			}
			if got := fromStoredText(s); got != v {
				t.Fatalf("round trip of %q gave %q", v, got)
			}
			if l := indexedText(v); len(l) > maxIndexed || !utf8.ValidString(l) || strings.IndexByte(l, 0) >= 0 {
				t.Fatalf("indexedText(%q) = %q: not indexable text", v, l)
			}
		}
		if a != b && (storedText(a) == storedText(b) || indexedText(a) == indexedText(b)) {
			t.Fatalf("%q and %q share a stored form", a, b)
		}
		h := fromStoredHeaders(storedHeaders(map[string]string{a: b, b: a}))
		if h[a] != b || h[b] != a {
			t.Fatalf("headers %q: %q", map[string]string{a: b, b: a}, h)
		}
	})
}
