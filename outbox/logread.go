package outbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/reliable-go/reliable/internal/pgplan"
)

// slotName is what PostgreSQL accepts as a replication slot name.
var slotName = regexp.MustCompile(`^[a-z0-9_]{1,63}$`)

// Why the log reader is not reading (Stats.LogState).
const (
	logStateOff      = "off"      // ModePoll
	logStateStarting = "starting" // not yet streaming
	logStateReading  = "reading"
	logStateStandby  = "standby" // another relay streams from the slot
	logStateMissing  = "slot missing"
	logStateLost     = "slot lost"
	logStateBudget   = "over WAL budget"
	logStateError    = "error"
)

// logGather is how long decoded rows are gathered before they are handed
// to lanes: one claim statement for the new keys of many transactions.
const logGather = 2 * time.Millisecond

// logStatusEvery is how often the reader reports its confirmed position.
const logStatusEvery = 200 * time.Millisecond

// logIdle is how long a key fed by the log stays leased without rows.
const logIdle = time.Second

// snapshot is a PostgreSQL MVCC snapshot (pg_current_snapshot) in 32-bit
// transaction IDs, as the log reports them.
type snapshot struct {
	xmax uint32
	xip  map[uint32]bool
}

// parseSnapshot reads pg_current_snapshot()::text, "xmin:xmax:xip,...".
func parseSnapshot(s string) (*snapshot, error) {
	parts := strings.Split(s, ":")
	if len(parts) != 3 {
		return nil, fmt.Errorf("outbox: snapshot %q", s)
	}
	xmax, err := strconv.ParseUint(parts[1], 10, 64)
	if err != nil {
		return nil, fmt.Errorf("outbox: snapshot %q: %w", s, err)
	}
	sn := &snapshot{xmax: uint32(xmax), xip: map[uint32]bool{}}
	if parts[2] != "" {
		for _, x := range strings.Split(parts[2], ",") {
			v, err := strconv.ParseUint(x, 10, 64)
			if err != nil {
				return nil, fmt.Errorf("outbox: snapshot %q: %w", s, err)
			}
			sn.xip[uint32(v)] = true
		}
	}
	return sn, nil
}

// visible says whether the committed transaction xid was visible to the
// snapshot (xid precedes xmax, modulo 2^32, and was not in progress).
func (s *snapshot) visible(xid uint32) bool {
	return int32(xid-s.xmax) < 0 && !s.xip[xid]
}

// seenRow is a row the log showed that its lane did not take at once.
type seenRow struct {
	id  int64
	xid uint32
}

// logRow is a row decoded from the log, with its transaction.
type logRow struct {
	rw   *row
	lane string
	xid  uint32
}

// logTxn is a committed transaction with outbox rows not yet known done
// (deleted, archived or dead).
type logTxn struct {
	end     pglogrepl.LSN
	pending map[int64]bool
	at      time.Time
}

// logTracker decides how far the slot may be confirmed: to the end of the
// longest prefix of transactions whose rows are all done.
type logTracker struct {
	mu   sync.Mutex
	txns []*logTxn
	byID map[int64]*logTxn
	// skipped holds, per key, the newest row of the log that no lane took
	// (see feed), until it is done; skippedBy maps its ID to its key. A
	// polling claim whose read missed the row may make the key's lane
	// after it was skipped, and must read on until it has it (see adopt).
	// Skipped rows are tracked rows, so the bound on those holds.
	skipped   map[string]seenRow
	skippedBy map[int64]string
}

func newLogTracker() *logTracker {
	return &logTracker{byID: map[int64]*logTxn{}, skipped: map[string]seenRow{}, skippedBy: map[int64]string{}}
}

// skip records that no lane took row s of the key lane.
func (t *logTracker) skip(lane string, s seenRow) {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.skipped[lane] = s
	t.skippedBy[s.id] = lane
}

