package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/reliable-go/reliable"
)

// Subscriber consumes a consumer group's queue with manual acks (never
// auto-ack, L01): a delivery is acked only when the application calls
// Delivery.Ack, on its own (never multiple=true), and an unacked delivery
// goes back to the queue when the channel or connection ends, for this or
// another instance.
//
// The channel Subscribe returns stays open across reconnects: after a lost
// connection, a channel error or a broker-side consumer cancel (the queue
// was deleted), the subscriber reconnects with backoff, redeclares its
// queues and consumes again. Deliveries received before such a break cannot
// be acked any more (their delivery tags belonged to the old channel): Ack
// and Nack of such a stale delivery do nothing, and the broker redelivers
// the message, flagged Redelivered.
//
// A Subscriber is safe for concurrent use.
type Subscriber struct {
	cm    *connManager
	cfg   subscriberConfig
	group string

	mu      sync.Mutex
	closed  bool
	done    chan struct{}
	closing context.Context // done once Close began
	// stopClosing cancels closing.
	stopClosing context.CancelFunc
	wg          sync.WaitGroup

	stale       atomic.Int64 // acks and nacks dropped because their channel was gone
	subscribing atomic.Int32 // Subscribe calls declaring their queues
}

var _ reliable.Subscriber = (*Subscriber)(nil)

// subscribeDeclareTimeout bounds how long Subscribe retries declaring its
// queues while the broker is unreachable or starting.
const subscribeDeclareTimeout = 30 * time.Second

// NewSubscriber connects to the broker at url as a member of consumer group
// group: each Subscribe consumes group's queue of the topic, shared with the
// group's other instances. The queue has a single active consumer, so one
// instance receives its messages at a time and the others stand by (per-key
// order); shard the topology to spread a group over instances. It fails at
// once with an error matching reliable.ErrNotAuthorized when the broker
// refuses the credentials.
func NewSubscriber(url, group string, opts ...SubscriberOption) (*Subscriber, error) {
	cfg, err := newSubscriberConfig(opts)
	if err != nil {
		return nil, err
	}
	if group == "" {
		return nil, &reliable.ConfigError{Component: "rabbitmq subscriber", Problems: []string{"group is empty"}}
	}
	cm, err := newConnManager(url, &cfg.common, "subscriber")
	if err != nil {
		return nil, err
	}
	s := &Subscriber{cm: cm, cfg: cfg, group: group, done: make(chan struct{})}
	s.closing, s.stopClosing = context.WithCancel(context.Background())
	return s, nil
}

// StaleSettlements returns how many Ack and Nack calls were dropped because
// the delivery's channel had broken or been replaced since it was
// delivered. Their messages are redelivered.
func (s *Subscriber) StaleSettlements() int64 { return s.stale.Load() }

// Subscribe declares the group's queues of topic (topic's exchange must
// exist: otherwise the error matches reliable.ErrUnknownTopic) and consumes
// them. A queue that exists with other arguments (declared by an older
// version) fails with a *QueueArgumentsError. The returned channel closes
// when ctx ends, when the subscriber is closed, when the broker refuses the
// credentials after a reconnect, or when a queue recreated meanwhile has
// other arguments.
func (s *Subscriber) Subscribe(ctx context.Context, topic string) (<-chan *reliable.Delivery, error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, reliable.ErrClosed
	}
	s.wg.Add(1)
	s.mu.Unlock()
	var p reliable.Problems
	p.Addf(topic == "", "topic is empty")
	name := s.cfg.prefix() + topic // the broker's name of topic (L07)
	s.cfg.topology.checkNames(&p, name, s.group)
	if err := p.Err("rabbitmq subscribe"); err != nil {
		s.wg.Done()
		return nil, err
	}
	sub := &subscription{
		s:     s,
		topic: topic,
		name:  name,
		out:   make(chan *reliable.Delivery),
		log:   s.cm.log.With(slog.String("topic", topic), slog.String("group", s.group)),
	}
	sub.queues, sub.standby = s.cfg.topology.queues(name, s.group, s.cfg.shards)
	if s.cfg.standby < 0 {
		sub.standby = nil
	}
	// Retry transient failures (a broker still starting) for a while; a
	// subscriber whose queue cannot be declared reports it.
	s.subscribing.Add(1)
	defer s.subscribing.Add(-1)
	dctx, cancel := context.WithTimeout(ctx, subscribeDeclareTimeout)
	// Close must not wait for the declare timeout.
	unhook := context.AfterFunc(s.closing, cancel)
	err := retryTransient(dctx, s.cfg.backoff, func() error {
		conn, _, err := s.cm.connection(dctx)
		if err != nil {
			return err
		}
		return withChannel(dctx, conn, func(ch *amqp.Channel) error {
			return s.cfg.topology.declareGroup(ch, name, s.group)
		})
	})
	unhook()
	cancel()
	if err != nil {
		s.wg.Done()
		if s.closing.Err() != nil && ctx.Err() == nil {
			err = fmt.Errorf("%w: %w", reliable.ErrClosed, err)
		}
		return nil, fmt.Errorf("rabbitmq: subscribe to %q as group %q: %w", topic, s.group, err)
	}
	go sub.run(ctx)
	return sub.out, nil
}

