package outbox

import (
	"context"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/reliable-go/reliable"
)

// AddSQL is [Add] for database/sql: it writes msgs to the outbox in tx, the
// caller's own transaction, so they are published if and only if tx
// commits. Use it with sqlx (pass tx.Tx), GORM (the *sql.Tx of
// tx.Statement.ConnPool inside db.Transaction), sqlc's database/sql mode, or
// plain database/sql, on the pgx stdlib driver (github.com/jackc/pgx/v5/stdlib)
// or lib/pq.
//
// AddSQL runs Add itself, the same statements on tx: it validates, encodes,
// sets IDs and times, locks keys and orders rows exactly as Add does (read
// Add's documentation for the guarantees and the caller's duties). Only the
// arguments travel differently: arrays go as PostgreSQL array text, which
// every driver can send, instead of pgx's binary arrays.
//
// As with Add, on any error the transaction is unusable and must be rolled
// back. A value PostgreSQL refuses matches reliable.IsPermanent on either
// driver (lib/pq's errors are classified by their SQLSTATE too).
func AddSQL(ctx context.Context, tx *sql.Tx, msgs ...*reliable.Message) error {
	if tx == nil && len(msgs) > 0 {
		return errors.New("outbox: add: tx is nil")
	}
	return Add(ctx, sqlTx{tx}, msgs...)
}

// errNotOverSQL is returned by the pgx.Tx methods Add does not use; a test
// of AddSQL fails at once if Add ever starts to.
var errNotOverSQL = errors.New("outbox: not supported on a database/sql transaction")

// sqlTx runs Add's statements on a database/sql transaction: it is the
// part of pgx.Tx that Add uses (Exec and SendBatch, whose queries run one
// after another, as a pgx batch in a transaction does), with arguments
// converted by sqlArg. Add never begins, commits or rolls back.
type sqlTx struct{ tx *sql.Tx }

var _ pgx.Tx = sqlTx{}

func (t sqlTx) Exec(ctx context.Context, query string, args ...any) (pgconn.CommandTag, error) {
	conv := make([]any, len(args))
	for i, a := range args {
		conv[i] = sqlArg(a)
	}
	res, err := t.tx.ExecContext(ctx, query, conv...)
	if err != nil {
		return pgconn.CommandTag{}, driverError(err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return pgconn.CommandTag{}, err
	}
	// Only RowsAffected is meaningful: database/sql has no command tag.
	return pgconn.NewCommandTag("SQL " + strconv.FormatInt(n, 10)), nil
}

func (t sqlTx) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	return &sqlBatch{ctx: ctx, tx: t, queries: b.QueuedQueries}
}

func (sqlTx) Begin(context.Context) (pgx.Tx, error) {
	return nil, fmt.Errorf("begin: %w", errNotOverSQL)
}
func (sqlTx) Commit(context.Context) error   { return fmt.Errorf("commit: %w", errNotOverSQL) }
func (sqlTx) Rollback(context.Context) error { return fmt.Errorf("rollback: %w", errNotOverSQL) }
func (sqlTx) CopyFrom(context.Context, pgx.Identifier, []string, pgx.CopyFromSource) (int64, error) {
	return 0, fmt.Errorf("copy from: %w", errNotOverSQL)
}
func (sqlTx) LargeObjects() pgx.LargeObjects { return pgx.LargeObjects{} }
func (sqlTx) Prepare(context.Context, string, string) (*pgconn.StatementDescription, error) {
	return nil, fmt.Errorf("prepare: %w", errNotOverSQL)
}
func (sqlTx) Query(context.Context, string, ...any) (pgx.Rows, error) {
	return nil, fmt.Errorf("query: %w", errNotOverSQL)
}
func (sqlTx) QueryRow(context.Context, string, ...any) pgx.Row {
	return errRow{fmt.Errorf("query row: %w", errNotOverSQL)}
}
func (sqlTx) Conn() *pgx.Conn { return nil }

// sqlBatch runs a batch's queries in order, each when its result is read.
type sqlBatch struct {
	ctx     context.Context
	tx      sqlTx
	queries []*pgx.QueuedQuery
	next    int
	err     error // the first failure; later queries are not run
}

func (b *sqlBatch) Exec() (pgconn.CommandTag, error) {
	if b.err != nil {
		return pgconn.CommandTag{}, b.err
	}
	if b.next >= len(b.queries) {
		return pgconn.CommandTag{}, errors.New("outbox: batch: no more results")
	}
	q := b.queries[b.next]
	b.next++
	if q.Fn != nil { // a result callback: Add registers none
		b.err = fmt.Errorf("batch callback: %w", errNotOverSQL)
		return pgconn.CommandTag{}, b.err
	}
	tag, err := b.tx.Exec(b.ctx, q.SQL, q.Arguments...)
	if err != nil {
		b.err = err
	}
	return tag, err
}

