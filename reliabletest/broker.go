package reliabletest

import (
	"context"
	"fmt"
	"hash/fnv"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/ordering"
)

// Broker is an in-memory message broker: a TEST DOUBLE for unit tests and
// demos, not durable and not a real broker.
//
// Topics have partitions; a message goes to the partition its Key hashes to,
// so one key's messages keep their order. Subscribers in one consumer group
// share a topic's partitions, and each group resumes from its committed
// offsets, like Kafka. A delivery becomes committable when it and every
// earlier one of its partition were acked.
//
// Fault injection: [Broker.FailPublishes], [Broker.LoseConfirms],
// [Broker.DropConnections], [Broker.Restart] and [Subscriber.Crash].
type Broker struct {
	opts BrokerOptions

	mu      sync.Mutex
	topics  map[string]*topic
	groups  map[string]*group // by group name + "\x00" + topic
	changed chan struct{}     // closed and replaced on every state change

	failPublishes []error // next publishes fail with these, nothing written
	loseConfirms  int     // next publishes write but report ErrNotConfirmed
	published     int     // messages written, for the dropMessage mutant

	// mutant, set only by the mutation check (mutation_test.go), breaks one
	// promise on purpose so that the check can see the conformance suite
	// catch it. Zero in every other use.
	mutant mutant
}

// mutant names a deliberate defect of the broker for the mutation check of
// the conformance suite.
type mutant int

const (
	noMutant            mutant = iota
	ackIgnored                 // Ack returns nil and does nothing
	commitSkipped              // acked offsets are never committed
	commitDelivered            // commits what was delivered, acked or not
	orderShuffled              // every second message of a partition swaps places with the one before
	messageDropped             // every 25th message is confirmed but not stored
	nackIgnored                // Nack returns nil and does nothing
	nackToBack                 // Nack settles the delivery and appends a copy at the end of the partition
	redeliveredNever           // Message.Delivery.Redelivered is never set
	closeKeepsOpen             // Close marks the subscriber closed but leaves its subscriptions running
	groupsShared               // every group of a topic shares one position
	noSharing                  // the first member of a group gets every partition
	restartLoses               // Restart forgets messages not yet consumed by any group
	canceledPublishes          // Publish ignores an ended context
	unknownTopicCreated        // publishing to an unknown topic creates it
	reconnectEnds              // DropConnections ends every subscription
	secondTopicReplaces        // a second Subscribe of one subscriber stops its first
)

// BrokerOptions configures a Broker. The zero value is ready to use.
type BrokerOptions struct {
	// Partitions is the partition count of topics created by CreateTopic.
	// Defaults to 4.
	Partitions int
	// MaxMessageBytes refuses larger messages with
	// reliable.ErrMessageTooLarge. Defaults to 1 MiB.
	MaxMessageBytes int
}

type topic struct {
	partitions [][]*reliable.Message
}

// NewBroker returns an empty broker.
func NewBroker(opts BrokerOptions) *Broker {
	if opts.Partitions <= 0 {
		opts.Partitions = 4
	}
	if opts.MaxMessageBytes <= 0 {
		opts.MaxMessageBytes = 1 << 20
	}
	return &Broker{
		opts:    opts,
		topics:  make(map[string]*topic),
		groups:  make(map[string]*group),
		changed: make(chan struct{}),
	}
}

// CreateTopic creates a topic with the broker's partition count. Topics are
// never created implicitly: publishing to an unknown topic fails with
// reliable.ErrUnknownTopic, as with the SDK's Kafka defaults.
func (b *Broker) CreateTopic(name string) {
	b.CreateTopicPartitions(name, b.opts.Partitions)
}

// CreateTopicPartitions creates a topic with n partitions. It does nothing
// when the topic exists.
func (b *Broker) CreateTopicPartitions(name string, n int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.topics[name]; !ok {
		b.topics[name] = &topic{partitions: make([][]*reliable.Message, n)}
	}
}

// FailPublishes makes the next len(errs) Publish calls fail, one per error,
// without writing anything.
func (b *Broker) FailPublishes(errs ...error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.failPublishes = append(b.failPublishes, errs...)
}

// LoseConfirms makes the next n Publish calls write their messages but report
// them unconfirmed, as when a connection breaks before the confirm arrives.
// A producer that retries then writes duplicates, which consumers must absorb.
func (b *Broker) LoseConfirms(n int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.loseConfirms += n
}

// DropConnections simulates every consumer connection breaking and
// reconnecting: deliveries in flight become stale (acking them does nothing)
// and each group resumes from its committed offsets, so unacked messages are
// delivered again.
func (b *Broker) DropConnections() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, g := range b.groups {
		g.rebalance()
		if b.mutant == reconnectEnds {
			for _, m := range g.members {
				m.ended = true
			}
		}
	}
	b.notify()
}

