package kafka

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"time"

	"github.com/IBM/sarama"

	"github.com/reliable-go/reliable"
)

// Headers that [Subscriber.DeadLetter] adds to a dead-lettered record, next
// to the message's own ce_ and application headers. reliablectl reads them to
// list, inspect and replay a dead-letter topic.
const (
	// HeaderDeadLetterPrefix starts the name of every header below; replay
	// drops them.
	HeaderDeadLetterPrefix = "dlt_"
	// HeaderDeadLetterCause is the error that made the message poison.
	HeaderDeadLetterCause = "dlt_cause"
	// HeaderDeadLetterTopic is the Kafka name (environment prefix included)
	// of the topic the message was consumed from; replay publishes there.
	HeaderDeadLetterTopic = "dlt_original_topic"
	// HeaderDeadLetterPartition and HeaderDeadLetterOffset locate the
	// original record, in decimal.
	HeaderDeadLetterPartition = "dlt_original_partition"
	HeaderDeadLetterOffset    = "dlt_original_offset"
	// HeaderDeadLetterAttempts is how often the record was delivered
	// (DeliveryInfo.Attempt), in decimal.
	HeaderDeadLetterAttempts = "dlt_attempts"
	// HeaderDeadLetterGroup is the consumer group that gave up on it.
	HeaderDeadLetterGroup = "dlt_group"
	// HeaderDeadLetterTime is when it was dead-lettered, RFC 3339 in UTC.
	HeaderDeadLetterTime = "dlt_time"
)

// maxCauseBytes bounds the cause header: an error that embeds a payload must
// not make the dead-letter record too large to write.
const maxCauseBytes = 4 << 10

// minCauseBytes is the cause kept when the message is so close to
// Producer.MaxMessageBytes that the full cause does not fit.
const minCauseBytes = 200

// ErrNoDeadLetterTopic is returned by [Subscriber.DeadLetter] when
// Consumer.DeadLetterTopic is not set. It matches reliable.ErrInvalidConfig.
var ErrNoDeadLetterTopic = fmt.Errorf("kafka: Consumer.DeadLetterTopic is not set: %w", reliable.ErrInvalidConfig)

// DeadLetterEnabled reports whether Consumer.DeadLetterTopic is set, so that
// [Subscriber.DeadLetter] can be used.
func (s *Subscriber) DeadLetterEnabled() bool { return s.dlt != nil }

// DeadLetter publishes msg durably to Consumer.DeadLetterTopic: acks from all
// in-sync replicas, the idempotent producer, and the message's key, so it
// lands in the partition the Java client would choose. The record keeps the
// message's ID, key, type, time, payload and headers (the environment header
// included, as received) and adds the HeaderDeadLetter* headers naming cause,
// the original topic, partition and offset, the attempts, the group and the
// time.
//
// It retries a record that was not acknowledged until ctx ends, and returns
// nil only after the cluster acknowledged it; then the caller acks the
// delivery, and only then is its offset committed. A permanent failure
// (a record larger than Producer.MaxMessageBytes even with the cause cut to
// 200 bytes, the topic deleted, not authorized) is returned at once; the
// consumer pipeline then holds the message's key, visibly. Without a DeadLetterTopic it returns
// ErrNoDeadLetterTopic.
func (s *Subscriber) DeadLetter(ctx context.Context, msg *reliable.Message, cause error) error {
	if s.dlt == nil {
		return ErrNoDeadLetterTopic
	}
	if msg == nil {
		return &reliable.InvalidMessageError{Problems: []string{"message is nil"}}
	}
	// The dead-letter producer closes after the subscriptions (see Close),
	// so a handler still settling a delivery can dead-letter it; afterwards
	// sendOne fails with reliable.ErrClosed.
	backoff := reliable.Backoff{Initial: 100 * time.Millisecond, Max: 5 * time.Second}
	for attempt := 1; ; attempt++ {
		rec := s.deadLetterRecord(msg, cause, maxCauseBytes, time.Now())
		if recordSize(rec) > s.dlt.cfg.Producer.MaxMessageBytes {
			// A message near the limit: keep it whole, cut the cause.
			rec = s.deadLetterRecord(msg, cause, minCauseBytes, time.Now())
		}
		err := s.dlt.sendOne(ctx, rec, msg.ID)
		if err == nil {
			return nil
		}
		if reliable.IsPermanent(err) {
			return fmt.Errorf("kafka: dead letter %s to %s: %w", msg.ID, s.dltTopic, err)
		}
		s.log.Warn("kafka: dead-letter publish not confirmed, retrying",
			"message_id", msg.ID, "topic", s.dltTopic, "attempt", attempt, "error", err.Error())
		if serr := reliable.Sleep(ctx, backoff.Delay(attempt)); serr != nil {
			return fmt.Errorf("kafka: dead letter %s to %s: %w (last: %w)", msg.ID, s.dltTopic, serr, err)
		}
	}
}

