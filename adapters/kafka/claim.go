package kafka

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/IBM/sarama"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/ordering"
)

// groupHandler is the sarama.ConsumerGroupHandler of one subscription.
type groupHandler struct {
	sub   *Subscriber
	topic string // unprefixed, as the application named it
	out   chan<- *reliable.Delivery

	mu     sync.Mutex
	claims map[*claim]struct{} // of the current session
	stop   chan struct{}       // stops the session's committer
	wg     sync.WaitGroup
}

// wrap applies the subscriber's test hook, if any, to sess.
func (h *groupHandler) wrap(sess sarama.ConsumerGroupSession) sarama.ConsumerGroupSession {
	if h.sub.wrapSession != nil {
		return h.sub.wrapSession(sess)
	}
	return sess
}

// claim is the state of one partition for one session. Its deliveries
// settle through it; once revoked, their acks do nothing.
type claim struct {
	topic     string // Kafka name
	partition int32
	tracker   *ordering.Tracker // created with the first record

	backoff reliable.Backoff // spaces redeliveries of a nacked record

	mu          sync.Mutex
	revoked     bool
	outstanding int           // handed out, not settled
	marked      int64         // last offset passed to MarkOffset
	space       chan struct{} // signalled on every settle
	// retry receives nacked records once their backoff elapsed; ConsumeClaim
	// hands them out again. Its capacity is MaxInFlightPerPartition, the
	// most records a claim tracks, so a timer never waits for room.
	retry chan *acker
	done  chan struct{} // closed when ConsumeClaim returns
}

func (h *groupHandler) Setup(sess sarama.ConsumerGroupSession) error {
	sess = h.wrap(sess)
	h.mu.Lock()
	h.claims = make(map[*claim]struct{})
	h.stop = make(chan struct{})
	stop := h.stop
	h.mu.Unlock()
	h.wg.Add(1)
	go h.commitLoop(sess, stop)
	return nil
}

// Cleanup runs after every ConsumeClaim returned, while the member still
// belongs to the generation: the last chance to commit for this session.
func (h *groupHandler) Cleanup(sess sarama.ConsumerGroupSession) error {
	sess = h.wrap(sess)
	h.mu.Lock()
	close(h.stop)
	h.mu.Unlock()
	h.wg.Wait()
	sess.Commit()
	return nil
}

func (h *groupHandler) commitLoop(sess sarama.ConsumerGroupSession, stop chan struct{}) {
	defer h.wg.Done()
	t := time.NewTicker(h.sub.cfg.Consumer.CommitInterval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		h.mu.Lock()
		claims := make([]*claim, 0, len(h.claims))
		for c := range h.claims {
			claims = append(claims, c)
		}
		h.mu.Unlock()
		for _, c := range claims {
			c.mark(sess)
		}
		// Commit on every tick, not only when a mark advanced: sarama keeps
		// a partition's offset dirty until a commit of it succeeds (its
		// offset manager clears the flag only on a successful response), so
		// a commit that failed on a partition that has since gone idle is
		// retried here. With nothing dirty, sarama sends no request.
		sess.Commit()
	}
}

// mark passes the commit position to sarama when it advanced.
func (c *claim) mark(sess sarama.ConsumerGroupSession) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.tracker == nil {
		return false
	}
	pos := c.tracker.CommitPosition()
	if pos <= c.marked {
		return false
	}
	sess.MarkOffset(c.topic, c.partition, pos, "")
	c.marked = pos
	return true
}

func (h *groupHandler) ConsumeClaim(sess sarama.ConsumerGroupSession, sc sarama.ConsumerGroupClaim) error {
	sess = h.wrap(sess)
	cfg := h.sub.cfg.Consumer
	c := &claim{
		topic:     sc.Topic(),
		partition: sc.Partition(),
		backoff:   cfg.RedeliveryBackoff,
		marked:    sc.InitialOffset(),
		space:     make(chan struct{}, 1),
		retry:     make(chan *acker, cfg.MaxInFlightPerPartition),
		done:      make(chan struct{}),
	}
	h.mu.Lock()
	h.claims[c] = struct{}{}
	h.mu.Unlock()
	defer func() {
		close(c.done)
		h.release(sess, c)
		h.mu.Lock()
		delete(h.claims, c)
		h.mu.Unlock()
	}()

	ctx := sess.Context()
	tp := topicPartition{c.topic, c.partition}
	for {
		// Backpressure: a partition holds at most MaxInFlightPerPartition
		// uncommitted deliveries (L23). A nacked record is still tracked, so
		// its redelivery needs no room; it only waits for its backoff.
		records := sc.Messages()
		if c.full(cfg.MaxInFlightPerPartition) {
			records = nil
		}
		var a *acker
		select {
		case r, ok := <-records:
			if !ok {
				return nil
			}
			if !c.track(r.Offset) {
				// Offsets go backwards only if sarama misbehaves; never hand
				// out what the tracker cannot account for.
				h.sub.report(fmt.Errorf("kafka: %s/%d: offset %d is behind the tracked ones", c.topic, c.partition, r.Offset))
				return nil
			}
			a = &acker{c: c, rec: r, attempt: 1, redelivered: h.sub.noteDelivered(tp, r.Offset)}
		case a = <-c.retry:
		case <-c.space:
			continue // room again: look at the records channel
		case <-ctx.Done():
			return nil
		}

		msg := fromRecord(a.rec, h.topic)
		msg.Delivery = reliable.DeliveryInfo{
			Partition:   a.rec.Partition,
			Offset:      a.rec.Offset,
			Attempt:     a.attempt,
			Redelivered: a.redelivered,
			ReceivedAt:  time.Now(),
		}
		d := reliable.NewDelivery(msg, a)
		c.mu.Lock()
		c.outstanding++
		c.mu.Unlock()
		select {
		case h.out <- d:
		case <-ctx.Done():
			// Never handed out: it stays incomplete in the tracker, so the
			// commit stops before it.
			c.unsend()
			return nil
		}
	}
}