// Restart simulates a broker restart. Messages are kept (this double keeps
// everything in memory for the life of the Broker value); connections drop as
// with DropConnections.
func (b *Broker) Restart(context.Context) error {
	if b.mutant == restartLoses {
		b.mu.Lock()
		for name, t := range b.topics {
			consumed := false
			for key, g := range b.groups {
				if strings.HasSuffix(key, "\x00"+name) && slices.ContainsFunc(g.committed, func(o int64) bool { return o > 0 }) {
					consumed = true
				}
			}
			if !consumed {
				for p := range t.partitions {
					t.partitions[p] = nil
				}
			}
		}
		b.mu.Unlock()
	}
	b.DropConnections()
	return nil
}

// Messages returns a copy of every message of a topic in partition order.
func (b *Broker) Messages(topicName string) []*reliable.Message {
	b.mu.Lock()
	defer b.mu.Unlock()
	t, ok := b.topics[topicName]
	if !ok {
		return nil
	}
	var out []*reliable.Message
	for _, p := range t.partitions {
		for _, m := range p {
			out = append(out, m.Clone())
		}
	}
	return out
}

// Committed returns the committed offset of each partition of topic for
// group: the next offset the group reads after a restart.
func (b *Broker) Committed(groupName, topicName string) []int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	g, ok := b.groups[groupName+"\x00"+topicName]
	if !ok {
		return nil
	}
	return append([]int64(nil), g.committed...)
}

// EndOffsets returns, per partition of topic, the offset the next message
// gets.
func (b *Broker) EndOffsets(topicName string) []int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	t, ok := b.topics[topicName]
	if !ok {
		return nil
	}
	ends := make([]int64, len(t.partitions))
	for p, msgs := range t.partitions {
		ends[p] = int64(len(msgs))
	}
	return ends
}

// Lag returns how many messages of topic the group has not committed yet.
func (b *Broker) Lag(groupName, topicName string) int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	t, ok := b.topics[topicName]
	if !ok {
		return 0
	}
	var lag int64
	g := b.groups[groupName+"\x00"+topicName]
	for p, msgs := range t.partitions {
		lag += int64(len(msgs))
		if g != nil {
			lag -= g.committed[p]
		}
	}
	return lag
}

func (b *Broker) notify() {
	close(b.changed)
	b.changed = make(chan struct{})
}

func (b *Broker) partitionFor(key string, n int) int {
	if key == "" {
		return 0
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(key))
	return int(h.Sum32() % uint32(n))
}

// publish writes msgs atomically: all or none.
func (b *Broker) publish(msgs []*reliable.Message) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.failPublishes) > 0 {
		err := b.failPublishes[0]
		b.failPublishes = b.failPublishes[1:]
		return failAll(msgs, err)
	}
	var failed []reliable.MessageError
	for _, m := range msgs {
		if _, ok := b.topics[m.Topic]; !ok && b.mutant == unknownTopicCreated {
			b.topics[m.Topic] = &topic{partitions: make([][]*reliable.Message, b.opts.Partitions)}
		}
		if _, ok := b.topics[m.Topic]; !ok {
			failed = append(failed, reliable.MessageError{MessageID: m.ID,
				Err: fmt.Errorf("reliabletest: topic %q: %w", m.Topic, reliable.ErrUnknownTopic)})
		} else if size := m.Size(); size > b.opts.MaxMessageBytes {
			failed = append(failed, reliable.MessageError{MessageID: m.ID,
				Err: &reliable.MessageTooLargeError{MessageID: m.ID, Size: size, Max: b.opts.MaxMessageBytes}})
		}
	}
	if len(failed) > 0 {
		return &reliable.PublishError{Failed: failed}
	}
	for _, m := range msgs {
		t := b.topics[m.Topic]
		p := b.partitionFor(m.Key, len(t.partitions))
		c := m.Clone()
		c.Delivery = reliable.DeliveryInfo{}
		b.published++
		if b.mutant == messageDropped && b.published%25 == 0 {
			continue
		}
		t.partitions[p] = append(t.partitions[p], c)
		if b.mutant == orderShuffled && b.published%2 == 0 {
			// Swap with the previous message of the same key.
			part := t.partitions[p]
			for j := len(part) - 2; j >= 0; j-- {
				if part[j].Key == c.Key {
					part[j], part[len(part)-1] = part[len(part)-1], part[j]
					break
				}
			}
		}
	}
	b.notify()
	if b.loseConfirms > 0 {
		b.loseConfirms--
		return failAll(msgs, fmt.Errorf("reliabletest: confirm lost: %w", reliable.ErrNotConfirmed))
	}
	return nil
}