// skippedRow returns the newest row of the key lane that no lane took and
// is not yet done.
func (t *logTracker) skippedRow(lane string) (seenRow, bool) {
	if t == nil {
		return seenRow{}, false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	s, ok := t.skipped[lane]
	return s, ok
}

func (t *logTracker) add(x *logTxn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.txns = append(t.txns, x)
	for id := range x.pending {
		t.byID[id] = x
	}
}

// done forgets rows that were deleted or marked dead.
func (t *logTracker) done(ids []int64) {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, id := range ids {
		if x := t.byID[id]; x != nil {
			delete(x.pending, id)
			delete(t.byID, id)
		}
		if lane, ok := t.skippedBy[id]; ok {
			delete(t.skippedBy, id)
			if t.skipped[lane].id == id {
				delete(t.skipped, lane)
			}
		}
	}
}

// advance drops the done prefix and returns the position after it (0 when
// nothing advanced) and whether nothing is left.
func (t *logTracker) advance() (pglogrepl.LSN, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var to pglogrepl.LSN
	n := 0
	for n < len(t.txns) && len(t.txns[n].pending) == 0 {
		to = t.txns[n].end
		n++
	}
	clear(t.txns[:n])
	t.txns = t.txns[n:]
	return to, len(t.txns) == 0
}

// stale returns up to max pending row IDs of the oldest transactions that
// waited longer than age: rows the relay may not be publishing itself
// (leased by another relay, skipped, dead), whose fate the table tells.
func (t *logTracker) stale(age time.Duration, limit int) []int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	var ids []int64
	now := time.Now()
	for _, x := range t.txns {
		if now.Sub(x.at) < age || len(ids) >= limit {
			break
		}
		for id := range x.pending {
			ids = append(ids, id)
		}
	}
	return ids
}

func (t *logTracker) size() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.byID)
}

// setLogState records the reader's state and logs and counts fallbacks.
func (r *Relay) setLogState(state string, err error) {
	r.mu.Lock()
	prev := r.stats.LogState
	r.stats.LogState = state
	reading := state == logStateReading
	r.logActive.Store(reading)
	fallback := prev != state && (state == logStateMissing || state == logStateLost || state == logStateBudget || state == logStateError)
	if fallback {
		r.stats.LogFallbacks++
	}
	r.mu.Unlock()
	if prev == state || state == logStateStarting {
		return
	}
	switch {
	case reading:
		r.log.Info("outbox relay reads the write-ahead log", slog.String("slot", r.cfg.Slot), slog.String("was", prev))
	case state == logStateStandby:
		r.log.Info("outbox relay polls: another relay reads the slot", slog.String("slot", r.cfg.Slot))
	default:
		r.log.Warn("outbox relay falls back to polling", slog.String("slot", r.cfg.Slot), slog.String("reason", state),
			slog.Any("error", err))
	}
	if !reading {
		r.newRows.Store(true)
		r.kick(r.kickClaim)
	}
}

// logLoop reads the log while the slot is healthy and this relay may, and
// leaves the relay polling otherwise. Polling goes on beside the log at
// PollInterval: it relays rows the log reader skipped (keys other relays
// held, rows pending before the slot existed).
func (r *Relay) logLoop(ctx context.Context) {
	r.setLogState(logStateStarting, nil)
	failures := 0
	for ctx.Err() == nil {
		st, err := SlotStatus(ctx, r.pool, r.cfg.Slot)
		wait := r.cfg.SlotCheckInterval
		switch {
		case err != nil:
			r.setLogState(logStateError, err)
		case !st.Exists:
			r.setLogState(logStateMissing, ErrSlotMissing)
		case st.WALStatus == "lost":
			r.setLogState(logStateLost, errors.New("the slot was invalidated (max_slot_wal_keep_size): drop and create it"))
		case st.RetainedBytes > r.cfg.SlotWALBudget:
			r.budgetFallback(ctx, st)
			wait = r.cfg.SlotRetry
		case st.Active:
			r.setLogState(logStateStandby, nil)
		default:
			state, err := r.streamLog(ctx)
			r.releaseIdle(ctx, 0)
			if ctx.Err() != nil {
				return
			}
			r.setLogState(state, err)
			switch {
			case state == logStateBudget:
				wait = r.cfg.SlotRetry
				r.budgetFallback(ctx, st)
			case err != nil:
				failures++
				wait = min(wait, r.cfg.Backoff.Delay(failures))
			default:
				failures = 0
			}
		}
		if err != nil {
			r.noteError(err)
		}
		sleepOrDone(ctx, wait)
	}
}

