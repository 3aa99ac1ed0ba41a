package consumer

import (
	"sort"
	"time"
)

// BlockedKey is a key whose oldest waiting message keeps failing, so the
// key's later messages wait behind it. Without a retry table this is how a
// failing key keeps its order (L09); without a dead-letter path it is how a
// poison message waits for an operator instead of being skipped.
type BlockedKey struct {
	// Key is the message key (the order ID).
	Key string
	// MessageID is the message the key waits for.
	MessageID string
	// Since is when the key was reported blocked.
	Since time.Time
	// Attempts is how often the message was handled so far.
	Attempts int
	// LastError is the latest failure.
	LastError string
}

// Blocked returns the keys blocked now, oldest first: keys whose message
// failed Config.InlineAttempts times with no retry table to park it in, or
// failed permanently with no dead-letter path. Each stays blocked until its
// message succeeds, the consumer stops, or the partition or queue moves to
// another instance.
func (c *Consumer) Blocked() []BlockedKey {
	c.blockedMu.Lock()
	out := make([]BlockedKey, 0, len(c.blocked))
	for _, b := range c.blocked {
		out = append(out, *b)
	}
	c.blockedMu.Unlock()
	sort.Slice(out, func(i, k int) bool { return out[i].Since.Before(out[k].Since) })
	return out
}

func (c *Consumer) block(j *job, cause error) {
	c.blockedMu.Lock()
	defer c.blockedMu.Unlock()
	c.blocked[j] = &BlockedKey{Key: j.d.Message.Key, MessageID: j.d.Message.ID, Since: time.Now(),
		Attempts: j.attempt, LastError: cause.Error()}
}

func (c *Consumer) noteBlocked(j *job, cause error) {
	c.blockedMu.Lock()
	defer c.blockedMu.Unlock()
	if b := c.blocked[j]; b != nil {
		b.Attempts = j.attempt
		b.LastError = cause.Error()
	}
}

func (c *Consumer) unblock(j *job) {
	if !j.blocked {
		return
	}
	c.blockedMu.Lock()
	defer c.blockedMu.Unlock()
	delete(c.blocked, j)
}
