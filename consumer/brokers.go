package consumer

import (
	"errors"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/adapters/kafka"
	"github.com/reliable-go/reliable/adapters/rabbitmq"
)

// NewKafka returns a consumer of cfg.Topic in the Kafka consumer group
// kcfg.Consumer.Group, with the Kafka adapter's durable defaults: auto-commit
// off, offsets committed only up to the first incomplete message (L04, L05).
// When cfg.Environment is empty it takes kcfg.Environment, so the consumer
// refuses other environments' messages (L07).
//
// When kcfg.Consumer.DeadLetterTopic is set and cfg.DeadLetter is not, poison
// messages go to that topic, with headers naming the cause and where they
// came from, and their offsets are committed after the topic confirmed them.
// Without a dead-letter path a poison message holds its key until an
// operator acts (see Config.DeadLetter); Kafka has no dead-letter policy of
// its own.
func NewKafka(kcfg kafka.Config, h reliable.Handler, cfg Config) (*Consumer, error) {
	if cfg.Environment == "" {
		cfg.Environment = kcfg.Environment
	}
	if err := precheck(h, cfg); err != nil {
		return nil, err
	}
	sub, err := kafka.NewSubscriber(kcfg)
	if err != nil {
		return nil, err
	}
	if cfg.DeadLetter == nil && sub.DeadLetterEnabled() {
		cfg.DeadLetter = sub
	}
	return newClosingOnError(sub, h, cfg)
}

// NewRabbitMQ returns a consumer of cfg.Topic as a member of group (the
// group's queue of the topic exchange, shared by the group's instances), with
// manual acks of each delivery only once complete (L01). On the default
// topology the group queue has a single active consumer: one instance
// consumes, the others stand by, so each key stays in order; shard the
// group (rabbitmq.Topology.Shards) to consume in parallel across instances.
//
// With neither cfg.RetryTable nor cfg.DeadLetter set, poison messages go to
// the group's dead-letter queue, confirmed, with headers naming the cause.
func NewRabbitMQ(url, group string, h reliable.Handler, cfg Config, opts ...rabbitmq.SubscriberOption) (*Consumer, error) {
	if err := precheck(h, cfg); err != nil {
		return nil, err
	}
	sub, err := rabbitmq.NewSubscriber(url, group, opts...)
	if err != nil {
		return nil, err
	}
	if cfg.DeadLetter == nil && cfg.RetryTable == nil {
		cfg.DeadLetter = sub
	}
	return newClosingOnError(sub, h, cfg)
}

// precheck refuses a bad config before a connection is opened.
func precheck(h reliable.Handler, cfg Config) error {
	var p reliable.Problems
	p.Addf(h == nil, "handler is nil")
	var ce *reliable.ConfigError
	if errors.As(cfg.Validate(), &ce) {
		for _, s := range ce.Problems {
			p.Addf(true, "%s", s)
		}
	}
	return p.Err("consumer")
}

func newClosingOnError(sub reliable.Subscriber, h reliable.Handler, cfg Config) (*Consumer, error) {
	c, err := New(sub, h, cfg)
	if err != nil {
		_ = sub.Close()
		return nil, err
	}
	return c, nil
}
