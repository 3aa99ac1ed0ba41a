package consumer

import (
	"errors"

	"github.com/reliable-go/reliable"
)

// Open is the hook the broker adapters' constructors (kafka.NewConsumer,
// rabbitmq.NewConsumer) are built on; it lets consumer import no adapter, so
// a RabbitMQ-only service never compiles sarama, nor a Kafka-only one
// amqp091-go. Open checks h and cfg first, so a bad config is refused before
// a connection is opened, then calls open, which connects and may fill in
// cfg (a dead-letter path the subscriber provides), and returns a consumer
// of the subscriber open returned. The consumer owns the subscriber: Open
// closes it when the consumer cannot be made, and Run closes it when it
// returns.
func Open(h reliable.Handler, cfg Config, open func(cfg *Config) (reliable.Subscriber, error)) (*Consumer, error) {
	if err := precheck(h, cfg); err != nil {
		return nil, err
	}
	if open == nil {
		return nil, errors.New("consumer: open is nil")
	}
	sub, err := open(&cfg)
	if err != nil {
		return nil, err
	}
	if sub == nil {
		return nil, errors.New("consumer: open returned no subscriber")
	}
	c, err := New(sub, h, cfg)
	if err != nil {
		_ = sub.Close()
		return nil, err
	}
	return c, nil
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
