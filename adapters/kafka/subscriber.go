package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/IBM/sarama"

	"github.com/reliable-go/reliable"
)

// Subscriber is a reliable.Subscriber on a sarama consumer group with manual
// commits. It is safe for concurrent use.
//
// Guarantees:
//   - An offset is committed only when its delivery and every earlier one of
//     its partition were acked (L04, L05), tracked per partition by an
//     ordering.Tracker. Commits happen every Consumer.CommitInterval, when a
//     partition is revoked (after waiting up to Consumer.DrainTimeout for its
//     in-flight deliveries) and when the Subscribe context ends.
//   - Deliveries of a revoked partition are stale: acking them does nothing,
//     since another member now owns the partition and will deliver them
//     again.
//   - At most Consumer.MaxInFlightPerPartition deliveries per partition are
//     received but not committed; beyond that the partition waits (L23).
//   - Nack hands the same record out again in the same claim after
//     Consumer.RedeliveryBackoff (exponential per attempt), with Attempt+1
//     and Redelivered set. Its offset stays incomplete meanwhile, so no
//     commit passes it; the partition's other deliveries and the other
//     partitions carry on, and the group session is not interrupted. A
//     record nacked forever is redelivered forever and holds its
//     partition's commit position (after MaxInFlightPerPartition later
//     records the partition pauses): give poison messages a dead-letter path
//     (Consumer.DeadLetterTopic with [Subscriber.DeadLetter], or a retry
//     table).
//   - Commit and fetch errors are logged and passed to Consumer.OnError.
//
// The environment header (reliable.HeaderEnvironment) is handed to the
// application unchanged in Message.Headers; the subscriber does not filter on
// it. The consumer pipeline calls reliable.CheckEnvironment and dead-letters
// a message from another environment with the reason (L07). The environment
// prefix of topics and group IDs keeps environments apart in the first place.
type Subscriber struct {
	cfg    Config
	prefix string
	group  string // prefixed group ID
	log    *slog.Logger
	client sarama.Client // metadata and audits; each subscription has its own
	topics *topicChecker
	// saramaCfg configures each subscription's client.
	saramaCfg *sarama.Config

	// dlt publishes to dltTopic (the Kafka name) for DeadLetter; nil
	// without Consumer.DeadLetterTopic.
	dlt      *Publisher
	dltTopic string

	// delivered is the highest offset+1 handed out per partition, across
	// sessions, to flag redeliveries.
	deliveredMu sync.Mutex
	delivered   map[topicPartition]int64

	// wrapSession, set by tests only, wraps every group session, e.g. to
	// make commits fail.
	wrapSession func(sarama.ConsumerGroupSession) sarama.ConsumerGroupSession

	mu      sync.Mutex
	closed  bool
	closing chan struct{} // closed by Close: revoked partitions skip the drain
	subs    []*subscription
}

var _ reliable.Subscriber = (*Subscriber)(nil)

type topicPartition struct {
	topic     string
	partition int32
}

// NewSubscriber connects to the cluster and returns a Subscriber in the
// consumer group cfg.Consumer.Group. It refuses an invalid cfg with a
// *reliable.ConfigError listing every problem, and bad credentials with an
// error matching reliable.ErrNotAuthorized.
func NewSubscriber(cfg Config) (*Subscriber, error) {
	var p reliable.Problems
	cfg.validate(&p)
	p.Addf(cfg.Consumer.Group == "", "Consumer.Group is empty")
	if err := p.Err("kafka"); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	sc, err := cfg.saramaConfig(roleConsumer)
	if err != nil {
		return nil, err
	}
	client, err := sarama.NewClient(cfg.Brokers, sc)
	if err != nil {
		return nil, classifyConnect(err)
	}
	s := &Subscriber{
		cfg:       cfg,
		saramaCfg: sc,
		prefix:    cfg.prefix(),
		group:     cfg.prefix() + cfg.Consumer.Group,
		log:       cfg.Logger,
		client:    client,
		topics:    newTopicChecker(client, cfg.Audit, cfg.Audit.policyFor(roleConsumer), cfg.Logger),
		delivered: make(map[topicPartition]int64),
		closing:   make(chan struct{}),
	}
	if len(cfg.Audit.Topics) > 0 {
		topics := make([]string, len(cfg.Audit.Topics))
		for i, t := range cfg.Audit.Topics {
			topics[i] = s.prefix + t
		}
		if err := s.topics.check(context.Background(), topics...); err != nil {
			_ = client.Close()
			return nil, err
		}
	}
	if t := cfg.Consumer.DeadLetterTopic; t != "" {
		if err := s.openDeadLetter(cfg, s.prefix+t); err != nil {
			_ = client.Close()
			return nil, err
		}
	}
	return s, nil
}

// openDeadLetter starts the dead-letter publisher and checks that topic (the
// Kafka name) exists and passes the durability audit, as any topic written
// to.
func (s *Subscriber) openDeadLetter(cfg Config, topic string) error {
	pcfg := cfg
	pcfg.Audit.Topics = nil
	pcfg.Tune = nil // the consumer's tuning is not meant for the producer
	pub, err := NewPublisher(pcfg)
	if err != nil {
		return fmt.Errorf("kafka: dead-letter producer: %w", err)
	}
	if err := pub.topics.check(context.Background(), topic); err != nil {
		_ = pub.Close()
		return fmt.Errorf("kafka: Consumer.DeadLetterTopic: %w", err)
	}
	s.dlt, s.dltTopic = pub, topic
	return nil
}

