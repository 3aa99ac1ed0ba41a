package rabbitmq

import (
	"context"
	"fmt"
	"strconv"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/reliable-go/reliable"
)

// Headers that [Subscriber.DeadLetter] adds to a dead-lettered message, next
// to the message's own ce_ and application headers. They follow the Kafka
// adapter's names, so tools read both brokers' dead letters alike.
const (
	// HeaderDeadLetterPrefix starts the name of every header below.
	HeaderDeadLetterPrefix = "dlt_"
	// HeaderDeadLetterCause is the error that made the message poison.
	HeaderDeadLetterCause = "dlt_cause"
	// HeaderDeadLetterTopic is the topic (exchange) the message was consumed
	// from; a replay publishes there.
	HeaderDeadLetterTopic = "dlt_original_topic"
	// HeaderDeadLetterQueue is the queue it was consumed from (a shard queue
	// on a sharded topology).
	HeaderDeadLetterQueue = "dlt_original_queue"
	// HeaderDeadLetterAttempts is how often it was delivered
	// (DeliveryInfo.Attempt), in decimal.
	HeaderDeadLetterAttempts = "dlt_attempts"
	// HeaderDeadLetterGroup is the consumer group that gave up on it.
	HeaderDeadLetterGroup = "dlt_group"
	// HeaderDeadLetterTime is when it was dead-lettered, RFC 3339 in UTC.
	HeaderDeadLetterTime = "dlt_time"
)

// maxCauseBytes bounds the cause header: an error that embeds a payload must
// not make the dead letter's header frame too large to send.
const maxCauseBytes = 4 << 10

// DeadLetter publishes msg to the subscriber's group's dead-letter queue
// (see [DeadLetterQueueName]): to topic's dead-letter exchange, persistent,
// mandatory, with a publisher confirm, on its own channel of the
// subscriber's connection. It returns nil only once the broker confirmed
// the message. The dead letter keeps msg's ID (message-id and ce_id), key,
// type, time, payload and headers, and adds the HeaderDeadLetter* headers
// naming cause, the original topic and queue, the group, the attempts and
// the time. It works for sharded topologies too: every shard dead-letters
// into the group's one dead-letter queue.
//
// Ack the delivery only after DeadLetter returned nil; on an error, leave it
// unsettled or nack it so that it is not lost. A dead letter no queue takes
// (the dead-letter queue was deleted) fails with reliable.ErrUnroutable, a
// missing dead-letter exchange with reliable.ErrUnknownTopic;
// fields AMQP cannot carry with a *reliable.InvalidMessageError (the cause
// header is truncated to 4 KiB first). When ctx ends first, DeadLetter
// returns ctx's error and the message may or may not have been written.
func (s *Subscriber) DeadLetter(ctx context.Context, msg *reliable.Message, cause error) error {
	if msg == nil {
		return &reliable.InvalidMessageError{Problems: []string{"message is nil"}}
	}
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return reliable.ErrClosed
	}
	dl := s.deadLetterMessage(msg, cause)
	if err := dl.Validate(); err != nil {
		return err
	}
	if err := checkWire(dl, s.cm.frameMax()); err != nil {
		return err
	}
	pub := toPublishing(dl)
	if msg.Key == "" {
		// The routing key of a dead letter is the dead-letter queue's
		// binding, not the key: keep an empty key empty when it is read.
		pub.Headers[reliable.HeaderKey] = ""
	}
	if err := s.cm.waitUnblocked(ctx); err != nil {
		return fmt.Errorf("rabbitmq: dead-letter message %q: %w", msg.ID, err)
	}
	conn, _, err := s.cm.connection(ctx)
	if err != nil {
		return fmt.Errorf("rabbitmq: dead-letter message %q: %w", msg.ID, err)
	}
	name := s.cfg.prefix() + dl.Topic // the broker's name of the topic (L07)
	exchange, routing := deadLetterExchangeName(name), QueueName(name, s.group)
	// The socket write cannot be interrupted: run it aside so that ctx
	// bounds the call even on a stalled connection.
	done := make(chan error, 1)
	finished := make(chan struct{})
	var pc *pubChan
	go func() {
		defer close(finished)
		done <- s.sendDeadLetter(ctx, conn, &pc, exchange, routing, dl, pub)
	}()
	select {
	case err = <-done:
	case <-ctx.Done():
		err = ctx.Err()
	}
	go func() {
		<-finished // the writer is done with its channel
		if pc != nil {
			_ = pc.ch.Close()
		}
	}()
	if err != nil {
		return fmt.Errorf("rabbitmq: dead-letter message %q to %s: %w", msg.ID, DeadLetterQueueName(name, s.group), err)
	}
	return nil
}

