package rabbitmq

import (
	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/producer"
)

// NewProducer returns the durable publisher for RabbitMQ at url: a
// [Publisher] wrapped in a producer.Producer, which validates and sizes
// messages, stamps the environment and source headers, and retries messages
// that were not confirmed until they are or the context ends. Configure the
// wrapper with [WithProducerConfig]. Closing the returned publisher closes
// the connection.
func NewProducer(url string, opts ...PublisherOption) (reliable.Publisher, error) {
	pub, err := NewPublisher(url, opts...)
	if err != nil {
		return nil, err
	}
	pc := pub.cfg.producer
	if pc.Environment == "" {
		pc.Environment = pub.cfg.environment
	}
	p, err := producer.New(pub, pc)
	if err != nil {
		_ = pub.Close()
		return nil, err
	}
	return p, nil
}
