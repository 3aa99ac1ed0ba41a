package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/reliable-go/reliable"
)

// QueueType is the RabbitMQ queue type of consumer-group queues.
type QueueType string

const (
	// Quorum queues replicate over the cluster's nodes (Raft), so a node
	// failure loses no confirmed message (L22), and they count deliveries,
	// which lets a poison message be dead-lettered after DeliveryLimit
	// attempts.
	Quorum QueueType = "quorum"
	// Classic queues live on one node. They have no delivery limit: a poison
	// message that is always nacked is redelivered forever.
	Classic QueueType = "classic"
)

// DefaultDeliveryLimit is the number of times a quorum queue redelivers a
// message that was nacked or left unacked by a dying consumer before it
// dead-letters it. RabbitMQ 4.0 uses the same default; 3.x has none, so
// without it a poison message loops forever.
const DefaultDeliveryLimit = 20

// Topology says how the SDK declares a topic's queues. The zero value is the
// durable default: quorum queues, a dead-letter queue per group, at-least-once
// dead-lettering, a delivery limit of DefaultDeliveryLimit, no sharding.
//
// Names, for topic T and consumer group G:
//
//	exchange T                 durable topic exchange; publishers send here,
//	                           with the message key as routing key
//	queue T.G                  durable queue of group G, bound with "#"
//	exchange T.dlx             durable direct dead-letter exchange
//	queue T.G.dlq              G's dead-letter queue
//
// Every group queue has a single active consumer: one instance consumes it,
// the others stand by (per-key order with any number of instances).
//
// With Shards = N > 1, group G instead gets a consistent-hash exchange T.G.shards
// bound to T, and N queues T.G.0 ... T.G.(N-1), each with a single active
// consumer: every key hashes to one queue, so its messages keep their order
// while N consumers work in parallel (L08, L12).
type Topology struct {
	// QueueType of group queues. Defaults to Quorum.
	QueueType QueueType
	// DeliveryLimit is how often a quorum queue delivers a message before
	// dead-lettering it (a poison message). Defaults to DefaultDeliveryLimit;
	// ignored by classic queues, which have no such limit.
	DeliveryLimit int
	// Shards, when above 1, shards each group's queue into this many
	// single-active-consumer queues behind a consistent-hash exchange. The
	// broker needs the rabbitmq_consistent_hash_exchange plugin.
	Shards int
	// ExtraQueueArgs are added to the arguments of each group queue, for
	// example "x-max-length". The SDK's own arguments take precedence.
	ExtraQueueArgs amqp.Table
}

func (t Topology) withDefaults() Topology {
	if t.QueueType == "" {
		t.QueueType = Quorum
	}
	if t.DeliveryLimit == 0 {
		t.DeliveryLimit = DefaultDeliveryLimit
	}
	if t.Shards < 1 {
		t.Shards = 1
	}
	return t
}

func (t Topology) validate(p *reliable.Problems) {
	p.Addf(t.QueueType != "" && t.QueueType != Quorum && t.QueueType != Classic,
		"QueueType %q is neither %q nor %q", t.QueueType, Quorum, Classic)
	p.Addf(t.DeliveryLimit < 0, "DeliveryLimit is %d, must be positive", t.DeliveryLimit)
	p.Addf(t.Shards < 0, "Shards is %d, must be 0 (no sharding) or positive", t.Shards)
	p.Addf(t.Shards > 1000, "Shards is %d, more than 1000 queues per group", t.Shards)
}

// checkNames records a problem when a name the topology derives from topic
// and group is longer than an AMQP short string (amqp091-go would fail to
// encode the declare and shut the whole connection down) or not UTF-8 (the
// broker would close the connection).
func (t Topology) checkNames(p *reliable.Problems, topic, group string) {
	names := []string{ExchangeName(topic), deadLetterExchangeName(topic)}
	if group != "" {
		names = append(names, DeadLetterQueueName(topic, group), shardExchangeName(topic, group))
		if t.Shards > 1 {
			names = append(names, ShardQueueName(topic, group, t.Shards-1))
		}
	}
	for _, n := range names {
		if !utf8.ValidString(n) {
			// The broker closes the connection (501 FRAME_ERROR) on it.
			p.Addf(true, "name %q is not valid UTF-8: RabbitMQ names must be", n)
			return
		}
		if len(n) > maxShortString {
			p.Addf(true, "name %.40q... is %d bytes (topic %d, group %d): RabbitMQ names hold at most %d bytes",
				n, len(n), len(topic), len(group), maxShortString)
			return
		}
	}
}

