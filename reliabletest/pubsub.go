package reliabletest

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/reliable-go/reliable"
)

// Publisher publishes to a Broker. It is a TEST DOUBLE.
type Publisher struct {
	broker *Broker
	closed atomic.Bool
}

var _ reliable.Publisher = (*Publisher)(nil)

// Publisher returns a publisher to the broker.
func (b *Broker) Publisher() *Publisher { return &Publisher{broker: b} }

// Publish writes msgs, all or none, and sets empty IDs and zero times.
func (p *Publisher) Publish(ctx context.Context, msgs ...*reliable.Message) error {
	if p.closed.Load() {
		return reliable.ErrClosed
	}
	if err := ctx.Err(); err != nil && p.broker.mutant != canceledPublishes {
		return err
	}
	now := time.Now()
	for _, m := range msgs {
		if err := stamp(m, now); err != nil {
			return err
		}
	}
	return p.broker.publish(msgs)
}

// stamp sets m's empty ID and zero time, as adapters do, and validates it.
func stamp(m *reliable.Message, now time.Time) error {
	if m == nil {
		return &reliable.InvalidMessageError{Problems: []string{"message is nil"}}
	}
	m.EnsureID()
	if m.Time.IsZero() {
		m.Time = now
	}
	return m.Validate()
}

// Close makes later publishes fail with reliable.ErrClosed.
func (p *Publisher) Close() error {
	p.closed.Store(true)
	return nil
}

// AsyncPublisher is a Publisher that also confirms each message on its own
// (reliable.AsyncPublisher), like the Kafka adapter's publisher, for code
// that uses PublishAsync when it can (the outbox relay). It is a TEST
// DOUBLE.
type AsyncPublisher struct{ *Publisher }

var _ reliable.AsyncPublisher = (*AsyncPublisher)(nil)

// AsyncPublisher returns a publisher to the broker that has PublishAsync.
func (b *Broker) AsyncPublisher() *AsyncPublisher { return &AsyncPublisher{b.Publisher()} }

// PublishAsync writes msg at once, so messages of one key keep the order of
// the calls, and reports the outcome to done from another goroutine. An
// invalid message, a closed publisher or an ended ctx is returned instead,
// and done is not called.
func (p *AsyncPublisher) PublishAsync(ctx context.Context, msg *reliable.Message, done func(*reliable.Message, error)) error {
	if done == nil {
		return fmt.Errorf("reliabletest: PublishAsync needs a done function")
	}
	if p.closed.Load() {
		return reliable.ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := stamp(msg, time.Now()); err != nil {
		return err
	}
	err := p.broker.publish([]*reliable.Message{msg})
	go done(msg, err)
	return nil
}

// SubscriberOptions configures a Subscriber.
type SubscriberOptions struct {
	// CommitInterval, when positive, commits acked offsets only every
	// interval (and on Close), like a Kafka consumer, so a Crash loses the
	// acks since the last commit and their messages are delivered again.
	// Zero commits on every ack.
	CommitInterval time.Duration
}

// Subscriber consumes from a Broker as one member of a consumer group per
// subscribed topic. It is a TEST DOUBLE.
type Subscriber struct {
	broker *Broker
	group  string
	opts   SubscriberOptions

	refs   sync.Map // *reliable.Delivery -> deliveryRef
	mu     sync.Mutex
	subs   []*subscription
	closed bool
	wg     sync.WaitGroup
}

var _ reliable.Subscriber = (*Subscriber)(nil)
var _ reliable.StaleReporter = (*Subscriber)(nil)

type subscription struct {
	group  *group
	member *member
	stop   chan struct{}
}

// Subscriber returns a subscriber in the named consumer group.
func (b *Broker) Subscriber(groupName string, opts SubscriberOptions) *Subscriber {
	return &Subscriber{broker: b, group: groupName, opts: opts}
}

// Subscribe joins the group on topic and returns its deliveries. The channel
// closes when ctx ends, or on Close or Crash.
func (s *Subscriber) Subscribe(ctx context.Context, topicName string) (<-chan *reliable.Delivery, error) {
	b := s.broker
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, reliable.ErrClosed
	}
	b.mu.Lock()
	t, ok := b.topics[topicName]
	if !ok {
		b.mu.Unlock()
		return nil, fmt.Errorf("reliabletest: subscribe to %q: %w", topicName, reliable.ErrUnknownTopic)
	}
	key := s.group + "\x00" + topicName
	if b.mutant == groupsShared {
		key = "\x00" + topicName
	}
	g, ok := b.groups[key]
	if !ok {
		g = newGroup(len(t.partitions), b.mutant)
		b.groups[key] = g
	}
	m := &member{}
	g.members = append(g.members, m)
	g.commit()
	g.rebalance()
	b.notify()
	b.mu.Unlock()

	sub := &subscription{group: g, member: m, stop: make(chan struct{})}
	if b.mutant == secondTopicReplaces {
		for _, old := range s.subs {
			s.removeMember(old, true)
			close(old.stop)
		}
		s.subs = nil
	}
	s.subs = append(s.subs, sub)
	out := make(chan *reliable.Delivery)
	s.wg.Add(1)
	go s.run(ctx, topicName, t, sub, out)
	if s.opts.CommitInterval > 0 {
		s.wg.Add(1)
		go s.commitLoop(ctx, sub)
	}
	return out, nil
}

