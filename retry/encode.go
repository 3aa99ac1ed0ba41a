package retry

import "github.com/reliable-go/reliable/internal/storetext"

// Keys, IDs and header values are arbitrary bytes; the table stores them in
// the text forms of internal/storetext (see there): storedText for values,
// indexedText for the lane and the message ID (the full ID is then kept in
// message_id_full). Migration 003 rewrote older rows to these forms.

func storedText(v string) string                              { return storetext.Stored(v) }
func fromStoredText(s string) string                          { return storetext.FromStored(s) }
func indexedText(v string) string                             { return storetext.Indexed(v) }
func storedHeaders(h map[string]string) map[string]string     { return storetext.StoredHeaders(h) }
func fromStoredHeaders(h map[string]string) map[string]string { return storetext.FromStoredHeaders(h) }
func errorText(s string) string                               { return storetext.ErrorText(s) }
func quoteShort(s string) string                              { return storetext.QuoteShort(s) }

// permanentStoreError marks a value PostgreSQL refuses as a permanent error
// (see storetext.Permanent).
func permanentStoreError(err error) error {
	return storetext.Permanent(err, "the retry table cannot hold this message")
}