// ExchangeName returns the exchange that messages of topic are published to.
func ExchangeName(topic string) string { return topic }

// QueueName returns the queue of consumer group on topic (without sharding).
func QueueName(topic, group string) string { return topic + "." + group }

// ShardQueueName returns shard i's queue of group on a sharded topic.
func ShardQueueName(topic, group string, i int) string {
	return QueueName(topic, group) + "." + strconv.Itoa(i)
}

// DeadLetterQueueName returns the queue where group's dead-lettered messages
// of topic go: poison messages past the delivery limit and messages a
// subscriber rejected.
func DeadLetterQueueName(topic, group string) string { return QueueName(topic, group) + ".dlq" }

func deadLetterExchangeName(topic string) string { return topic + ".dlx" }

func shardExchangeName(topic, group string) string { return QueueName(topic, group) + ".shards" }

// queues returns the queue names a subscriber of group consumes at once
// (primary) and after the standby delay: without sharding the group's
// queue; with sharding the primary shards and the others, or every shard at
// once when primary is empty.
func (t Topology) queues(topic, group string, primary []int) (first, standby []string) {
	if t.Shards <= 1 {
		return []string{QueueName(topic, group)}, nil
	}
	isPrimary := make(map[int]bool, len(primary))
	for _, i := range primary {
		if !isPrimary[i] {
			isPrimary[i] = true
			first = append(first, ShardQueueName(topic, group, i))
		}
	}
	for i := 0; i < t.Shards; i++ {
		if isPrimary[i] {
			continue
		}
		if len(primary) == 0 {
			first = append(first, ShardQueueName(topic, group, i))
		} else {
			standby = append(standby, ShardQueueName(topic, group, i))
		}
	}
	return first, standby
}

// queueArgs returns the arguments of a group queue that dead-letters to
// deadLetterKey on topic's dead-letter exchange.
func (t Topology) queueArgs(topic, deadLetterKey string) amqp.Table {
	args := amqp.Table{}
	for k, v := range t.ExtraQueueArgs {
		args[k] = v
	}
	args["x-queue-type"] = string(t.QueueType)
	// A single active consumer on every queue a group consumes: the broker
	// delivers to one consumer at a time, so a key's events are never handled
	// by two instances at once (L08, L12); the others stand by and take over
	// when it goes, after its unacked deliveries were returned.
	args["x-single-active-consumer"] = true
	args["x-dead-letter-exchange"] = deadLetterExchangeName(topic)
	args["x-dead-letter-routing-key"] = deadLetterKey
	if t.QueueType == Quorum {
		args["x-delivery-limit"] = int64(t.DeliveryLimit)
		// At-least-once dead-lettering (RabbitMQ 3.10+): the message leaves
		// the queue only once the dead-letter queue confirmed it. It requires
		// reject-publish overflow.
		args["x-dead-letter-strategy"] = "at-least-once"
		args["x-overflow"] = "reject-publish"
	}
	return args
}

// declareExchange declares topic's exchange.
func declareExchange(ch *amqp.Channel, topic string) error {
	if err := ch.ExchangeDeclare(ExchangeName(topic), amqp.ExchangeTopic, true, false, false, false, nil); err != nil {
		return fmt.Errorf("declare exchange %q: %w", ExchangeName(topic), classify(err))
	}
	return nil
}

