package rabbitmq

import (
	"testing"
	"time"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/reliabletest"
)

// TestConformance runs the SDK's conformance suite on the real broker: the
// durable producer and a subscriber per consumer group. L01 (unsettled
// deliveries redelivered), L02 (confirmed messages survive a restart), L08
// (order per key on one queue).
func TestConformance(t *testing.T) {
	url := amqpURL(t)
	reliabletest.RunConformance(t, reliabletest.Setup{
		Features: reliabletest.Features{
			OrderPerKey: true,
			// A group's queue has a single active consumer: on the default
			// topology one subscriber receives everything and the others
			// stand by (L08, L12); sharding spreads a group.
			CompetingConsumers: false,
			NackRedelivers:     true,
			UnknownTopicFails:  true,
			RestartBroker:      restartBroker(t),
		},
		NewPublisher: func(t *testing.T) reliable.Publisher {
			p, err := NewProducer(url, WithConnectionName(uniqueName("conf-pub")))
			if err != nil {
				t.Fatalf("new producer: %v", err)
			}
			return p
		},
		NewSubscriber: func(t *testing.T, group string) reliable.Subscriber {
			s, err := NewSubscriber(url, group, WithConnectionName(uniqueName("conf-sub")))
			if err != nil {
				t.Fatalf("new subscriber: %v", err)
			}
			return s
		},
		CreateTopic: func(t *testing.T, topic string, groups ...string) {
			declareTopic(t, Topology{}, topic, groups...)
		},
		Timeout: 30 * time.Second,
	})
}
