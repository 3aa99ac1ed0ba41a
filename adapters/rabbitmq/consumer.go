package rabbitmq

import (
	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/consumer"
)

// NewConsumer returns a consumer of cfg.Topic as a member of group (the
// group's queue of the topic exchange, shared by the group's instances), with
// manual acks of each delivery only once complete (L01). On the default
// topology the group queue has a single active consumer: one instance
// consumes, the others stand by, so each key stays in order; shard the
// group (Topology.Shards) to consume in parallel across instances.
//
// With neither cfg.RetryTable nor cfg.DeadLetter set, poison messages go to
// the group's dead-letter queue, confirmed, with headers naming the cause.
//
// It lives in this package, not in consumer, so that a service using only
// Kafka does not compile amqp091-go.
func NewConsumer(url, group string, h reliable.Handler, cfg consumer.Config, opts ...SubscriberOption) (*consumer.Consumer, error) {
	return consumer.Open(h, cfg, func(cfg *consumer.Config) (reliable.Subscriber, error) {
		sub, err := NewSubscriber(url, group, opts...)
		if err != nil {
			return nil, err
		}
		if cfg.DeadLetter == nil && cfg.RetryTable == nil {
			cfg.DeadLetter = sub
		}
		return sub, nil
	})
}
