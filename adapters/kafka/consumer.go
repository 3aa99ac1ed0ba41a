package kafka

import (
	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/consumer"
)

// NewConsumer returns a consumer of cfg.Topic in the Kafka consumer group
// kcfg.Consumer.Group, with the Kafka adapter's durable defaults: auto-commit
// off, offsets committed only up to the first incomplete message (L04, L05).
// When cfg.Environment is empty it takes kcfg.Environment, so the consumer
// refuses other environments' messages (L07).
//
// When kcfg.Consumer.DeadLetterTopic is set and cfg.DeadLetter is not, poison
// messages go to that topic, with headers naming the cause and where they
// came from, and their offsets are committed after the topic confirmed them.
// Without a dead-letter path a poison message holds its key until an
// operator acts (see consumer.Config.DeadLetter); Kafka has no dead-letter
// policy of its own.
//
// It lives in this package, not in consumer, so that a service using only
// RabbitMQ does not compile sarama.
func NewConsumer(kcfg Config, h reliable.Handler, cfg consumer.Config) (*consumer.Consumer, error) {
	if cfg.Environment == "" {
		cfg.Environment = kcfg.Environment
	}
	return consumer.Open(h, cfg, func(cfg *consumer.Config) (reliable.Subscriber, error) {
		sub, err := NewSubscriber(kcfg)
		if err != nil {
			return nil, err
		}
		if cfg.DeadLetter == nil && sub.DeadLetterEnabled() {
			cfg.DeadLetter = sub
		}
		return sub, nil
	})
}