// budgetFallback moves the slot to the current WAL position, releasing the
// WAL it retained: the rows of the transactions skipped are in the outbox
// table, which polling relays.
func (r *Relay) budgetFallback(ctx context.Context, st SlotInfo) {
	r.setLogState(logStateBudget, fmt.Errorf("slot retains %d bytes of WAL, budget %d", st.RetainedBytes, r.cfg.SlotWALBudget))
	if _, err := r.pool.Exec(ctx, `SELECT pg_replication_slot_advance($1, pg_current_wal_lsn())
		FROM pg_replication_slots WHERE slot_name = $1 AND NOT active`, r.cfg.Slot); err != nil {
		r.log.Warn("advancing the slot past its WAL budget failed", slog.String("slot", r.cfg.Slot), slog.Any("error", err))
	}
}

// streamLog reads the slot until ctx ends or the slot must be left; it
// returns the state to fall back to.
func (r *Relay) streamLog(ctx context.Context) (string, error) {
	cc := r.pool.Config().ConnConfig.Config.Copy()
	cc.RuntimeParams["replication"] = "database"
	conn, err := pgconn.ConnectConfig(ctx, cc)
	if err != nil {
		return logStateError, fmt.Errorf("outbox: replication connection: %w", err)
	}
	defer func() { _ = conn.Close(context.WithoutCancel(ctx)) }()
	err = pglogrepl.StartReplication(ctx, conn, r.cfg.Slot, 0, pglogrepl.StartReplicationOptions{
		PluginArgs: []string{"proto_version '1'", "publication_names '" + r.cfg.Slot + "'"},
	})
	if err != nil {
		var pe *pgconn.PgError
		switch {
		case errors.As(err, &pe) && pe.Code == "55006": // object in use: another reader
			return logStateStandby, nil
		case errors.As(err, &pe) && pe.Code == "42704": // undefined object
			return logStateMissing, err
		}
		return logStateError, fmt.Errorf("outbox: START_REPLICATION: %w", err)
	}
	tracker := newLogTracker()
	r.mu.Lock()
	r.tracker = tracker
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		r.tracker = nil
		r.mu.Unlock()
	}()
	r.setLogState(logStateReading, nil)

	// Rows of the log not yet known done, at most (their IDs only).
	maxPending := 4 * r.cfg.MaxBufferedRows
	var (
		confirmed    pglogrepl.LSN
		walEnd       pglogrepl.LSN // the server sent everything before it
		relations    = map[uint32]*pglogrepl.RelationMessage{}
		typeMap      = pgtype.NewMap()
		cur          *logTxn
		curXid       uint32
		chunk        []logRow
		chunkAt      time.Time
		nextStatus   = time.Now().Add(logStatusEvery)
		nextCheck    = time.Now().Add(r.cfg.SlotCheckInterval)
		nextStale    = time.Now()
		nextPressure time.Time
	)
	sendStatus := func() error {
		to, empty := tracker.advance()
		if to > confirmed {
			confirmed = to
		}
		if empty && cur == nil && len(chunk) == 0 && walEnd > confirmed {
			confirmed = walEnd // nothing outstanding: the rest had no outbox rows
		}
		r.mu.Lock()
		r.stats.LogConfirmed = uint64(confirmed)
		r.stats.LogPending = tracker.size()
		r.mu.Unlock()
		if confirmed == 0 {
			return nil
		}
		return pglogrepl.SendStandbyStatusUpdate(ctx, conn, pglogrepl.StandbyStatusUpdate{WALWritePosition: confirmed})
	}
	r.pgStopping.Store(false)
	for {
		if r.pgStopping.Load() {
			// PostgreSQL is shutting down: let the walsender go now (the
			// shutdown waits for it), and read on from the confirmed
			// position once the server is back.
			return logStateError, errors.New("outbox: PostgreSQL is shutting down; the log reader closes its replication connection")
		}
		now := time.Now()
		if len(chunk) > 0 && cur == nil && (now.Sub(chunkAt) >= logGather || len(chunk) >= 4096 || tracker.size() >= maxPending) {
			if err := r.feed(ctx, chunk); err != nil {
				return logStateError, err
			}
			clear(chunk)
			chunk = chunk[:0]
		}
		if now.After(nextPressure) {
			// At capacity (a backlog), keys the log left empty go back at
			// once, making room for keys with rows.
			nextPressure = now.Add(5 * time.Millisecond)
			if r.claimFull.Load() {
				r.releaseIdle(ctx, 0)
			}
		}
		if now.After(nextStale) {
			nextStale = now.Add(time.Second)
			r.releaseIdle(ctx, logIdle)
			if err := r.settleStale(ctx, tracker); err != nil {
				r.noteError(err)
				r.log.Warn("checking rows of the log in the table failed", slog.Any("error", err))
			}
		}
		if now.After(nextStatus) {
			nextStatus = now.Add(logStatusEvery)
			if err := sendStatus(); err != nil {
				return logStateError, fmt.Errorf("outbox: standby status: %w", err)
			}
		}
		if now.After(nextCheck) {
			nextCheck = now.Add(r.cfg.SlotCheckInterval)
			st, err := SlotStatus(ctx, r.pool, r.cfg.Slot)
			if err == nil && st.RetainedBytes > r.cfg.SlotWALBudget {
				return logStateBudget, nil
			}
			if err == nil {
				r.mu.Lock()
				r.stats.SlotRetainedBytes = st.RetainedBytes
				r.stats.SlotLagBytes = st.LagBytes
				r.mu.Unlock()
			}
		}
		if cur == nil && tracker.size() >= maxPending {
			// Backpressure: the rows of the log not yet done are bounded
			// (memory, L05); PostgreSQL holds the rest in the slot. Status
			// updates go on, so the walsender does not time out.
			r.mu.Lock()
			r.stats.LogPending = tracker.size()
			r.mu.Unlock()
			if err := sleepCtx(ctx, 20*time.Millisecond); err != nil {
				_ = sendStatus()
				return logStateStarting, nil
			}
			continue
		}
		deadline := nextStatus
		if len(chunk) > 0 && cur == nil {
			deadline = chunkAt.Add(logGather)
		}
		rctx, cancel := context.WithDeadline(ctx, deadline)
		raw, err := conn.ReceiveMessage(rctx)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				_ = sendStatus()
				return logStateStarting, nil
			}
			if pgconn.Timeout(err) {
				continue
			}
			return logStateError, fmt.Errorf("outbox: reading the log: %w", err)
		}
		switch m := raw.(type) {
		case *pgproto3.ErrorResponse:
			pe := pgconn.ErrorResponseToPgError(m)
			if pe.Code == "42704" {
				return logStateMissing, pe
			}
			return logStateError, fmt.Errorf("outbox: reading the log: %w", pe)
		case *pgproto3.CopyData:
			switch m.Data[0] {
			case pglogrepl.PrimaryKeepaliveMessageByteID:
				pkm, err := pglogrepl.ParsePrimaryKeepaliveMessage(m.Data[1:])
				if err != nil {
					return logStateError, err
				}
				if pkm.ServerWALEnd > walEnd {
					walEnd = pkm.ServerWALEnd
				}
				if pkm.ReplyRequested {
					nextStatus = time.Time{}
				}
			case pglogrepl.XLogDataByteID:
				xld, err := pglogrepl.ParseXLogData(m.Data[1:])
				if err != nil {
					return logStateError, err
				}
				msg, err := pglogrepl.Parse(xld.WALData)
				if err != nil {
					return logStateError, fmt.Errorf("outbox: decoding the log: %w", err)
				}
				switch msg := msg.(type) {
				case *pglogrepl.RelationMessage:
					relations[msg.RelationID] = msg
				case *pglogrepl.BeginMessage:
					cur = &logTxn{pending: map[int64]bool{}}
					curXid = msg.Xid
				case *pglogrepl.InsertMessage:
					rel := relations[msg.RelationID]
					if rel == nil || cur == nil {
						return logStateError, fmt.Errorf("outbox: log insert of unknown relation %d", msg.RelationID)
					}
					lr, err := decodeLogRow(typeMap, rel, msg.Tuple)
					if err != nil {
						return logStateError, err
					}
					lr.xid = curXid
					cur.pending[lr.rw.id] = true
					if len(chunk) == 0 {
						chunkAt = time.Now()
					}
					chunk = append(chunk, lr)
				case *pglogrepl.CommitMessage:
					if cur != nil {
						cur.end = msg.TransactionEndLSN
						cur.at = time.Now()
						tracker.add(cur)
						if msg.TransactionEndLSN > walEnd {
							walEnd = msg.TransactionEndLSN
						}
					}
					cur = nil
				}
			}
		}
	}
}