func (s *Subscriber) run(ctx context.Context, topicName string, t *topic, sub *subscription, out chan<- *reliable.Delivery) {
	defer s.wg.Done()
	defer close(out)
	defer s.removeMember(sub, true)
	b := s.broker
	for {
		b.mu.Lock()
		changed := b.changed
		d, ok := s.next(topicName, t, sub)
		ended := sub.member.ended
		b.mu.Unlock()
		if ended {
			return
		}
		if !ok {
			if !waitFor(ctx, changed, sub.stop) {
				return
			}
			continue
		}
		select {
		case out <- d:
		case <-ctx.Done():
			return
		case <-sub.stop:
			return
		}
	}
}

// next picks the next message of the member's partitions, round robin. The
// caller holds b.mu.
func (s *Subscriber) next(topicName string, t *topic, sub *subscription) (*reliable.Delivery, bool) {
	g, m := sub.group, sub.member
	for range m.assigned {
		p := m.assigned[m.next%len(m.assigned)]
		m.next++
		off := m.cursor[p]
		if off >= int64(len(t.partitions[p])) {
			continue
		}
		m.cursor[p] = off + 1
		if err := g.trackers[p].Track(off); err != nil {
			panic(err) // cursors only move forward within a generation
		}
		msg := t.partitions[p][off].Clone()
		msg.Delivery = reliable.DeliveryInfo{
			Partition:   int32(p),
			Offset:      off,
			Queue:       topicName,
			Attempt:     1,
			Redelivered: off < g.delivered[p] && s.broker.mutant != redeliveredNever,
			ReceivedAt:  time.Now(),
		}
		if off+1 > g.delivered[p] {
			g.delivered[p] = off + 1
		}
		d := reliable.NewDelivery(msg, s)
		s.refs.Store(d, deliveryRef{group: g, generation: g.generation, partition: p, offset: off})
		return d, true
	}
	return nil, false
}

func (s *Subscriber) commitLoop(ctx context.Context, sub *subscription) {
	defer s.wg.Done()
	tick := time.NewTicker(s.opts.CommitInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-sub.stop:
			return
		case <-tick.C:
			s.broker.mu.Lock()
			sub.group.commit()
			s.broker.mu.Unlock()
		}
	}
}

// Close commits what was acked and leaves every group. Unacked deliveries are
// delivered again to the group's other members or the next subscriber.
func (s *Subscriber) Close() error { return s.leave(true) }

// Crash leaves every group without committing: acks since the last commit
// are lost and those messages are delivered again, as when a consumer process
// is killed.
func (s *Subscriber) Crash() { _ = s.leave(false) }

func (s *Subscriber) leave(commit bool) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	subs := s.subs
	s.mu.Unlock()
	if s.broker.mutant == closeKeepsOpen {
		return nil
	}

	for _, sub := range subs {
		s.removeMember(sub, commit)
		close(sub.stop)
	}
	s.wg.Wait()
	return nil
}

// removeMember takes sub's member out of its group, once.
func (s *Subscriber) removeMember(sub *subscription, commit bool) {
	b := s.broker
	b.mu.Lock()
	defer b.mu.Unlock()
	g := sub.group
	for i, m := range g.members {
		if m == sub.member {
			if commit {
				g.commit()
			}
			g.members = append(g.members[:i], g.members[i+1:]...)
			// Its run goroutine may call next once more before it sees
			// stop: with no partitions it delivers nothing that is now
			// another member's.
			m.assigned, m.cursor = nil, nil
			g.rebalance()
			b.notify()
			return
		}
	}
}
