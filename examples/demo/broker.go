package main

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/IBM/sarama"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/adapters/kafka"
	"github.com/reliable-go/reliable/adapters/rabbitmq"
	"github.com/reliable-go/reliable/observability"
	"github.com/reliable-go/reliable/observability/kafkalag"
	"github.com/reliable-go/reliable/producer"
	"github.com/reliable-go/reliable/reliabletest"
)

// Names the demo uses on the broker.
const (
	environment = "demo" // stamped on every event and checked by the consumer (L07)
	group       = "kitchen-display"
	source      = "order-service"
)

// broker is a connected message broker: a durable publisher for the order
// service's relay and a way to make subscribers for the kitchen.
type broker struct {
	label  string // what it is, for the summary
	topic  string
	pub    reliable.Publisher
	newSub func() (reliable.Subscriber, error)
	close  func()
	// lag reads the kitchen group's backlog for the metrics endpoint; nil
	// where the broker reports it itself (RabbitMQ's Prometheus plugin).
	lag func(ctx context.Context) (observability.GroupLag, error)
}

func newBroker(ctx context.Context, cfg config, runID string, log *slog.Logger) (*broker, error) {
	switch cfg.Broker {
	case "memory":
		return memoryBroker(cfg)
	case "embedded":
		return embeddedKafka(cfg, log)
	case "kafka":
		return realKafka(ctx, cfg, runID, log)
	case "rabbitmq":
		return realRabbitMQ(ctx, cfg, runID, log)
	}
	return nil, fmt.Errorf("unknown broker %q", cfg.Broker)
}

// memoryBroker is the SDK's in-memory test double: Kafka-like partitions and
// consumer groups in memory, no network.
func memoryBroker(cfg config) (*broker, error) {
	b := reliabletest.NewBroker(reliabletest.BrokerOptions{Partitions: cfg.Partitions})
	b.CreateTopic("orders")
	pub, err := producer.New(b.Publisher(), producer.Config{Environment: environment, Source: source})
	if err != nil {
		return nil, err
	}
	return &broker{
		label: "in-memory broker (reliabletest.Broker, NOT DURABLE)",
		topic: "orders",
		pub:   pub,
		newSub: func() (reliable.Subscriber, error) {
			return b.Subscriber(group, reliabletest.SubscriberOptions{}), nil
		},
		close: func() {},
		lag: func(context.Context) (observability.GroupLag, error) {
			tl := observability.TopicLag{Topic: "orders"}
			committed := b.Committed(group, "orders")
			for p, end := range b.EndOffsets("orders") {
				var c int64
				if p < len(committed) {
					c = committed[p]
				}
				tl.Partitions = append(tl.Partitions, observability.PartitionLag{Topic: "orders", Partition: int32(p),
					Committed: c, Newest: end, Lag: end - c})
				tl.Total += end - c
			}
			return observability.GroupLag{Group: group, Topics: []observability.TopicLag{tl}}, nil
		},
	}, nil
}

// embeddedKafka runs an in-process Kafka (kfake: three brokers speaking the
// Kafka protocol, without replication or disks) and talks to it through the
// SDK's sarama adapter, exactly as to a real cluster.
func embeddedKafka(cfg config, log *slog.Logger) (*broker, error) {
	const topic = "orders"
	cluster, err := kfake.NewCluster(kfake.NumBrokers(3), kfake.SeedTopics(int32(cfg.Partitions), environment+"."+topic))
	if err != nil {
		return nil, fmt.Errorf("embedded kafka: %w", err)
	}
	kcfg := kafkaConfig(cluster.ListenAddrs(), log)
	// kfake keeps one copy of each partition in memory: the durability audit
	// would rightly refuse it.
	kcfg.Audit.Policy = kafka.AuditOff
	b, err := kafkaBroker(kcfg, topic)
	if err != nil {
		cluster.Close()
		return nil, err
	}
	b.label = "embedded Kafka (kfake, in-process, NOT DURABLE) via the sarama adapter"
	inner := b.close
	b.close = func() { inner(); cluster.Close() }
	return b, nil
}

func kafkaConfig(brokers []string, log *slog.Logger) kafka.Config {
	return kafka.Config{
		Brokers:     brokers,
		ClientID:    "reliable-demo",
		Environment: environment,
		Producer:    kafka.ProducerConfig{Source: source},
		Consumer: kafka.ConsumerConfig{
			Group:          group,
			CommitInterval: 200 * time.Millisecond,
			DrainTimeout:   10 * time.Second,
		},
		Logger: log,
	}
}