// decodeLogRow reads an outbox row from a pgoutput insert (text format).
func decodeLogRow(tm *pgtype.Map, rel *pglogrepl.RelationMessage, tup *pglogrepl.TupleData) (logRow, error) {
	var lr logRow
	rw := &row{msg: newMessage()}
	m := rw.msg
	if tup == nil || len(tup.Columns) != len(rel.Columns) {
		return lr, fmt.Errorf("outbox: log insert into %s has no matching tuple", rel.RelationName)
	}
	for i, c := range tup.Columns {
		col := rel.Columns[i]
		if c.DataType == 'n' {
			continue
		}
		var err error
		scan := func(dst any) { err = tm.Scan(col.DataType, pgtype.TextFormatCode, c.Data, dst) }
		switch col.Name {
		case "id":
			rw.id, err = strconv.ParseInt(string(c.Data), 10, 64)
		case "lane":
			lr.lane = string(c.Data)
		case "msg_id":
			m.ID = string(c.Data)
		case "topic":
			m.Topic = string(c.Data)
		case "key":
			m.Key = string(c.Data)
		case "type":
			m.Type = string(c.Data)
		case "headers":
			scan(&m.Headers)
		case "payload":
			scan(&m.Payload)
		case "event_time":
			scan(&m.Time)
		case "attempts":
			rw.attempts, err = strconv.Atoi(string(c.Data))
		}
		if err != nil {
			return lr, fmt.Errorf("outbox: decoding column %s of a log insert: %w", col.Name, err)
		}
	}
	decodeStored(m)
	lr.rw = rw
	return lr, nil
}

