package idempotency

import "github.com/reliable-go/reliable/internal/storetext"

// Message IDs are arbitrary bytes; the PostgreSQL store keys its records by
// recordID(id), the indexed text form of internal/storetext: the ID itself
// when text holds it and it is at most storetext.MaxIndexed bytes (so records of
// ordinary IDs read as they always did), else an injective encoding.
// Migration 002 rewrote older records of long IDs.

func recordID(id string) string  { return storetext.Indexed(id) }
func quoteShort(s string) string { return storetext.QuoteShort(s) }

// storeError marks a value PostgreSQL refuses as a permanent error (see
// storetext.Permanent).
func storeError(err error) error {
	return storetext.Permanent(err, "the dedupe store cannot hold this record")
}