func failAll(msgs []*reliable.Message, err error) error {
	pe := &reliable.PublishError{Failed: make([]reliable.MessageError, len(msgs))}
	for i, m := range msgs {
		pe.Failed[i] = reliable.MessageError{MessageID: m.ID, Err: err}
	}
	return pe
}

// group is one consumer group's state on one topic.
type group struct {
	committed  []int64             // per partition, the next offset to read after a restart
	trackers   []*ordering.Tracker // per partition, this generation's completions
	delivered  []int64             // per partition, highest offset ever delivered + 1
	generation int
	members    []*member
	mutant     mutant
}

func newGroup(partitions int, m mutant) *group {
	g := &group{
		committed: make([]int64, partitions),
		delivered: make([]int64, partitions),
		mutant:    m,
	}
	g.rebalance()
	return g
}

// rebalance starts a new generation: partitions are reassigned over the
// members and every member resumes from the committed offsets.
func (g *group) rebalance() {
	g.generation++
	g.trackers = make([]*ordering.Tracker, len(g.committed))
	for p := range g.committed {
		g.trackers[p] = ordering.NewTracker(g.committed[p])
	}
	for i, m := range g.members {
		m.assigned = m.assigned[:0]
		m.cursor = make(map[int]int64)
		for p := range g.committed {
			mine := p%len(g.members) == i
			if g.mutant == noSharing {
				mine = i == 0
			}
			if mine {
				m.assigned = append(m.assigned, p)
				m.cursor[p] = g.committed[p]
			}
		}
	}
}

// commit makes every acked-and-contiguous offset durable.
func (g *group) commit() {
	switch g.mutant {
	case commitSkipped:
		return
	case commitDelivered:
		for _, m := range g.members {
			for p, off := range m.cursor {
				g.committed[p] = max(g.committed[p], off)
			}
		}
		return
	}
	for p, tr := range g.trackers {
		g.committed[p] = tr.CommitPosition()
	}
}

type member struct {
	ended    bool // reconnectEnds mutant: the subscription stops
	assigned []int
	cursor   map[int]int64
	next     int // round-robin position in assigned
}

// deliveryRef locates a delivery for the acknowledger.
type deliveryRef struct {
	group      *group
	generation int
	partition  int
	offset     int64
}

// Ack implements reliable.Acknowledger. Acks of a previous generation are
// ignored: after a reconnect or rebalance the message is delivered again.
func (s *Subscriber) Ack(_ context.Context, d *reliable.Delivery) error {
	ref, ok := s.refs.LoadAndDelete(d)
	if !ok {
		return nil
	}
	r := ref.(deliveryRef)
	b := s.broker
	b.mu.Lock()
	defer b.mu.Unlock()
	if r.generation != r.group.generation || b.mutant == ackIgnored {
		return nil
	}
	r.group.trackers[r.partition].Complete(r.offset)
	if s.opts.CommitInterval == 0 {
		r.group.commit()
	}
	return nil
}

// Stale implements reliable.StaleReporter: a delivery of a previous
// generation (before a rebalance, a nack or a dropped connection) is stale;
// its message is delivered again.
func (s *Subscriber) Stale(d *reliable.Delivery) bool {
	ref, ok := s.refs.Load(d)
	if !ok {
		return false // settled
	}
	r := ref.(deliveryRef)
	s.broker.mu.Lock()
	defer s.broker.mu.Unlock()
	return r.generation != r.group.generation
}

// Nack implements reliable.Acknowledger: the group commits what is complete
// and starts over from there, so the nacked message and everything after it
// in its partition are delivered again.
func (s *Subscriber) Nack(_ context.Context, d *reliable.Delivery) error {
	ref, ok := s.refs.LoadAndDelete(d)
	if !ok {
		return nil
	}
	r := ref.(deliveryRef)
	b := s.broker
	b.mu.Lock()
	defer b.mu.Unlock()
	if r.generation != r.group.generation {
		return nil
	}
	switch b.mutant {
	case nackIgnored:
		return nil
	case nackToBack:
		r.group.trackers[r.partition].Complete(r.offset)
		part := &b.topics[d.Message.Topic].partitions[r.partition]
		c := (*part)[r.offset].Clone()
		*part = append(*part, c)
		b.notify()
		return nil
	}
	r.group.commit()
	r.group.rebalance()
	b.notify()
	return nil
}

// waitFor blocks until the broker changes, ctx ends or stop closes.
func waitFor(ctx context.Context, changed, stop <-chan struct{}) bool {
	select {
	case <-ctx.Done():
		return false
	case <-stop:
		return false
	case <-changed:
		return true
	case <-time.After(time.Second):
		return true
	}
}