// awaitVisible waits until the transactions of chunk are visible to new
// snapshots. PostgreSQL writes (and sends) a commit before it makes it
// visible, and on a busy machine the gap lasts milliseconds: a row handed
// over before would be published, then deleted by a statement that cannot
// see it yet (it stays, and is published again), and a read of its key
// could miss it.
func (r *Relay) awaitVisible(ctx context.Context, chunk []logRow) error {
	for wait := 100 * time.Microsecond; ; wait = min(2*wait, 10*time.Millisecond) {
		var s string
		if err := r.pool.QueryRow(ctx, `SELECT pg_current_snapshot()::text`).Scan(&s); err != nil {
			return fmt.Errorf("outbox: reading a snapshot: %w", err)
		}
		snap, err := parseSnapshot(s)
		if err != nil {
			return err
		}
		if !slices.ContainsFunc(chunk, func(lr logRow) bool { return !snap.visible(lr.xid) }) {
			return nil
		}
		r.mu.Lock()
		r.stats.LogVisibilityWaits++
		r.mu.Unlock()
		if err := sleepCtx(ctx, wait); err != nil {
			return err
		}
	}
}

// logClaimSQL leases the given keys, if free and not blocked by a dead row
// (unless $3), as claimSQL does.
const logClaimSQL = `INSERT INTO reliable_outbox_leases AS l (lane, owner, expires_at)
	SELECT c.lane, $1, now() + $4 * interval '1 millisecond' FROM unnest($2::text[]) AS c(lane)
	WHERE $3 OR NOT EXISTS (SELECT 1 FROM reliable_outbox d WHERE d.lane = c.lane AND d.dead_at IS NOT NULL)
	ORDER BY c.lane
	ON CONFLICT (lane) DO UPDATE SET owner = EXCLUDED.owner, expires_at = EXCLUDED.expires_at
	WHERE l.expires_at <= now()
	RETURNING lane`

