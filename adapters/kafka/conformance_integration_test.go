package kafka

import (
	"context"
	"testing"
	"time"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/reliabletest"
)

// TestConformance runs the SDK's conformance suite on the real 3-broker
// cluster, with the durable producer (NewProducer) and the Subscriber.
func TestConformance(t *testing.T) {
	brokers := kafkaBrokers(t)
	run := uniqueName("conf")
	reliabletest.RunConformance(t, reliabletest.Setup{
		Features: reliabletest.Features{
			OrderPerKey:        true,
			CompetingConsumers: true,
			NackRedelivers:     true,
			UnknownTopicFails:  true,
			// L02/L06: kill -9 a broker after the publish was acknowledged.
			// It is the suite's last subtest: the exclusive hold on the
			// cluster taken here lasts only until the suite ends.
			RestartBroker: func(ctx context.Context) error {
				c := cluster(t)
				if err := c.KillBroker(ctx, 2); err != nil {
					return err
				}
				if err := c.StartBroker(ctx, 2); err != nil {
					return err
				}
				return c.WaitHealthy(ctx)
			},
		},
		NewPublisher: func(t *testing.T) reliable.Publisher {
			p, err := NewProducer(testConfig(t))
			if err != nil {
				t.Fatalf("NewProducer: %v", err)
			}
			return p
		},
		NewSubscriber: func(t *testing.T, group string) reliable.Subscriber {
			cfg := testConfig(t)
			cfg.Consumer.Group = run + "-" + group
			s, err := NewSubscriber(cfg)
			if err != nil {
				t.Fatalf("NewSubscriber: %v", err)
			}
			return s
		},
		CreateTopic: func(t *testing.T, topic string, _ ...string) {
			createTopic(t, brokers, topic, 3, nil)
		},
		Timeout: 60 * time.Second,
	})
}