func kafkaBroker(kcfg kafka.Config, topic string) (*broker, error) {
	pub, err := kafka.NewProducer(kcfg)
	if err != nil {
		return nil, fmt.Errorf("kafka producer: %w", err)
	}
	sc := sarama.NewConfig()
	sc.Version = kafka.DefaultVersion
	client, err := sarama.NewClient(kcfg.Brokers, sc)
	if err != nil {
		_ = pub.Close()
		return nil, fmt.Errorf("kafka client: %w", err)
	}
	admin, err := sarama.NewClusterAdminFromClient(client)
	if err != nil {
		_ = pub.Close()
		_ = client.Close()
		return nil, fmt.Errorf("kafka admin: %w", err)
	}
	// The adapter prefixes topics and groups with the environment (L07).
	fullGroup, fullTopic := environment+"."+kcfg.Consumer.Group, environment+"."+topic
	return &broker{
		topic: topic,
		pub:   pub,
		newSub: func() (reliable.Subscriber, error) {
			return kafka.NewSubscriber(kcfg)
		},
		close: func() { _ = pub.Close(); _ = client.Close() },
		lag: func(ctx context.Context) (observability.GroupLag, error) {
			return kafkalag.Read(ctx, client, admin, fullGroup, fullTopic)
		},
	}, nil
}

// realKafka uses the cluster at cfg.KafkaBrokers with a topic of its own
// (replication factor 3 where the cluster has three brokers,
// min.insync.replicas 2), deleted at the end.
func realKafka(ctx context.Context, cfg config, runID string, log *slog.Logger) (*broker, error) {
	brokers := strings.Split(cfg.KafkaBrokers, ",")
	topic := "reliable-demo-orders-" + runID
	full := environment + "." + topic
	sc := sarama.NewConfig()
	sc.Version = kafka.DefaultVersion
	admin, err := sarama.NewClusterAdmin(brokers, sc)
	if err != nil {
		return nil, fmt.Errorf("kafka admin: %w", err)
	}
	rf := int16(min(3, len(brokers)))
	minISR := fmt.Sprint(max(1, int(rf)-1))
	if err := admin.CreateTopic(full, &sarama.TopicDetail{NumPartitions: int32(cfg.Partitions), ReplicationFactor: rf,
		ConfigEntries: map[string]*string{"min.insync.replicas": &minISR}}, false); err != nil {
		_ = admin.Close()
		return nil, fmt.Errorf("kafka: create topic %s: %w", full, err)
	}
	drop := func() {
		if err := admin.DeleteTopic(full); err != nil {
			log.Warn("demo: delete topic", slog.String("topic", full), slog.String("error", err.Error()))
		}
		_ = admin.Close()
	}
	kcfg := kafkaConfig(brokers, log)
	kcfg.Consumer.Group = group + "-" + runID
	// Audit at construction: the constructors fail until the new topic's
	// metadata is visible, instead of the first publish failing for good
	// with an unknown topic.
	kcfg.Audit.Topics = []string{topic}
	if rf < 3 {
		kcfg.Audit.Policy = kafka.AuditWarn
	}
	var b *broker
	for { // the new topic's metadata reaches every broker within moments
		b, err = kafkaBroker(kcfg, topic)
		if err == nil || ctx.Err() != nil {
			break
		}
		if reliable.Sleep(ctx, 200*time.Millisecond) != nil {
			break
		}
	}
	if err != nil {
		drop()
		return nil, err
	}
	b.label = fmt.Sprintf("Kafka at %s (topic %s, replication factor %d)", cfg.KafkaBrokers, full, rf)
	inner := b.close
	b.close = func() { inner(); drop() }
	return b, nil
}

// realRabbitMQ uses the broker at cfg.AMQPURL with an exchange and a quorum
// queue of its own, deleted at the end.
func realRabbitMQ(ctx context.Context, cfg config, runID string, log *slog.Logger) (*broker, error) {
	topic := "reliable-demo-orders-" + runID
	if err := rabbitmq.Declare(ctx, cfg.AMQPURL, topic, []string{group}, rabbitmq.WithLogger(log), rabbitmq.WithEnvironment(environment)); err != nil {
		return nil, fmt.Errorf("rabbitmq: declare: %w", err)
	}
	drop := func() {
		conn, err := amqp.Dial(cfg.AMQPURL)
		if err != nil {
			return
		}
		defer conn.Close()
		ch, err := conn.Channel()
		if err != nil {
			return
		}
		_, _ = ch.QueueDelete(rabbitmq.QueueName(topic, group), false, false, false)
		_, _ = ch.QueueDelete(rabbitmq.DeadLetterQueueName(topic, group), false, false, false)
		_ = ch.ExchangeDelete(rabbitmq.ExchangeName(topic), false, false)
		_ = ch.ExchangeDelete(topic+".dlx", false, false)
	}
	pub, err := rabbitmq.NewProducer(cfg.AMQPURL, rabbitmq.WithLogger(log), rabbitmq.WithEnvironment(environment),
		rabbitmq.WithProducerConfig(producer.Config{Environment: environment, Source: source, Logger: log}))
	if err != nil {
		drop()
		return nil, fmt.Errorf("rabbitmq producer: %w", err)
	}
	return &broker{
		label: fmt.Sprintf("RabbitMQ at %s (exchange %s, quorum queue %s)", rabbitmq.RedactURL(cfg.AMQPURL), topic, rabbitmq.QueueName(topic, group)),
		topic: topic,
		pub:   pub,
		newSub: func() (reliable.Subscriber, error) {
			return rabbitmq.NewSubscriber(cfg.AMQPURL, group, rabbitmq.WithLogger(log), rabbitmq.WithEnvironment(environment))
		},
		close: func() { _ = pub.Close(); drop() },
	}, nil
}