// sendDeadLetter opens a confirm channel (left in *pcp for the caller to
// close), publishes the dead letter and waits for its confirm.
func (s *Subscriber) sendDeadLetter(ctx context.Context, conn *amqp.Connection, pcp **pubChan,
	exchange, routing string, dl *reliable.Message, pub amqp.Publishing) error {
	pc, err := openPubChan(conn, func(*amqp.Error) {})
	if err != nil {
		return err
	}
	*pcp = pc
	// Publishing to a missing exchange would only close the channel, an
	// outcome indistinguishable from a lost confirm: ask first, so that a
	// missing dead-letter exchange is reported as such, for good.
	if err := pc.ch.ExchangeDeclarePassive(exchange, amqp.ExchangeDirect, true, false, false, false, nil); err != nil {
		return fmt.Errorf("dead-letter exchange %q: declare the group's topology (rabbitmq.Declare): %w", exchange, classify(err))
	}
	dc, err := pc.ch.PublishWithDeferredConfirmWithContext(ctx, exchange, routing, true, false, pub)
	if err != nil {
		return notConfirmed(fmt.Sprintf("send failed: %v", classify(err)))
	}
	select {
	case <-dc.Done():
	case <-ctx.Done():
		return ctx.Err()
	}
	if !dc.Acked() {
		return notConfirmed("broker did not confirm the dead letter (nack or channel closed)")
	}
	if ret, ok := pc.takeReturns([]*reliable.Message{dl}, []*amqp.DeferredConfirmation{dc})[0]; ok {
		return fmt.Errorf("exchange %q returned the dead letter (%d %s): no queue is bound for %q; declare the group (rabbitmq.Declare): %w",
			ret.Exchange, ret.ReplyCode, ret.ReplyText, ret.RoutingKey, reliable.ErrUnroutable)
	}
	return nil
}

// deadLetterMessage returns the dead letter of msg: its fields and headers
// plus the HeaderDeadLetter* ones.
func (s *Subscriber) deadLetterMessage(msg *reliable.Message, cause error) *reliable.Message {
	reason := "unknown"
	if cause != nil {
		reason = cause.Error()
	}
	if len(reason) > maxCauseBytes {
		reason = reason[:maxCauseBytes] + "...(truncated)"
	}
	h := make(map[string]string, len(msg.Headers)+6)
	for k, v := range msg.Headers {
		h[k] = v
	}
	h[HeaderDeadLetterCause] = reason
	h[HeaderDeadLetterTopic] = msg.Topic
	h[HeaderDeadLetterQueue] = msg.Delivery.Queue
	h[HeaderDeadLetterGroup] = s.group
	h[HeaderDeadLetterAttempts] = strconv.Itoa(msg.Delivery.Attempt)
	h[HeaderDeadLetterTime] = time.Now().UTC().Format(time.RFC3339)
	t := msg.Time
	if t.IsZero() {
		t = time.Now()
	}
	return &reliable.Message{ID: msg.ID, Topic: msg.Topic, Key: msg.Key, Type: msg.Type, Time: t, Headers: h, Payload: msg.Payload}
}