// feed hands rows decoded from the log to lanes, in commit order. A key
// without a lane is leased first and its pending rows read from the table
// (with the read's snapshot); then a log row joins its lane only when the
// lane holds every earlier pending row of its key: the lane's last read saw
// all the key's rows (it was not full), and the row is newer than that read
// (its transaction was not visible to the read's snapshot) and than every
// row the lane holds. Rows the relay does not take (a key another relay
// holds, a full buffer) stay in the table for polling and in the tracker,
// which asks the table about them later.
func (r *Relay) feed(ctx context.Context, chunk []logRow) error {
	r.mu.Lock()
	var want []string
	seen := map[string]bool{}
	for _, lr := range chunk {
		if l := r.lanes[lr.lane]; (l == nil || l.lost) && !seen[lr.lane] {
			seen[lr.lane] = true
			want = append(want, lr.lane)
		}
	}
	room := min(r.cfg.MaxKeys-len(r.lanes), r.cfg.MaxBufferedRows-r.buffered)
	window := r.windowLocked(len(want))
	r.mu.Unlock()
	if len(want) > room {
		want = want[:max(room, 0)]
	}
	var snap *snapshot
	if len(want) > 0 {
		var err error
		if snap, err = r.claimKeys(ctx, want, window); err != nil {
			r.noteError(err)
			r.log.Warn("leasing keys seen in the log failed; polling relays them", slog.Any("error", err))
		}
	}
	// Hand rows over only once their transactions are visible (see
	// awaitVisible); the claim's snapshot usually shows it already.
	if snap == nil || slices.ContainsFunc(chunk, func(lr logRow) bool { return !snap.visible(lr.xid) }) {
		if err := r.awaitVisible(ctx, chunk); err != nil {
			return err
		}
	}
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, lr := range chunk {
		l := r.lanes[lr.lane]
		switch {
		case l == nil || l.lost:
			// No lane takes it. A polling claim may have read the key
			// before this row was visible and make its lane only now:
			// that lane must not take the key's next rows before this
			// one (see adopt).
			r.tracker.skip(lr.lane, seenRow{id: lr.rw.id, xid: lr.xid})
			continue
		case lr.rw.id <= l.lastID:
			continue
		case l.refilling || l.full || l.snap == nil || r.buffered >= r.cfg.MaxBufferedRows:
			// The table holds rows the lane has not read: read on first.
			// The lane remembers the row: PostgreSQL may send a commit
			// before it is visible to new snapshots, so the next read can
			// miss it; the lane reads until it has it (or the row's
			// transaction is visible and the row gone: done).
			l.seen = append(l.seen, seenRow{id: lr.rw.id, xid: lr.xid})
			if l.refilling {
				continue
			}
			l.full = true
			if len(l.rows) == 0 && !l.inflight && !l.queued {
				l.refilling = true
				r.refills = append(r.refills, l)
				r.kick(r.kickClaim)
			}
			continue
		case l.snap.visible(lr.xid):
			continue // visible to the lane's read, yet not read: done already
		}
		lr.rw.l = l
		l.rows = append(l.rows, lr.rw)
		r.buffered++
		l.lastID = lr.rw.id
		l.idleSince = now
		r.stats.LogRows++
		r.enqueueLocked(l)
	}
	r.kick(r.kickWork)
	return nil
}

