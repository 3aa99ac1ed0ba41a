// Package storetext is the text encoding the SDK's PostgreSQL tables (the
// outbox, the retry table, the dedupe store) use for keys, message IDs,
// types and headers.
//
// They are arbitrary bytes on the wire (an 8-byte key from Java's
// LongSerializer holds NUL bytes; foreign producers send invalid UTF-8 and
// multi-KB keys), but PostgreSQL text holds neither NUL nor invalid UTF-8,
// jsonb refuses \u0000, and a btree entry holds about 2.7 KB. The tables
// therefore store:
//
//   - every such value as Stored(v): v itself when text can hold it,
//     otherwise TextMarker and the base64 of its bytes. The mapping is
//     injective (a value that itself starts with "\x01" is encoded too), so
//     it reads back byte-exact, and rows written before it read unchanged;
//   - indexed values (lanes, message IDs) as Indexed(v): Stored(v) when it
//     is at most MaxIndexed bytes, otherwise HashMarker and the hex SHA-256
//     of v. The tables' migrations rewrite older rows to this form, so the
//     constants must never change.
package storetext

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

// The markers and the index limit, fixed by the migrations that rewrote
// older rows.
const (
	TextMarker = "\x01b64:"
	HashMarker = "\x01sha256:"
	MaxIndexed = 512
)

// Safe reports whether PostgreSQL text holds v as it is and v cannot be
// mistaken for an encoded value.
func Safe(v string) bool {
	return utf8.ValidString(v) && strings.IndexByte(v, 0) < 0 && !strings.HasPrefix(v, "\x01")
}

// Stored returns v in a form PostgreSQL text holds; FromStored inverts it.
func Stored(v string) string {
	if Safe(v) {
		return v
	}
	return TextMarker + base64.RawStdEncoding.EncodeToString([]byte(v))
}

// FromStored inverts Stored. A value that does not decode (written by hand)
// is returned as it is.
func FromStored(s string) string {
	if !strings.HasPrefix(s, TextMarker) {
		return s
	}
	b, err := base64.RawStdEncoding.DecodeString(s[len(TextMarker):])
	if err != nil {
		return s
	}
	return string(b)
}

// Indexed returns a form of v that a btree index holds, injective over all
// values (by its SHA-256 beyond MaxIndexed bytes): Stored(v) when that is
// short enough, so ordinary values keep their older rows' form.
func Indexed(v string) string {
	if s := Stored(v); len(s) <= MaxIndexed {
		return s
	}
	sum := sha256.Sum256([]byte(v))
	return HashMarker + hex.EncodeToString(sum[:])
}

// StoredHeaders encodes header names and values with Stored, so a jsonb
// column holds any bytes (jsonb refuses \u0000, and JSON encoding would
// replace invalid UTF-8). A nil map stays nil.
func StoredHeaders(h map[string]string) map[string]string {
	if h == nil {
		return nil
	}
	out := make(map[string]string, len(h))
	for k, v := range h {
		out[Stored(k)] = Stored(v)
	}
	return out
}

// FromStoredHeaders inverts StoredHeaders.
func FromStoredHeaders(h map[string]string) map[string]string {
	if h == nil {
		return nil
	}
	out := make(map[string]string, len(h))
	for k, v := range h {
		out[FromStored(k)] = FromStored(v)
	}
	return out
}

// ErrorText makes an error message storable: a reason, not data, so a
// lossy rendering of NUL and invalid UTF-8 is fine.
func ErrorText(s string) string {
	return strings.ToValidUTF8(strings.ReplaceAll(s, "\x00", `\x00`), "\uFFFD")
}

// Permanent turns a PostgreSQL error that no retry can fix (data
// exceptions, class 22, such as a time out of range, and program limits,
// class 54) into an error matching reliable.IsPermanent that says why
// ("<holder> cannot hold this ..."), so a consumer dead-letters the message
// instead of retrying forever. Every other error, an outage among them, is
// returned unchanged and stays retryable.
func Permanent(err error, holder string) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) && (strings.HasPrefix(pe.Code, "22") || strings.HasPrefix(pe.Code, "54")) {
		return reliable.Permanent(fmt.Errorf("%s (PostgreSQL refused a value, SQLSTATE %s): %w", holder, pe.Code, err))
	}
	return err
}

// QuoteShort quotes a key or ID for an error message, cut to its first 64
// bytes: a 10 KB ID would otherwise make a 10 KB log line.
func QuoteShort(s string) string {
	if len(s) <= 64 {
		return strconv.Quote(s)
	}
	return strconv.Quote(s[:64]) + "... (" + strconv.Itoa(len(s)) + " bytes)"
}