// deadLetterRecord builds the dead-letter record of msg. It is built afresh
// for every attempt: sarama keeps state in a record it sent.
func (s *Subscriber) deadLetterRecord(msg *reliable.Message, cause error, maxCause int, now time.Time) *sarama.ProducerMessage {
	m := *msg
	m.Headers = maps.Clone(msg.Headers)
	if m.Headers == nil {
		m.Headers = map[string]string{}
	}
	why := "unknown"
	if cause != nil {
		why = cause.Error()
	}
	if len(why) > maxCause {
		why = why[:maxCause] + "…"
	}
	m.Headers[HeaderDeadLetterCause] = why
	m.Headers[HeaderDeadLetterTopic] = s.prefix + msg.Topic
	m.Headers[HeaderDeadLetterPartition] = strconv.FormatInt(int64(msg.Delivery.Partition), 10)
	m.Headers[HeaderDeadLetterOffset] = strconv.FormatInt(msg.Delivery.Offset, 10)
	m.Headers[HeaderDeadLetterAttempts] = strconv.Itoa(msg.Delivery.Attempt)
	m.Headers[HeaderDeadLetterGroup] = s.group
	m.Headers[HeaderDeadLetterTime] = now.UTC().Format(time.RFC3339Nano)
	if m.Time.IsZero() {
		m.Time = now
	}
	// env "": the environment header travels as received, so a message
	// dead-lettered for coming from another environment still says which.
	return toRecord(&m, s.dltTopic, "")
}

// sendOne sends one prepared record and waits for its acknowledgement. Unlike
// Publish it does not validate or restamp a message: a dead-letter record
// carries whatever a foreign producer sent.
func (p *Publisher) sendOne(ctx context.Context, rec *sarama.ProducerMessage, id string) error {
	size := recordSize(rec)
	if size > p.cfg.Producer.MaxMessageBytes {
		return &reliable.MessageTooLargeError{MessageID: id, Size: size, Max: p.cfg.Producer.MaxMessageBytes}
	}
	if p.closed.Load() {
		return errClosed
	}
	if !p.topics.known(rec.Topic) {
		if err := p.topics.check(ctx, rec.Topic); err != nil {
			return err
		}
	}
	b := &batch{errs: make([]error, 1), settled: make([]bool, 1), remaining: 1, done: make(chan struct{})}
	rec.Metadata = &inflight{id: id, size: size, max: p.cfg.Producer.MaxMessageBytes, b: b}
	if _, err := p.send(ctx, []*sarama.ProducerMessage{rec}); err != nil {
		return err
	}
	select {
	case <-b.done:
	case <-ctx.Done():
		return fmt.Errorf("kafka: stopped waiting for the acknowledgement: %w: %w", reliable.ErrNotConfirmed, ctx.Err())
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.errs[0]; err != nil {
		if errors.Is(err, reliable.ErrUnknownTopic) {
			p.topics.forgetIfUnknown([]reliable.MessageError{{MessageID: id, Err: err}})
		}
		return err
	}
	return nil
}