// subscription is one Subscribe call: a consumer group member on one topic.
type subscription struct {
	group  sarama.ConsumerGroup
	cancel context.CancelFunc
	done   chan struct{}
}

// Subscribe joins the consumer group on topic (unprefixed) and returns its
// deliveries. The channel closes after ctx ends or Close is called, once the
// member has made its last commit. A topic that does not exist is an error
// matching reliable.ErrUnknownTopic.
//
// When ctx ends, each partition waits up to Consumer.DrainTimeout for its
// in-flight deliveries to be settled, commits, and leaves the group; keep
// acking deliveries you received until the channel closes. Close does not
// wait: it commits what is complete and leaves at once.
func (s *Subscriber) Subscribe(ctx context.Context, topic string) (<-chan *reliable.Delivery, error) {
	if topic == "" {
		return nil, &reliable.ConfigError{Component: "kafka subscriber", Problems: []string{"topic is empty"}}
	}
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return nil, reliable.ErrClosed
	}
	ktopic := s.prefix + topic
	if err := s.topics.check(ctx, ktopic); err != nil {
		return nil, err
	}
	// Each subscription is a group member with a client of its own: sarama's
	// consumer groups may not share a client (two Subscribe calls on one
	// client fenced each other: "member is not known in the current
	// generation", 15 of 20 messages after 60 s).
	group, err := sarama.NewConsumerGroup(s.cfg.Brokers, s.group, s.saramaCfg)
	if err != nil {
		return nil, classifyConnect(err)
	}
	ctx, cancel := context.WithCancel(ctx)
	sub := &subscription{group: group, cancel: cancel, done: make(chan struct{})}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		cancel()
		_ = group.Close()
		return nil, reliable.ErrClosed
	}
	s.subs = append(s.subs, sub)
	s.mu.Unlock()

	out := make(chan *reliable.Delivery)
	h := &groupHandler{sub: s, topic: topic, out: out}
	go s.drainErrors(group)
	go s.run(ctx, sub, ktopic, h, out)
	return out, nil
}

// run keeps the member in the group until ctx ends or the group is closed.
func (s *Subscriber) run(ctx context.Context, sub *subscription, ktopic string, h *groupHandler, out chan *reliable.Delivery) {
	defer close(sub.done)
	defer sub.cancel()
	backoff := reliable.Backoff{Initial: 500 * time.Millisecond, Max: 10 * time.Second}
	for attempt := 0; ; {
		err := sub.group.Consume(ctx, []string{ktopic}, h)
		if ctx.Err() != nil || errors.Is(err, sarama.ErrClosedConsumerGroup) {
			break
		}
		if err == nil {
			attempt = 0 // a rebalance or a nack ended the session; rejoin
			continue
		}
		attempt++
		s.report(fmt.Errorf("kafka: consume %s: %w", ktopic, err))
		if reliable.Sleep(ctx, backoff.Delay(attempt)) != nil {
			break
		}
	}
	// Consume returned, so no ConsumeClaim is running: nothing sends on out.
	close(out)
	if err := sub.group.Close(); err != nil && !errors.Is(err, sarama.ErrClosedConsumerGroup) {
		s.report(fmt.Errorf("kafka: leave group %s: %w", s.group, err))
	}
}

func (s *Subscriber) drainErrors(group sarama.ConsumerGroup) {
	for err := range group.Errors() {
		s.report(err)
	}
}

// report logs err and passes it to Consumer.OnError.
func (s *Subscriber) report(err error) {
	s.log.Error("kafka: consumer error", slog.String("group", s.group), slog.String("error", err.Error()))
	if s.cfg.Consumer.OnError != nil {
		s.cfg.Consumer.OnError(err)
	}
}

// noteDelivered records offset as handed out and reports whether it was
// handed out before (in an earlier session of this subscriber).
func (s *Subscriber) noteDelivered(tp topicPartition, offset int64) (redelivered bool) {
	s.deliveredMu.Lock()
	defer s.deliveredMu.Unlock()
	hw := s.delivered[tp]
	if offset < hw {
		return true
	}
	s.delivered[tp] = offset + 1
	return false
}

// Close stops every subscription without waiting for in-flight deliveries:
// each partition commits what is complete, and the member leaves its group.
// Unsettled deliveries are delivered again, to this group's other members or
// the next subscriber.
func (s *Subscriber) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.closing)
	subs := s.subs
	s.mu.Unlock()

	var errs []error
	for _, sub := range subs {
		sub.cancel()
		// Close waits for the session's Cleanup (and its commit), then leaves.
		if err := sub.group.Close(); err != nil && !errors.Is(err, sarama.ErrClosedConsumerGroup) {
			errs = append(errs, err)
		}
		<-sub.done
	}
	if s.dlt != nil {
		// After the subscriptions: a handler may still dead-letter while
		// its partition drains.
		if err := s.dlt.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := s.client.Close(); err != nil && !errors.Is(err, sarama.ErrClosedClient) {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("kafka: close subscriber: %w", err)
	}
	return nil
}

// ReportsStale reports true: a delivery's Stale turns true once its partition's
// claim ends, so consumer.Consumer may keep the retry table's blocked keys of
// the partitions it owns in memory (consumer.StaleReporting).
func (s *Subscriber) ReportsStale() bool { return true }
