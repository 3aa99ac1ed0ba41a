package kafka

import (
	"context"
	"testing"
	"time"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/reliabletest"
)

// TestConformance runs the SDK's conformance suite on the real 3-broker
// cluster, with the durable producer (NewProducer) and the Subscriber. The
// kill case runs a consumer in a child process (this test binary) and kills
// it with SIGKILL; the restart cases kill -9 every broker at once after
// acks=all confirmed the messages (L02, L06), holding the cluster
// exclusively until the suite ends.
func TestConformance(t *testing.T) {
	brokers := kafkaBrokers(t)
	crash := func(ctx context.Context) error {
		return cluster(t).CrashAll(ctx)
	}
	reliabletest.RunConformance(t, reliabletest.Setup{
		Features: reliabletest.Features{
			OrderPerKey:        true,
			CompetingConsumers: true,
			NackRedelivers:     true,
			UnknownTopicFails:  true,
			OutOfProcess:       true,
			// Acked offsets are committed every CommitInterval (200 ms in
			// testConfig) plus the commit's round trip.
			AckLatency:    2 * time.Second,
			RestartBroker: crash,
			// OrderAfterNack: false. A nacked record is handed out again
			// after RedeliveryBackoff while its partition's later records
			// carry on; the consumer package holds the key.
			// RedeliveredAcrossSubscribers: false. The flag comes from the
			// offsets a Subscriber handed out itself; Kafka keeps no
			// delivery count, so a record another process received is not
			// flagged.
		},
		NewPublisher: func(t *testing.T) reliable.Publisher {
			p, err := NewProducer(testConfig(t))
			if err != nil {
				t.Fatalf("NewProducer: %v", err)
			}
			return p
		},
		// The suite's group names are unique per run; used as they are so
		// that the kill case's child process joins the same group.
		NewSubscriber: func(t *testing.T, group string) reliable.Subscriber {
			cfg := testConfig(t)
			cfg.Consumer.Group = group
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