// Close stops every subscription and closes the connection. Unsettled
// deliveries go back to their queues.
func (s *Subscriber) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.done)
	s.stopClosing()
	s.mu.Unlock()
	// Subscriptions stop at once, unless one is stuck in a call a stalled
	// connection never answers: closing the connection ends that call.
	stopped := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(closeDeadline):
	}
	s.cm.close()
	<-stopped
	return nil
}

// subscription is one Subscribe call: it consumes its queues on one channel
// at a time, replacing the channel whenever it breaks.
type subscription struct {
	s       *Subscriber
	topic   string   // the application's name
	name    string   // the broker's: topic with the environment prefix
	queues  []string // consumed at once
	standby []string // consumed after the standby delay
	out     chan *reliable.Delivery
	log     *slog.Logger
	gen     uint64
}

// consumeChan is one channel generation of a subscription. Deliveries keep a
// pointer to it; once it is dead their acks are dropped.
type consumeChan struct {
	ch         *amqp.Channel
	gen        uint64
	dead       atomic.Bool
	lastSettle atomic.Int64 // unix nanoseconds of the last ack or nack sent
}

// settleGrace is how long a channel stays open after its last ack or nack
// when the subscription ends. A quorum queue's client in the broker sends
// at most 32 settlements ahead of the Raft log and buffers the rest until
// earlier ones are applied (milliseconds); closing the channel meanwhile
// drops the buffered ones, and their messages, although acked, come again
// (seen on RabbitMQ 3.10: 7 of 40 acked just before Close).
const settleGrace = 250 * time.Millisecond

// waitSettled waits until settleGrace has passed since the last settlement
// sent on cc, or stop closes.
func (cc *consumeChan) waitSettled(stop <-chan struct{}) {
	last := cc.lastSettle.Load()
	if last == 0 {
		return
	}
	wait := time.Until(time.Unix(0, last).Add(settleGrace))
	if wait <= 0 {
		return
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
	case <-stop:
	}
}

func (sub *subscription) run(ctx context.Context) {
	s := sub.s
	defer s.wg.Done()
	defer close(sub.out)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-s.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	failures := 0
	for first := true; ; first = false {
		healthy, err := sub.consume(ctx, !first)
		if ctx.Err() != nil {
			return
		}
		var qae *QueueArgumentsError
		if fatal(err) || errors.Is(err, reliable.ErrClosed) || errors.As(err, &qae) {
			// A queue redeclared by an older version after a break: never
			// consume it as it is.
			sub.log.Error("subscription ended: cannot reconnect", slog.String("error", err.Error()))
			return
		}
		if healthy {
			failures = 0
		}
		failures++
		sub.log.Warn("subscription interrupted, resuming", slog.Int("attempt", failures), slog.String("error", err.Error()))
		if reliable.Sleep(ctx, s.cfg.backoff.Delay(failures)) != nil {
			return
		}
	}
}

