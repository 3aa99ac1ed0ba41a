package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"strconv"

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
		return fmt.Errorf("declare dead-letter queue %q: %w", dlq, classify(err))
	}
	if err := ch.QueueBind(dlq, base, dlx, false, nil); err != nil {
		return fmt.Errorf("bind dead-letter queue %q: %w", dlq, classify(err))
	}
	args := t.queueArgs(topic, base)
	if t.Shards <= 1 {
		if _, err := ch.QueueDeclare(base, true, false, false, false, args); err != nil {
			return fmt.Errorf("declare queue %q: %w", base, classify(err))
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
	args["x-single-active-consumer"] = true
	for i := 0; i < t.Shards; i++ {
		q := ShardQueueName(topic, group, i)
		if _, err := ch.QueueDeclare(q, true, false, false, false, args); err != nil {
			return fmt.Errorf("declare shard queue %q: %w", q, classify(err))
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
// Declare fails when an existing queue has other arguments (another
// Topology): RabbitMQ cannot change a queue's arguments in place.
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
			if err := declareExchange(ch, topic); err != nil {
				return err
			}
			for _, g := range groups {
				if err := c.topology.declareGroup(ch, topic, g); err != nil {
					return err
				}
			}
			return nil
		})
	})
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
// ctx ends first, the channel is closed to unblock f and ctx's error is
// returned.
func withChannel(ctx context.Context, conn *amqp.Connection, f func(*amqp.Channel) error) error {
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("rabbitmq: open channel: %w", classify(err))
	}
	done := make(chan error, 1)
	go func() { done <- f(ch) }()
	select {
	case err := <-done:
		_ = ch.Close()
		if err != nil {
			return fmt.Errorf("rabbitmq: %w", err)
		}
		return nil
	case <-ctx.Done():
		_ = ch.Close()
		return fmt.Errorf("rabbitmq: %w", ctx.Err())
	}
}