// logClaimedRowsSQL reads the first $3 pending rows of each of the keys $2
// leased by $1.
const logClaimedRowsSQL = `SELECT o.id, o.lane, o.msg_id, o.topic, o.key, o.type, o.headers, o.payload, o.event_time, o.attempts
	FROM reliable_outbox_leases l
	CROSS JOIN LATERAL (
		SELECT * FROM reliable_outbox o
		WHERE o.lane = l.lane AND o.dead_at IS NULL
		ORDER BY o.id
		LIMIT $3
	) o
	WHERE l.owner = $1 AND l.lane = ANY($2::text[])
	ORDER BY o.lane, o.id`

// claimKeys leases keys seen in the log and reads their pending rows into
// new lanes, in one round trip: one repeatable-read transaction, whose
// snapshot (taken before the lease, so older than it) the lanes keep and
// claimKeys returns. A lost race for a lease (serialization failure) skips
// the keys: polling relays them.
func (r *Relay) claimKeys(ctx context.Context, keys []string, window int) (*snapshot, error) {
	r.leaseMu.RLock() // until the keys are lanes: see Relay.leaseMu
	defer r.leaseMu.RUnlock()
	slices.Sort(keys)
	start := time.Now()
	var (
		names []string
		got   map[string][]*row
		text  string
	)
	b := &pgx.Batch{}
	b.Queue(`BEGIN ISOLATION LEVEL REPEATABLE READ`)
	b.Queue(asyncCommit)
	b.Queue(logClaimSQL, r.cfg.Instance, keys, r.cfg.ReleaseOnDead, r.cfg.LeaseTTL.Milliseconds())
	b.Queue(logClaimedRowsSQL, r.cfg.Instance, keys, window)
	b.Queue(`SELECT pg_current_snapshot()::text`)
	b.Queue(`COMMIT`)
	br := r.pool.SendBatch(ctx, b)
	err := func() error {
		defer br.Close()
		for range 2 {
			if _, err := br.Exec(); err != nil {
				return err
			}
		}
		rows, err := br.Query()
		if err != nil {
			return err
		}
		if names, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
			return err
		}
		if rows, err = br.Query(); err != nil {
			return err
		}
		if got, err = scanRows(rows); err != nil {
			return err
		}
		if err := br.QueryRow().Scan(&text); err != nil {
			return err
		}
		if _, err := br.Exec(); err != nil {
			return err
		}
		return br.Close()
	}()
	r.mu.Lock()
	r.stats.ClaimQueries++
	r.stats.ClaimTime += time.Since(start)
	r.mu.Unlock()
	if err != nil {
		return nil, err
	}
	snap, err := parseSnapshot(text)
	if err != nil {
		return nil, err
	}
	if len(names) == 0 {
		return snap, nil
	}
	valid := start.Add(r.cfg.LeaseTTL - r.cfg.LeaseTTL/10)
	r.mu.Lock()
	now := time.Now() // under r.mu, as in adopt
	r.stats.KeysLeased += uint64(len(names))
	var lanes []*lane
	for _, name := range names {
		if l := r.lanes[name]; l != nil && !l.releasing {
			// Our own lease had lapsed and nobody took the key meanwhile:
			// it is ours again, rows and all (as in adopt).
			l.validUntil, l.claimedAt, l.lost = valid, now, false
			r.catchUpLocked(l)
			continue
		}
		l := &lane{name: name, claimedAt: now, validUntil: valid, idleSince: now, refilling: true}
		r.lanes[name] = l
		lanes = append(lanes, l)
	}
	r.mu.Unlock()
	return snap, r.placeSnap(ctx, lanes, got, window, snap, false)
}

