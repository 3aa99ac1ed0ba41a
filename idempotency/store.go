package idempotency

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Status is the outcome of [Store.Begin].
type Status int

const (
	// StatusNew means the caller now holds the claim: process the message,
	// then call Done (success) or Abort (failure).
	StatusNew Status = iota + 1
	// StatusDone means the message was processed already: complete the
	// delivery without calling the handler.
	StatusDone
	// StatusInProgress means another consumer holds a live claim: try again
	// later (park the message or redeliver it); do not process it now.
	StatusInProgress
)

func (s Status) String() string {
	switch s {
	case StatusNew:
		return "new"
	case StatusDone:
		return "done"
	case StatusInProgress:
		return "in progress"
	}
	return fmt.Sprintf("Status(%d)", int(s))
}

// Store deduplicates messages by ID. Implementations are safe for concurrent
// use by many goroutines and processes: of concurrent Begin calls for one ID,
// exactly one returns StatusNew.
type Store interface {
	// Begin claims id for processing for the claim TTL. A crashed consumer's
	// claim expires, so the message can be processed again.
	Begin(ctx context.Context, id string) (Status, error)
	// Done records id as processed, kept for the retention period. Call it
	// only after the handler succeeded (L20). Done is idempotent.
	Done(ctx context.Context, id string) error
	// Abort releases a claim after a failed attempt so a retry may process
	// the message at once. It never removes a done record.
	Abort(ctx context.Context, id string) error
}

// ClaimReporter is implemented by the SDK's stores: ClaimDuration returns
// how long a claim made by Begin lives (the configured claim TTL). The
// consumer uses it to keep a handler's run below the claim it holds, since a
// handler that outlives its claim may run concurrently with a second
// delivery of its message.
type ClaimReporter interface {
	ClaimDuration() time.Duration
}

// Defaults for the store configurations.
const (
	// DefaultClaimTTL is how long a claim lives. It bounds how long a
	// message waits after its consumer crashed mid-handler, and must exceed
	// the longest handler run: five minutes errs on the side of never running
	// one message twice at once.
	DefaultClaimTTL = 5 * time.Minute
	// DefaultRetention is how long done records are kept (L17): longer than
	// any redelivery can plausibly come, short enough to keep the store small.
	DefaultRetention = 7 * 24 * time.Hour
)

// ErrEmptyID is returned when a message ID is empty: such a message cannot be
// deduplicated.
var ErrEmptyID = errors.New("idempotency: empty message ID")

// ErrClaimLost is returned (wrapped) by PostgresStore.DoneTx when the
// caller's claim is gone: it expired and another consumer claimed the ID, or
// the ID is done already. Roll the transaction back: committing would apply
// the message a second time.
var ErrClaimLost = errors.New("idempotency: claim lost (expired and taken over, or already done)")

func orDefault(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}