// consume opens a channel, consumes the queues and forwards deliveries until
// the channel breaks, a consumer is cancelled by the broker, or ctx ends.
// redeclare declares the queues again first (after a break they may have
// been deleted). healthy reports that consuming had started.
func (sub *subscription) consume(ctx context.Context, redeclare bool) (healthy bool, err error) {
	s := sub.s
	conn, _, err := s.cm.connection(ctx)
	if err != nil {
		return false, err
	}
	if redeclare {
		err := withChannel(ctx, conn, func(ch *amqp.Channel) error {
			return s.cfg.topology.declareGroup(ch, sub.name, s.group)
		})
		if err != nil {
			return false, err
		}
	}
	ch, err := conn.Channel()
	if err != nil {
		return false, fmt.Errorf("open channel: %w", classify(err))
	}
	sub.gen++
	cc := &consumeChan{ch: ch, gen: sub.gen}
	var fwd sync.WaitGroup
	stop := make(chan struct{})
	defer func() {
		// Mark dead before closing: an Ack racing with the close is then
		// dropped here instead of failing inside the library. Closing the
		// channel closes the delivery channels the forwarders range over.
		cc.dead.Store(true)
		if !ch.IsClosed() {
			// Let the broker pass on settlements it buffered (see
			// settleGrace), unless the connection is being closed for good.
			cc.waitSettled(s.cm.done)
		}
		_ = ch.Close()
		close(stop)
		fwd.Wait()
	}()
	closes := ch.NotifyClose(make(chan *amqp.Error, 1))
	// Per-consumer prefetch (global=false): global QoS is a channel error on
	// quorum queues.
	if err := ch.Qos(s.cfg.prefetch, 0, false); err != nil {
		return false, fmt.Errorf("qos: %w", classify(err))
	}
	type tagged struct {
		d     amqp.Delivery
		queue string
	}
	in := make(chan tagged)
	ended := make(chan string, len(sub.queues)+len(sub.standby)) // queue whose consumer ended
	consumers := 0
	startConsumer := func(q string) error {
		tag := fmt.Sprintf("reliable-%s-%d-%d", s.group, sub.gen, consumers)
		consumers++
		// Not ConsumeWithContext: its basic.cancel when ctx ends would let a
		// single-active-consumer queue activate the next consumer while
		// this one still holds unacked deliveries, which then come back
		// after newer ones (seen on 3.10 quorum queues). Closing the
		// channel returns them first.
		deliveries, err := ch.Consume(q, tag, false, false, false, false, nil)
		if err != nil {
			return fmt.Errorf("consume %q: %w", q, classify(err))
		}
		fwd.Add(1)
		go func() {
			defer fwd.Done()
			for d := range deliveries {
				select {
				case in <- tagged{d, q}:
				case <-stop:
					return
				}
			}
			ended <- q
		}()
		return nil
	}
	for _, q := range sub.queues {
		if err := startConsumer(q); err != nil {
			return false, err
		}
	}
	var standby <-chan time.Time
	if len(sub.standby) > 0 {
		t := time.NewTimer(s.cfg.standby)
		defer t.Stop()
		standby = t.C
	}
	for {
		select {
		case t := <-in:
			if err := sub.forward(ctx, cc, t.d, t.queue); err != nil {
				return true, err
			}
		case <-standby:
			// Register on the other shards: single active consumer keeps
			// them with their current consumers, and hands them to this
			// one when those stop.
			for _, q := range sub.standby {
				if err := startConsumer(q); err != nil {
					return true, err
				}
			}
		case q := <-ended:
			if ctx.Err() != nil {
				return true, ctx.Err()
			}
			if ch.IsClosed() {
				// The channel broke; its error follows on closes.
				if e := <-closes; e != nil {
					return true, fmt.Errorf("channel closed: %w", classify(e))
				}
				return true, errors.New("channel closed")
			}
			// The library closes a consumer's delivery channel on a broker
			// basic.cancel (queue deleted) without any channel error
			// (PITFALLS B3): recover instead of ending silently.
			return true, fmt.Errorf("broker cancelled the consumer of queue %q (was it deleted?)", q)
		case e := <-closes:
			if e == nil {
				return true, errors.New("channel closed")
			}
			return true, fmt.Errorf("channel closed: %w", classify(e))
		case <-ctx.Done():
			return true, ctx.Err()
		}
	}
}