// declareGroup declares group's queues on topic, its dead-letter exchange and
// queue, and the bindings. Topic's exchange must exist: a missing one is
// reliable.ErrUnknownTopic.
func (t Topology) declareGroup(ch *amqp.Channel, topic, group string) error {
	if err := ch.ExchangeDeclarePassive(ExchangeName(topic), amqp.ExchangeTopic, true, false, false, false, nil); err != nil {
		return fmt.Errorf("exchange %q of topic %q: %w", ExchangeName(topic), topic, classify(err))
	}
	dlx, dlq, base := deadLetterExchangeName(topic), DeadLetterQueueName(topic, group), QueueName(topic, group)
	if err := ch.ExchangeDeclare(dlx, amqp.ExchangeDirect, true, false, false, false, nil); err != nil {
		return fmt.Errorf("declare dead-letter exchange %q: %w", dlx, classify(err))
	}
	if _, err := ch.QueueDeclare(dlq, true, false, false, false, amqp.Table{"x-queue-type": string(t.QueueType)}); err != nil {
		return fmt.Errorf("declare dead-letter queue %q: %w", dlq, queueDeclareError(dlq, err))
	}
	if err := ch.QueueBind(dlq, base, dlx, false, nil); err != nil {
		return fmt.Errorf("bind dead-letter queue %q: %w", dlq, classify(err))
	}
	args := t.queueArgs(topic, base)
	if t.Shards <= 1 {
		if _, err := ch.QueueDeclare(base, true, false, false, false, args); err != nil {
			return fmt.Errorf("declare queue %q: %w", base, queueDeclareError(base, err))
		}
		if err := ch.QueueBind(base, "#", ExchangeName(topic), false, nil); err != nil {
			return fmt.Errorf("bind queue %q: %w", base, classify(err))
		}
		return nil
	}
	hx := shardExchangeName(topic, group)
	if err := ch.ExchangeDeclare(hx, "x-consistent-hash", true, false, false, false, nil); err != nil {
		return fmt.Errorf("declare consistent-hash exchange %q (is the rabbitmq_consistent_hash_exchange plugin enabled?): %w", hx, classify(err))
	}
	if err := ch.ExchangeBind(hx, "#", ExchangeName(topic), false, nil); err != nil {
		return fmt.Errorf("bind exchange %q: %w", hx, classify(err))
	}
	for i := 0; i < t.Shards; i++ {
		q := ShardQueueName(topic, group, i)
		if _, err := ch.QueueDeclare(q, true, false, false, false, args); err != nil {
			return fmt.Errorf("declare shard queue %q: %w", q, queueDeclareError(q, err))
		}
		// The binding key of a consistent-hash exchange is the queue's weight.
		if err := ch.QueueBind(q, "1", hx, false, nil); err != nil {
			return fmt.Errorf("bind shard queue %q: %w", q, classify(err))
		}
	}
	return nil
}

// Declare creates topic's exchange and, for each consumer group, its queues,
// dead-letter exchange and dead-letter queue, as described on [Topology].
// It is idempotent. Declare groups before publishing: a message published
// while no queue is bound is unroutable and fails with reliable.ErrUnroutable.
//
// Declare fails with a *QueueArgumentsError (matching
// reliable.ErrInvalidConfig) when an existing queue has other arguments:
// another Topology, or a group queue declared by a version of the SDK from
// before group queues had a single active consumer. RabbitMQ cannot change
// a queue's arguments in place; the error names the queue and the fix.
func Declare(ctx context.Context, url, topic string, groups []string, opts ...Option) error {
	var pc publisherConfig
	for _, o := range opts {
		if o != nil {
			o.applyPublisher(&pc)
		}
	}
	c := pc.common
	var p reliable.Problems
	p.Addf(topic == "", "topic is empty")
	for _, g := range groups {
		p.Addf(g == "", "a group name is empty")
	}
	c.validate(&p)
	name := c.prefix() + topic // the broker's name of topic (L07)
	for _, g := range append([]string{""}, groups...) {
		c.topology.withDefaults().checkNames(&p, name, g)
	}
	if err := p.Err("rabbitmq declare"); err != nil {
		return err
	}
	c.withDefaults()
	return retryTransient(ctx, c.backoff, func() error {
		conn, err := dial(ctx, url, &c)
		if err != nil {
			return err
		}
		defer conn.Close()
		return withChannel(ctx, conn, func(ch *amqp.Channel) error {
			if err := declareExchange(ch, name); err != nil {
				return err
			}
			for _, g := range groups {
				if err := c.topology.declareGroup(ch, name, g); err != nil {
					return err
				}
			}
			return nil
		})
	})
}

