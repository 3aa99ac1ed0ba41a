package outbox

import (
	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/internal/storetext"
)

// Keys, message IDs, types and header names and values are arbitrary bytes;
// the outbox stores them in the text forms of internal/storetext (see
// there): storedText for values, the lane as a prefix and indexedText of the
// key (or ID). Migration 002 rewrote older rows' long lanes to this form.

func storedText(v string) string                              { return storetext.Stored(v) }
func fromStoredText(s string) string                          { return storetext.FromStored(s) }
func indexedText(v string) string                             { return storetext.Indexed(v) }
func storedHeaders(h map[string]string) map[string]string     { return storetext.StoredHeaders(h) }
func fromStoredHeaders(h map[string]string) map[string]string { return storetext.FromStoredHeaders(h) }

// decodeStored turns a row's stored fields back into the message's bytes.
func decodeStored(m *reliable.Message) {
	m.ID, m.Key, m.Topic, m.Type = fromStoredText(m.ID), fromStoredText(m.Key), fromStoredText(m.Topic), fromStoredText(m.Type)
	m.Headers = fromStoredHeaders(m.Headers)
}

// storeError marks a value PostgreSQL refuses as a permanent error (see
// storetext.Permanent).
func storeError(err error) error {
	return storetext.Permanent(err, "the outbox cannot hold this message")
}
