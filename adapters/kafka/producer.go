package kafka

import (
	"errors"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/producer"
)

// NewProducer returns the durable Kafka publisher most services want: a
// [Publisher] wrapped in producer.New, so Publish retries the messages that
// were not acknowledged, with backoff, until all are acknowledged on every
// in-sync replica, a permanent error occurs, or ctx ends (L03, L06). Too-large
// messages (L13), unknown topics and topics failing the strict durability
// audit fail fast. cfg.Producer.Source, Backoff and MaxAttempts configure the
// retry loop; cfg.Environment is stamped on every message (L07).
func NewProducer(cfg Config) (*producer.Producer, error) {
	pcfg := producer.Config{
		Environment:     cfg.Environment,
		Source:          cfg.Producer.Source,
		MaxMessageBytes: cfg.Producer.MaxMessageBytes,
		Backoff:         cfg.Producer.Backoff,
		MaxAttempts:     cfg.Producer.MaxAttempts,
		Logger:          cfg.Logger,
	}
	// Report the problems of both layers at once.
	var p reliable.Problems
	cfg.validate(&p)
	var ce *reliable.ConfigError
	if err := pcfg.Validate(); errors.As(err, &ce) {
		for _, s := range ce.Problems {
			p.Addf(true, "Producer: %s", s)
		}
	}
	if err := p.Err("kafka"); err != nil {
		return nil, err
	}
	pub, err := NewPublisher(cfg)
	if err != nil {
		return nil, err
	}
	prod, err := producer.New(pub, pcfg)
	if err != nil {
		_ = pub.Close()
		return nil, err
	}
	return prod, nil
}