// readSnapshot reads up to window pending rows of each lane after the
// given IDs (nil: from the first), in one repeatable-read transaction, and
// returns that transaction's snapshot.
func (r *Relay) readSnapshot(ctx context.Context, names []string, after []int64, window int) (map[string][]*row, *snapshot, error) {
	if after == nil {
		after = make([]int64, len(names))
	}
	b := &pgx.Batch{}
	b.Queue(`BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY`)
	b.Queue(pgplan.CustomPlans)
	b.Queue(fetchSQL, names, after, window)
	b.Queue(`SELECT pg_current_snapshot()::text`)
	b.Queue(`COMMIT`)
	br := r.pool.SendBatch(ctx, b)
	defer br.Close()
	for range 2 {
		if _, err := br.Exec(); err != nil {
			return nil, nil, err
		}
	}
	rows, err := br.Query()
	if err != nil {
		return nil, nil, err
	}
	got, err := scanRows(rows)
	if err != nil {
		return nil, nil, err
	}
	var s string
	if err := br.QueryRow().Scan(&s); err != nil {
		return nil, nil, err
	}
	if _, err := br.Exec(); err != nil {
		return nil, nil, err
	}
	snap, err := parseSnapshot(s)
	if err != nil {
		return nil, nil, err
	}
	return got, snap, br.Close()
}

// releaseIdle gives back the leases of keys fed by the log that had no row
// for idle (all empty ones when idle is 0). Only the log goroutine calls
// it while the log is read, and the claim loop while it is not, so no log
// row joins a lane while it is released.
func (r *Relay) releaseIdle(ctx context.Context, idle time.Duration) {
	r.leaseMu.RLock() // the dropped lanes' leases are not orphans: see Relay.leaseMu
	defer r.leaseMu.RUnlock()
	now := time.Now()
	var names []string
	r.mu.Lock()
	for name, l := range r.lanes {
		if len(l.rows) == 0 && !l.inflight && !l.queued && !l.refilling && !l.full && now.Sub(l.idleSince) >= idle {
			names = append(names, name)
			r.dropLaneLocked(l)
		}
	}
	r.mu.Unlock()
	if len(names) == 0 {
		return
	}
	if _, err := r.execAsync(context.WithoutCancel(ctx), `DELETE FROM reliable_outbox_leases WHERE owner = $1 AND lane = ANY($2::text[])`, r.cfg.Instance, names); err != nil {
		r.log.Warn("releasing idle keys failed; their leases expire", slog.Any("error", err))
		return
	}
	r.mu.Lock()
	r.stats.KeysReturned += uint64(len(names))
	r.mu.Unlock()
	r.newRows.Store(true)
}

// settleStale asks the table about rows the tracker waited on for a while:
// rows gone or dead are done. A row this relay publishes is settled by its
// mark; this covers rows relayed by polling or by another relay.
func (r *Relay) settleStale(ctx context.Context, t *logTracker) error {
	ids := t.stale(time.Second, 50000)
	if len(ids) == 0 {
		return nil
	}
	var gone []int64
	err := pgplan.Query(ctx, r.pool, func(rows pgx.Rows) (err error) {
		gone, err = pgx.CollectRows(rows, pgx.RowTo[int64])
		return err
	}, `SELECT i FROM unnest($1::bigint[]) AS i
		WHERE NOT EXISTS (SELECT 1 FROM reliable_outbox o WHERE o.id = i AND o.dead_at IS NULL)`, ids)
	if err != nil {
		return err
	}
	t.done(gone)
	return nil
}

// ensureSlot creates the slot and publication when the slot is missing at
// start; failing that, the relay polls and says why.
func (r *Relay) ensureSlot(ctx context.Context) {
	st, err := SlotStatus(ctx, r.pool, r.cfg.Slot)
	if err == nil && st.Exists {
		return
	}
	if err == nil {
		err = CreateSlot(ctx, r.pool, r.cfg.Slot)
	}
	if err != nil {
		r.log.Warn("creating the replication slot failed; the relay polls", slog.String("slot", r.cfg.Slot), slog.Any("error", err))
		return
	}
	r.log.Info("created the replication slot", slog.String("slot", r.cfg.Slot))
}
