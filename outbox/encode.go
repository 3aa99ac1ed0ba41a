package outbox

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/reliable-go/reliable"
)

// Keys, message IDs, types and header names and values are arbitrary bytes
// (an 8-byte key from Java's LongSerializer holds NUL bytes; foreign data
// holds invalid UTF-8 and multi-KB keys), but PostgreSQL text holds neither
// NUL nor invalid UTF-8, jsonb refuses \u0000, and a btree entry holds
// about 2.7 KB. The outbox therefore stores:
//
//   - every such value as storedText(v): v itself when text can hold it,
//     otherwise textMarker and the base64 of its bytes. The mapping is
//     injective (a value that itself starts with "\x01" is encoded too), so
//     the relay publishes the exact bytes, and rows written before read
//     unchanged;
//   - the indexed lane as a prefix and indexedText of the key (or ID):
//     storedText when it is at most maxIndexed bytes, otherwise hashMarker
//     and the hex SHA-256 of the value. Migration 002 rewrites older rows'
//     long lanes to this form.
const (
	textMarker = "\x01b64:"
	hashMarker = "\x01sha256:"
	maxIndexed = 512
)

func storedText(v string) string {
	if utf8.ValidString(v) && strings.IndexByte(v, 0) < 0 && !strings.HasPrefix(v, "\x01") {
		return v
	}
	return textMarker + base64.RawStdEncoding.EncodeToString([]byte(v))
}

// fromStoredText inverts storedText. A value that does not decode (written by
// hand) is returned as it is.
func fromStoredText(s string) string {
	if !strings.HasPrefix(s, textMarker) {
		return s
	}
	b, err := base64.RawStdEncoding.DecodeString(s[len(textMarker):])
	if err != nil {
		return s
	}
	return string(b)
}

func indexedText(v string) string {
	if s := storedText(v); len(s) <= maxIndexed {
		return s
	}
	sum := sha256.Sum256([]byte(v))
	return hashMarker + hex.EncodeToString(sum[:])
}

func storedHeaders(h map[string]string) map[string]string {
	out := make(map[string]string, len(h))
	for k, v := range h {
		out[storedText(k)] = storedText(v)
	}
	return out
}

func fromStoredHeaders(h map[string]string) map[string]string {
	if h == nil {
		return nil
	}
	out := make(map[string]string, len(h))
	for k, v := range h {
		out[fromStoredText(k)] = fromStoredText(v)
	}
	return out
}

// decodeStored turns a row's stored fields back into the message's bytes.
func decodeStored(m *reliable.Message) {
	m.ID, m.Key, m.Topic, m.Type = fromStoredText(m.ID), fromStoredText(m.Key), fromStoredText(m.Topic), fromStoredText(m.Type)
	m.Headers = fromStoredHeaders(m.Headers)
}

// storeError turns a PostgreSQL error that no retry can fix (data
// exceptions, class 22, and program limits, class 54) into an error matching
// reliable.IsPermanent that says why; every other error, an outage among
// them, is returned unchanged and stays retryable.
func storeError(err error) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) && (strings.HasPrefix(pe.Code, "22") || strings.HasPrefix(pe.Code, "54")) {
		return reliable.Permanent(fmt.Errorf("the outbox cannot hold this message (PostgreSQL refused a value, SQLSTATE %s): %w", pe.Code, err))
	}
	return err
}