// Tx is nil: Add's batches begin no transaction.
func (b *sqlBatch) Tx() pgx.Tx { return nil }

func (b *sqlBatch) Query() (pgx.Rows, error) {
	return nil, fmt.Errorf("batch query: %w", errNotOverSQL)
}
func (b *sqlBatch) QueryRow() pgx.Row {
	return errRow{fmt.Errorf("batch query row: %w", errNotOverSQL)}
}

// Close runs the queries not read yet, as closing a pgx batch reads their
// results, unless one failed already.
func (b *sqlBatch) Close() error {
	for b.err == nil && b.next < len(b.queries) {
		_, _ = b.Exec()
	}
	return b.err
}

type errRow struct{ err error }

func (r errRow) Scan(...any) error { return r.err }

// sqlArg turns an argument of Add's statements into one every database/sql
// driver takes: the slices Add binds to text[], bytea[] and timestamptz[]
// parameters become PostgreSQL array text (the statements cast their
// parameters, so text is parsed as the array type). lib/pq cannot send Go
// slices, and pgx's stdlib driver takes the text as well.
func sqlArg(a any) any {
	switch v := a.(type) {
	case []string:
		return arrayText(len(v), func(sb *strings.Builder, i int) bool { quoteElem(sb, v[i]); return true })
	case []*string:
		return arrayText(len(v), func(sb *strings.Builder, i int) bool {
			if v[i] == nil {
				return false
			}
			quoteElem(sb, *v[i])
			return true
		})
	case [][]byte:
		return arrayText(len(v), func(sb *strings.Builder, i int) bool {
			if v[i] == nil { // as pgx sends a nil []byte: NULL
				return false
			}
			sb.WriteString(`"\\x`)
			sb.WriteString(hex.EncodeToString(v[i]))
			sb.WriteByte('"')
			return true
		})
	case []time.Time:
		return arrayText(len(v), func(sb *strings.Builder, i int) bool {
			sb.WriteByte('"')
			sb.WriteString(timestamptzText(v[i]))
			sb.WriteByte('"')
			return true
		})
	}
	return a
}

// arrayText renders a one-dimensional array literal; elem writes element i
// or returns false for NULL.
func arrayText(n int, elem func(sb *strings.Builder, i int) bool) string {
	var sb strings.Builder
	sb.WriteByte('{')
	for i := range n {
		if i > 0 {
			sb.WriteByte(',')
		}
		if !elem(&sb, i) {
			sb.WriteString("NULL")
		}
	}
	sb.WriteByte('}')
	return sb.String()
}

// quoteElem writes s as a double-quoted array element. The stored text
// forms hold no NUL byte (storetext), so every value fits.
func quoteElem(sb *strings.Builder, s string) {
	sb.WriteByte('"')
	for i := range len(s) {
		if c := s[i]; c == '"' || c == '\\' {
			sb.WriteByte('\\')
		}
		sb.WriteByte(s[i])
	}
	sb.WriteByte('"')
}

// timestamptzText is t in PostgreSQL's input form, cut to microseconds
// toward the past as pgx's binary encoding cuts it, with a BC year where
// Go's proleptic year is 0 or below (year 0 is 1 BC).
func timestamptzText(t time.Time) string {
	t = t.UTC().Truncate(time.Microsecond)
	y, bc := t.Year(), ""
	if y <= 0 {
		y, bc = 1-y, " BC"
	}
	return fmt.Sprintf("%04d-%s+00%s", y, t.Format("01-02 15:04:05.000000"), bc)
}

// driverError lets Add's error classification, which looks for
// *pgconn.PgError (a value PostgreSQL refuses is permanent), see the
// SQLSTATE of another driver's error, such as lib/pq's *pq.Error. The
// original error stays in the chain for errors.As.
func driverError(err error) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return err // pgx's stdlib driver
	}
	var st interface{ SQLState() string }
	if !errors.As(err, &st) || st.SQLState() == "" {
		return err
	}
	return &sqlStateError{err: err, pg: &pgconn.PgError{Severity: "ERROR", Code: st.SQLState(), Message: err.Error()}}
}

type sqlStateError struct {
	err error
	pg  *pgconn.PgError
}

func (e *sqlStateError) Error() string   { return e.err.Error() }
func (e *sqlStateError) Unwrap() []error { return []error{e.err, e.pg} }
