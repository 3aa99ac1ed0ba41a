package rabbitmq

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/internal/testenv"
	"github.com/reliable-go/reliable/reliabletest"
)

// TestConformance runs the SDK's conformance suite on the real broker: the
// durable producer and a subscriber per consumer group. L01 (unsettled
// deliveries redelivered), L02 (confirmed messages survive a kill -9 of the
// server), L08 (order per key with ten subscribers of a group). The kill
// case runs a consumer in a child process (this test binary) and kills it
// with SIGKILL. The suite holds RabbitMQ exclusively (other packages'
// RabbitMQ tests wait): it kills the server and force-closes connections.
func TestConformance(t *testing.T) {
	runConformance(t, Topology{})
}

// TestConformanceSharded runs the suite on a sharded topology: a group's
// messages are spread by key over four single-active-consumer queues, so
// the subscribers of a group share the work (CompetingConsumers) and each
// key keeps its order.
func TestConformanceSharded(t *testing.T) {
	runConformance(t, Topology{Shards: 4})
}

func runConformance(t *testing.T, topo Topology) {
	url := amqpURL(t)
	srv := testenv.RabbitMQ(t)
	var mu sync.Mutex
	instances := map[string]int{} // group -> subscribers made so far
	reasons := map[string]string{}
	if topo.Shards <= 1 {
		reasons["CompetingConsumers"] = "the default topology gives a group's queue a single active consumer " +
			"(Topology.Shards spreads a group over several queues)"
	}
	reliabletest.RunConformance(t, reliabletest.Setup{
		Features: reliabletest.Features{
			OrderPerKey: true,
			// A group's queue has a single active consumer: on the default
			// topology one subscriber receives everything and the others
			// stand by (L08, L12); sharding spreads a group.
			CompetingConsumers: topo.Shards > 1,
			NackRedelivers:     true,
			// OrderAfterNack: false. A nacked message goes back to the
			// queue while the deliveries prefetched after it are already
			// on their way; the consumer package holds the key.
			RedeliveredAcrossSubscribers: true,
			UnknownTopicFails:            true,
			OutOfProcess:                 true,
			// Acks are written at once; a second covers the broker
			// applying them before the connection is reset.
			AckLatency: time.Second,
			RestartBroker: func(ctx context.Context) error {
				// Queues the case declared just before: see
				// testenv.RabbitMQQueueSettle.
				time.Sleep(testenv.RabbitMQQueueSettle)
				brokerRestarts.Add(1)
				return srv.Crash(ctx)
			},
			Reconnect: func(ctx context.Context) error {
				// The management API lists a connection a few seconds
				// after it opened (longer right after a restart): wait
				// until the case's publisher and subscriber are both
				// closed, or the case would pass without a reconnect.
				closed := map[string]bool{}
				for {
					_, err := srv.CloseConnections(ctx, func(c testenv.RabbitConnection) bool {
						name := c.ConnectionName()
						for _, p := range []string{"conf-pub", "conf-sub"} {
							if strings.HasPrefix(name, p) {
								closed[p] = true
								return true
							}
						}
						return false
					})
					if err != nil {
						return err
					}
					if closed["conf-pub"] && closed["conf-sub"] {
						return nil
					}
					select {
					case <-ctx.Done():
						return fmt.Errorf("publisher or subscriber connection not listed by the management API: closed %v: %w", closed, ctx.Err())
					case <-time.After(250 * time.Millisecond):
					}
				}
			},
			Reasons: reasons,
		},
		NewPublisher: func(t *testing.T) reliable.Publisher {
			p, err := NewProducer(url, WithConnectionName(uniqueName("conf-pub")), WithTopology(topo))
			if err != nil {
				t.Fatalf("new producer: %v", err)
			}
			return p
		},
		NewSubscriber: func(t *testing.T, group string) reliable.Subscriber {
			opts := []SubscriberOption{WithConnectionName(uniqueName("conf-sub")), WithTopology(topo)}
			if topo.Shards > 1 {
				// As an operator runs instances: the k-th subscriber of a
				// group has shard k mod Shards as its primary shard.
				mu.Lock()
				k := instances[group]
				instances[group]++
				mu.Unlock()
				// A standby shorter than DefaultShardStandby (3 s): each case
				// waits for its first subscriber to take the other shards,
				// which made this suite two minutes long. The standby
				// takeover is tested with the same delay in
				// sharding_integration_test.go.
				opts = append(opts, WithShardIndexes(k%topo.Shards), WithShardStandby(500*time.Millisecond))
			}
			s, err := NewSubscriber(url, group, opts...)
			if err != nil {
				t.Fatalf("new subscriber: %v", err)
			}
			return s
		},
		CreateTopic: func(t *testing.T, topic string, groups ...string) {
			declareTopic(t, topo, topic, groups...)
		},
		Timeout: 30 * time.Second,
	})
}