// forward hands one delivery to the application, or settles it at once when
// the environment check refuses it.
func (sub *subscription) forward(ctx context.Context, cc *consumeChan, d amqp.Delivery, queue string) error {
	s := sub.s
	msg := fromDelivery(&d, sub.topic, queue)
	if p := s.cfg.prefix(); p != "" {
		// The exchange's name carries the environment; the application's
		// topic does not.
		msg.Topic = strings.TrimPrefix(msg.Topic, p)
	}
	if err := reliable.CheckEnvironment(msg, s.cfg.environment); err != nil {
		// L07: never hand a message of another environment to the
		// application. Rejecting without requeue dead-letters it.
		sub.log.Error("rejecting message to the dead-letter queue", slog.String("message_id", msg.ID), slog.String("reason", err.Error()))
		if rerr := cc.ch.Reject(d.DeliveryTag, false); rerr != nil {
			return fmt.Errorf("reject: %w", rerr)
		}
		return nil
	}
	del := reliable.NewDelivery(msg, &acker{s: s, cc: cc, tag: d.DeliveryTag})
	select {
	case sub.out <- del:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// acker settles one delivery on the channel generation that delivered it.
type acker struct {
	s   *Subscriber
	cc  *consumeChan
	tag uint64
}

// Ack acks the delivery's tag alone (multiple=false). When the delivery's
// channel has been replaced it does nothing: the tag would belong to another
// message on the new channel, or draw a 406 PRECONDITION_FAILED (PITFALLS
// B3). The broker redelivers such a message. The same holds when the ack
// cannot be written because the connection just broke: amqp091-go's Ack
// fails only when the channel or its connection is gone.
func (a *acker) Ack(_ context.Context, d *reliable.Delivery) error {
	return a.settle(d, "ack", func() error { return a.cc.ch.Ack(a.tag, false) })
}

// Nack requeues the delivery. On a quorum queue each requeue counts towards
// the delivery limit, past which the message is dead-lettered. Stale
// deliveries are dropped as in Ack.
func (a *acker) Nack(_ context.Context, d *reliable.Delivery) error {
	return a.settle(d, "nack", func() error { return a.cc.ch.Nack(a.tag, false, true) })
}

// Stale reports whether the delivery's channel is gone (reliable.StaleReporter):
// the broker has requeued the message for this or another instance, so the
// consumer pipeline does not start handling it and releases one it holds.
func (a *acker) Stale(*reliable.Delivery) bool {
	return a.cc.dead.Load() || a.cc.ch.IsClosed()
}

func (a *acker) settle(d *reliable.Delivery, op string, send func() error) error {
	if a.cc.dead.Load() {
		a.dropped(d, op, nil)
		return nil
	}
	if err := send(); err != nil {
		a.cc.dead.Store(true)
		a.dropped(d, op, err)
		return nil
	}
	a.cc.lastSettle.Store(time.Now().UnixNano())
	return nil
}

func (a *acker) dropped(d *reliable.Delivery, op string, err error) {
	a.s.stale.Add(1)
	attrs := []any{slog.String("op", op), slog.String("message_id", d.Message.ID),
		slog.String("generation", strconv.FormatUint(a.cc.gen, 10))}
	if err != nil {
		attrs = append(attrs, slog.String("error", err.Error()))
	}
	a.s.cm.log.Debug("dropped settlement of a delivery whose channel is gone; the broker redelivers it", attrs...)
}

// ReportsStale reports true: a delivery's Stale turns true once its channel is
// gone (the queue may then have another active consumer), so consumer.Consumer
// may keep the retry table's blocked keys in memory (consumer.StaleReporting).
func (s *Subscriber) ReportsStale() bool { return true }
