package idempotency

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

// Message IDs are arbitrary bytes on the wire (NUL bytes, invalid UTF-8,
// any length), but PostgreSQL text holds neither NUL nor invalid UTF-8, and
// a btree entry holds about 2.7 KB. The PostgreSQL store therefore keys its
// records by recordID(id): the ID itself when text holds it and it is at
// most maxIndexed bytes (so records of ordinary IDs read as they always
// did), the base64 of its bytes behind textMarker when text cannot hold it,
// and hashMarker and its hex SHA-256 when that is longer than maxIndexed.
// The mapping is injective (an ID that itself starts with "\x01" is
// encoded too). Migration 002 rewrites older records of long IDs.
const (
	textMarker = "\x01b64:"
	hashMarker = "\x01sha256:"
	maxIndexed = 512
)

func recordID(id string) string {
	s := id
	if !utf8.ValidString(id) || strings.IndexByte(id, 0) >= 0 || strings.HasPrefix(id, "\x01") {
		s = textMarker + base64.RawStdEncoding.EncodeToString([]byte(id))
	}
	if len(s) <= maxIndexed {
		return s
	}
	sum := sha256.Sum256([]byte(id))
	return hashMarker + hex.EncodeToString(sum[:])
}

// storeError turns a PostgreSQL error that no retry can fix (data
// exceptions, class 22, and program limits, class 54) into an error matching
// reliable.IsPermanent that says why; every other error, an outage among
// them, is returned unchanged and stays retryable.
func storeError(err error) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) && (strings.HasPrefix(pe.Code, "22") || strings.HasPrefix(pe.Code, "54")) {
		return reliable.Permanent(fmt.Errorf("the dedupe store cannot hold this record (PostgreSQL refused a value, SQLSTATE %s): %w", pe.Code, err))
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