// QueueArgumentsError means a queue exists with other arguments than the
// ones the SDK declares it with, and RabbitMQ refused to redeclare it
// (PRECONDITION_FAILED). The SDK never keeps using such a queue: a group
// queue without x-single-active-consumer, as versions before it declared
// them, would hand one key's events to several instances at once. It matches
// reliable.ErrInvalidConfig, and wraps the broker's *amqp.Error.
//
// The fix is the operator's: stop the group's consumers, let the queue
// drain (or move its messages elsewhere, e.g. with a shovel), delete it
// (rabbitmqctl delete_queue NAME), and start the new version, whose Declare
// or Subscriber creates it again. A policy cannot set
// x-single-active-consumer. To keep consuming without a pause, declare the
// group under a new name, or switch to a sharded Topology (new queue names),
// and delete the old queue once it is empty.
type QueueArgumentsError struct {
	// Queue is the queue that exists with other arguments.
	Queue string
	// Err is the broker's refusal.
	Err error
}

func (e *QueueArgumentsError) Error() string {
	return fmt.Sprintf("rabbitmq: queue %q exists with other arguments than this version declares (%v); "+
		"RabbitMQ cannot change a queue's arguments in place and the SDK will not use it as it is: "+
		"stop the group's consumers, drain the queue (or move its messages), delete it "+
		"(rabbitmqctl delete_queue %s) and start again, which recreates it; "+
		"or migrate to a new queue (another group name or a sharded Topology) and delete this one once empty",
		e.Queue, e.Err, e.Queue)
}

// Unwrap returns the broker's error.
func (e *QueueArgumentsError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, reliable.ErrInvalidConfig) true.
func (e *QueueArgumentsError) Is(target error) bool { return target == reliable.ErrInvalidConfig }

// queueDeclareError classifies a failed declare of queue: inequivalent
// arguments become a *QueueArgumentsError. The refusal closes only the
// declaring channel, never the connection.
func queueDeclareError(queue string, err error) error {
	var ae *amqp.Error
	if errors.As(err, &ae) && ae.Code == amqp.PreconditionFailed && strings.Contains(ae.Reason, "inequivalent arg") {
		return &QueueArgumentsError{Queue: queue, Err: err}
	}
	return classify(err)
}

// retryTransient calls f until it succeeds, fails for good, or ctx ends.
// Declarations are idempotent, so repeating one is safe. Transient: a lost
// connection, and the INTERNAL_ERROR RabbitMQ answers for a quorum queue
// declared while the node is still starting.
func retryTransient(ctx context.Context, b reliable.Backoff, f func() error) error {
	for attempt := 1; ; attempt++ {
		err := f()
		if err == nil || !transient(err) || ctx.Err() != nil {
			return err
		}
		if reliable.Sleep(ctx, b.Delay(attempt)) != nil {
			return err
		}
	}
}

// transient reports whether repeating the operation may succeed.
func transient(err error) bool {
	var ce *reliable.ConfigError
	if fatal(err) || errors.Is(err, reliable.ErrUnknownTopic) || errors.Is(err, reliable.ErrClosed) ||
		errors.As(err, &ce) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var ae *amqp.Error
	if errors.As(err, &ae) {
		switch ae.Code {
		case amqp.ConnectionForced, amqp.InternalError, amqp.ResourceError, amqp.ChannelError:
			return true
		}
		return false // 406 inequivalent arguments and other refusals
	}
	return true // network errors, a closed channel
}

// withChannel runs f on a new channel of conn and closes the channel. When
// ctx ends first, ctx's error is returned at once and the channel is closed
// in the background, which unblocks f: opening a channel and declaring are
// RPCs that a blocked or stalled connection never answers.
func withChannel(ctx context.Context, conn *amqp.Connection, f func(*amqp.Channel) error) error {
	var mu sync.Mutex
	var ch *amqp.Channel
	abandoned := false
	done := make(chan error, 1)
	go func() {
		c, err := conn.Channel()
		if err != nil {
			done <- fmt.Errorf("open channel: %w", classify(err))
			return
		}
		mu.Lock()
		ch = c
		gone := abandoned
		mu.Unlock()
		if gone {
			_ = c.Close()
			return
		}
		err = f(c)
		_ = c.Close()
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("rabbitmq: %w", err)
		}
		return nil
	case <-ctx.Done():
		mu.Lock()
		abandoned = true
		c := ch
		mu.Unlock()
		if c != nil {
			go func() { _ = c.Close() }()
		}
		return fmt.Errorf("rabbitmq: %w", ctx.Err())
	}
}