// full reports whether the claim tracks its maximum of uncommitted records.
func (c *claim) full(limit int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.tracker != nil && c.tracker.InFlight() >= limit
}

// track adds offset to the tracker, creating it with the first record.
func (c *claim) track(offset int64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.tracker == nil {
		c.tracker = ordering.NewTracker(offset)
	}
	return c.tracker.Track(offset) == nil
}

// release ends the claim: it waits for the in-flight deliveries (unless the
// subscriber is closing), marks the final commit position and commits, then
// makes later acks of this claim's deliveries no-ops.
func (h *groupHandler) release(sess sarama.ConsumerGroupSession, c *claim) {
	wait := h.sub.cfg.Consumer.DrainTimeout
	timer := time.NewTimer(wait)
	defer timer.Stop()
drain:
	for {
		c.mu.Lock()
		n := c.outstanding
		c.mu.Unlock()
		if n == 0 {
			break
		}
		select {
		case <-c.space:
		case <-h.sub.closing:
			break drain
		case <-timer.C:
			h.sub.log.Warn("kafka: partition revoked with deliveries still in flight; they will be delivered again",
				slog.String("topic", c.topic), slog.Int("partition", int(c.partition)),
				slog.Int("in_flight", n), slog.Duration("waited", wait))
			break drain
		}
	}
	c.mu.Lock()
	c.revoked = true
	c.mu.Unlock()
	if c.mark(sess) {
		sess.Commit()
	}
}

// unsend takes back a delivery that was never handed out.
func (c *claim) unsend() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.settle()
}

// settle records that a handed-out delivery was acked or nacked. The caller
// holds c.mu.
func (c *claim) settle() {
	c.outstanding--
	select {
	case c.space <- struct{}{}:
	default:
	}
}

// acker settles one delivery of a record.
type acker struct {
	c           *claim
	rec         *sarama.ConsumerMessage
	attempt     int
	redelivered bool
}

// Ack marks the delivery complete; its offset is committed once every earlier
// one of the partition is complete too. Acking a delivery of a revoked
// partition does nothing.
func (a *acker) Ack(_ context.Context, _ *reliable.Delivery) error {
	c := a.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.revoked {
		return nil
	}
	c.tracker.Complete(a.rec.Offset)
	c.settle()
	return nil
}

// Nack leaves the record incomplete, so no commit passes it, and hands it out
// again in the same claim after Consumer.RedeliveryBackoff, with Attempt+1.
// The partition's other deliveries and the other partitions carry on. When
// the claim ends first, the next owner of the partition reads the record
// again from the committed offset; nacking a stale delivery (see Stale) only
// releases it, so the revoke need not wait for it.
func (a *acker) Nack(_ context.Context, _ *reliable.Delivery) error {
	c := a.c
	c.mu.Lock()
	if c.revoked {
		c.mu.Unlock()
		return nil
	}
	c.settle()
	c.mu.Unlock()
	if a.stale() {
		return nil // the partition is being revoked: only stop the drain waiting for it
	}
	next := &acker{c: c, rec: a.rec, attempt: a.attempt + 1, redelivered: true}
	time.AfterFunc(c.backoff.Delay(a.attempt), func() {
		select {
		case c.retry <- next:
		case <-c.done:
		}
	})
	return nil
}

// Stale reports whether the delivery's claim ended: its partition is being
// revoked, or was, so another member will deliver it again from the
// committed offset (reliable.StaleReporter). The consumer pipeline does not
// start handling a stale delivery, and releases one it holds, so a revoke
// does not wait out Consumer.DrainTimeout for a key that waits for a retry.
func (a *acker) Stale(*reliable.Delivery) bool { return a.stale() }

func (a *acker) stale() bool {
	select {
	case <-a.c.done:
		return true
	default:
		return false
	}
}
