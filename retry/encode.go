package retry

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/reliable-go/reliable"
)

// Keys, IDs and header values are arbitrary bytes on the wire (an 8-byte key
// from Java's LongSerializer holds NUL bytes; foreign producers send invalid
// UTF-8 and long keys), but PostgreSQL text holds neither NUL nor invalid
// UTF-8, and a btree entry holds about 2.7 KB. The table therefore stores:
//
//   - every such value as storedText(v): v itself when text can hold it,
//     otherwise textMarker and the base64 of its bytes. The mapping is
//     injective (a value that itself starts with "\x01" is encoded too), so
//     it reads back byte-exact, and rows written before it read unchanged;
//   - indexed values (the lane, the message ID) as indexedText(v):
//     storedText(v) when it is at most maxIndexed bytes, otherwise
//     hashMarker and the hex SHA-256 of v. The full ID is then kept in
//     message_id_full. Migration 003 rewrites older rows to this form.
const (
	textMarker = "\x01b64:"
	hashMarker = "\x01sha256:"
	maxIndexed = 512
)

// textSafe reports whether PostgreSQL text holds v as it is and v cannot be
// mistaken for an encoded value.
func textSafe(v string) bool {
	return utf8.ValidString(v) && strings.IndexByte(v, 0) < 0 && !strings.HasPrefix(v, "\x01")
}

func storedText(v string) string {
	if textSafe(v) {
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

// storedHeaders encodes header names and values with storedText, so the
// jsonb column holds any bytes (jsonb refuses \u0000, and JSON encoding
// would replace invalid UTF-8).
func storedHeaders(h map[string]string) map[string]string {
	if h == nil {
		return nil
	}
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

// errorText makes an error message storable: a reason, not data, so a lossy
// rendering of NUL and invalid UTF-8 is fine.
func errorText(s string) string {
	return strings.ToValidUTF8(strings.ReplaceAll(s, "\x00", `\x00`), "\uFFFD")
}

// permanentStoreError turns a PostgreSQL error that no retry can fix (data
// exceptions, class 22, such as a time out of range, and program limits,
// class 54) into an error matching reliable.IsPermanent that says why, so a
// consumer dead-letters the message instead of retrying forever. Every other
// error, an outage among them, is returned unchanged and stays retryable.
func permanentStoreError(err error) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) && (strings.HasPrefix(pe.Code, "22") || strings.HasPrefix(pe.Code, "54")) {
		return reliable.Permanent(fmt.Errorf("the retry table cannot hold this message (PostgreSQL refused a value, SQLSTATE %s): %w", pe.Code, err))
	}
	return err
}

// quoteShort quotes a key or ID for an error message, cut to its first 64
// bytes: a 10 KB ID would otherwise make a 10 KB log line.
func quoteShort(s string) string {
	if len(s) <= 64 {
		return strconv.Quote(s)
	}
	return strconv.Quote(s[:64]) + "... (" + strconv.Itoa(len(s)) + " bytes)"
}
