package reliabletest

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/reliable-go/reliable"
)

// EnvLong, set to a true value (1, true, yes, on), runs the long cases of
// [RunConformance] too: Scale (20 publishers x 10,000 messages). They are
// skipped otherwise, and always with -short.
const EnvLong = "RELIABLE_CONFORMANCE_LONG"

// Features says what a broker adapter guarantees; RunConformance tests each
// guarantee that is claimed, and the basics for every adapter. A case whose
// feature is not claimed is skipped with the reason given in Reasons.
type Features struct {
	// OrderPerKey: messages of one key are delivered in publish order, with
	// one subscriber and with many subscribers of one group on the broker's
	// default topology.
	OrderPerKey bool
	// CompetingConsumers: two subscribers of one group share the work (each
	// receives a part) and together receive every message.
	CompetingConsumers bool
	// NackRedelivers: a nacked delivery is delivered again without
	// restarting the subscriber, flagged Redelivered.
	NackRedelivers bool
	// OrderAfterNack: after a nack, no later message of the nacked message's
	// key is delivered (as a delivery that is not stale, see
	// reliable.Delivery.Stale) before the nacked message comes again. Brokers
	// that redeliver a nacked message after later ones leave per-key order
	// across a nack to the consumer package, and say so here.
	OrderAfterNack bool
	// RedeliveredAcrossSubscribers: a message that one subscriber (or
	// process) received and did not ack comes to the next subscriber of the
	// group flagged Message.Delivery.Redelivered.
	RedeliveredAcrossSubscribers bool
	// UnknownTopicFails: publishing to a topic that was never created fails
	// with reliable.ErrUnknownTopic (or reliable.ErrUnroutable) instead of
	// being confirmed.
	UnknownTopicFails bool
	// OutOfProcess: the broker runs outside the test process, so the suite
	// can consume from a child process (the test binary run again with
	// -test.run naming the case) and kill it with SIGKILL. Without it the
	// kill case stops the subscriber with Setup.Crash instead.
	OutOfProcess bool
	// AckLatency is the longest an acked delivery may still be delivered
	// again after its consumer is killed (a Kafka consumer commits acked
	// offsets every commit interval). The kill case waits this long after the
	// last ack before it kills the consumer. Zero means an ack is durable
	// when Ack returns.
	AckLatency time.Duration
	// RestartBroker, when set, crashes the broker (kill -9, every node of a
	// cluster) and starts it again; the suite then checks that confirmed
	// messages survive (L02) and that a live subscription carries on.
	RestartBroker func(ctx context.Context) error
	// Reconnect, when set, breaks every client connection (for example by
	// force-closing them on the broker); the LiveAcrossReconnect case uses it,
	// or RestartBroker when it is nil.
	Reconnect func(ctx context.Context) error
	// Reasons says, by case name, why the adapter does not claim a case's
	// feature; RunConformance shows it when it skips the case.
	Reasons map[string]string
}

// Setup tells RunConformance how to build the adapter under test.
type Setup struct {
	Features
	// NewPublisher returns a publisher; the suite closes it.
	NewPublisher func(t *testing.T) reliable.Publisher
	// NewSubscriber returns a subscriber in the named consumer group (a Kafka
	// group ID, a RabbitMQ queue); the suite closes it. The suite makes group
	// names unique; NewSubscriber must map a name to the same broker group
	// in every process, since the kill case subscribes from a child process.
	NewSubscriber func(t *testing.T, group string) reliable.Subscriber
	// CreateTopic makes topic exist so that publishing to it is confirmed and
	// each named group receives every message published from then on.
	CreateTopic func(t *testing.T, topic string, groups ...string)
	// Crash, when set, stops sub the way a killed process would: no commit,
	// no ack. Defaults to sub.Close().
	Crash func(sub reliable.Subscriber)
	// Timeout bounds each wait for messages. Defaults to 30s.
	Timeout time.Duration
}

// RunConformance runs the suite that every reliable.Publisher and
// reliable.Subscriber pair in the SDK passes. Every case checks what its
// name claims with bounded waits; see the case functions for the lesson
// (LESSONS.md) each one guards.
//
// The kill case of an OutOfProcess adapter runs the test binary again as a
// child process; RunConformance recognises that process by an environment
// variable and plays the child's part there.
func RunConformance(t *testing.T, s Setup) {
	t.Helper()
	if s.Timeout == 0 {
		s.Timeout = 30 * time.Second
	}
	if s.Crash == nil {
		s.Crash = func(sub reliable.Subscriber) { _ = sub.Close() }
	}
	c := &suite{Setup: s}
	for _, tc := range c.cases() {
		t.Run(tc.name, func(t *testing.T) {
			if !tc.claimed {
				why := s.Reasons[tc.name]
				if why == "" {
					why = tc.why
				}
				if why == "" {
					why = "not claimed by the adapter"
				}
				t.Skipf("needs %s: %s", tc.feature, why)
			}
			tc.run(t)
		})
	}
}

type conformanceCase struct {
	name    string
	feature string // what the case needs, for the skip message
	claimed bool
	why     string // default skip reason
	run     func(*testing.T)
}

// CaseNames returns the names of the conformance cases in the order
// RunConformance runs them.
func CaseNames() []string {
	var c suite
	var names []string
	for _, tc := range c.cases() {
		names = append(names, tc.name)
	}
	return names
}

func (c *suite) cases() []conformanceCase {
	all := func(name string, f func(*testing.T)) conformanceCase {
		return conformanceCase{name: name, feature: "basics", claimed: true, run: f}
	}
	needs := func(name, feature string, claimed bool, f func(*testing.T)) conformanceCase {
		return conformanceCase{name: name, feature: feature, claimed: claimed, run: f}
	}
	return []conformanceCase{
		all("PublishAndReceive", c.publishAndReceive),
		all("PublishAssignsIDs", c.publishAssignsIDs),
		all("ConcurrentPublishers", c.concurrentPublishers),
		all("UnsettledRedelivered", c.unsettledRedelivered),
		all("AckedNotRedeliveredAfterClose", c.ackedNotRedeliveredAfterClose),
		all("AckedNotRedeliveredAfterKill", c.ackedNotRedeliveredAfterKill),
		all("PublishAfterClose", c.publishAfterClose),
		all("PublishCanceledContext", c.publishCanceledContext),
		all("SubscriptionEndsWithContext", c.subscriptionEndsWithContext),
		all("ChannelClosesOnClose", c.channelClosesOnClose),
		all("ConcurrentClose", c.concurrentClose),
		all("TwoTopicsOneSubscriber", c.twoTopicsOneSubscriber),
		all("TwoGroupsEachGetAll", c.twoGroupsEachGetAll),
		all("ShutdownWithWorkInFlight", c.shutdownWithWorkInFlight),
		needs("OrderPerKey", "OrderPerKey", c.OrderPerKey, c.orderPerKey),
		needs("OrderPerKeyManySubscribers", "OrderPerKey", c.OrderPerKey, c.orderPerKeyManySubscribers),
		needs("CompetingConsumers", "CompetingConsumers", c.CompetingConsumers, c.competingConsumers),
		needs("NackRedelivers", "NackRedelivers", c.NackRedelivers, c.nackRedelivers),
		needs("NackMidStream", "NackRedelivers", c.NackRedelivers, c.nackMidStream),
		needs("RepeatedNacksAcrossSubscribers", "NackRedelivers", c.NackRedelivers, c.repeatedNacksAcrossSubscribers),
		needs("UnknownTopicFails", "UnknownTopicFails", c.UnknownTopicFails, c.unknownTopicFails),
		needs("PersistentAcrossRestart", "RestartBroker", c.RestartBroker != nil, c.persistentAcrossRestart),
		needs("LiveAcrossReconnect", "Reconnect or RestartBroker", c.Reconnect != nil || c.RestartBroker != nil, c.liveAcrossReconnect),
		{name: "Scale", feature: "the long suite", claimed: longSuite(), run: c.scale,
			why: "20 publishers x 10,000 messages; set " + EnvLong + "=1 (without -short) to run it"},
	}
}

// longSuite reports whether the long cases run.
func longSuite() bool {
	if testing.Short() {
		return false
	}
	switch strings.ToLower(strings.TrimSpace(os.Getenv(EnvLong))) {
	case "1", "true", "yes", "on":
		return true
	}
	return false
}

type suite struct {
	Setup
}

var nameSeq struct {
	sync.Mutex
	n int
}

// uniqueName returns a topic name that no other run uses; group names are
// derived from it, so they are unique too.
func uniqueName(*testing.T) string {
	nameSeq.Lock()
	defer nameSeq.Unlock()
	nameSeq.n++
	return fmt.Sprintf("conf-%d-%d-%d", os.Getpid(), time.Now().UnixNano()%1e9, nameSeq.n)
}

func (c *suite) newPublisher(t *testing.T) reliable.Publisher {
	p := c.NewPublisher(t)
	t.Cleanup(func() { _ = p.Close() })
	return p
}

func (c *suite) newSubscriber(t *testing.T, group string) reliable.Subscriber {
	s := c.NewSubscriber(t, group)
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func (c *suite) ctx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 4*c.Timeout)
	t.Cleanup(cancel)
	return ctx
}

func (c *suite) subscribe(t *testing.T, ctx context.Context, sub reliable.Subscriber, topic string) <-chan *reliable.Delivery {
	t.Helper()
	ch, err := sub.Subscribe(ctx, topic)
	if err != nil {
		t.Fatalf("subscribe to %s: %v", topic, err)
	}
	return ch
}

func (c *suite) publish(t *testing.T, ctx context.Context, pub reliable.Publisher, msgs ...*reliable.Message) {
	t.Helper()
	if err := pub.Publish(ctx, msgs...); err != nil {
		t.Fatalf("publish: %v", err)
	}
}

// makeMessages returns n messages spread over keys, each payload "key:seq"
// and header x-seq the message's position within its key.
func makeMessages(topic string, n, keys int) []*reliable.Message {
	return makeKeyed(topic, "key", n, keys, 0)
}

// makeKeyed returns n messages over keys named prefix-0.., their sequence
// numbers per key starting at from.
func makeKeyed(topic, prefix string, n, keys, from int) []*reliable.Message {
	msgs := make([]*reliable.Message, n)
	seq := make([]int, keys)
	for i := range msgs {
		k := i % keys
		key := prefix + "-" + strconv.Itoa(k)
		s := from + seq[k]
		msgs[i] = &reliable.Message{
			Topic:   topic,
			Key:     key,
			Type:    "test.event",
			Headers: map[string]string{"x-seq": strconv.Itoa(s)},
			Payload: []byte(key + ":" + strconv.Itoa(s)),
		}
		seq[k]++
	}
	return msgs
}

// markers returns one message per key of keys named prefix-0.., with a
// sequence number after every earlier one: where the broker keeps order per
// key, a stale message of a key would arrive before its key's marker.
func markers(topic, prefix string, keys int) []*reliable.Message {
	return makeKeyed(topic, prefix, keys, keys, 1_000_000)
}

func seqOf(t *testing.T, m *reliable.Message) int {
	t.Helper()
	s, err := strconv.Atoi(m.Headers["x-seq"])
	if err != nil {
		t.Fatalf("message %s has no x-seq header (%v): headers %v", m.ID, err, m.Headers)
	}
	return s
}

func idsOf(msgs []*reliable.Message) []string {
	ids := make([]string, len(msgs))
	for i, m := range msgs {
		ids[i] = m.ID
	}
	return ids
}

func idSet(msgs []*reliable.Message) map[string]bool {
	set := make(map[string]bool, len(msgs))
	for _, m := range msgs {
		set[m.ID] = true
	}
	return set
}

// receive reads deliveries until done returns true or the timeout passes,
// acking each delivery when ack is true.
func (c *suite) receive(t *testing.T, ch <-chan *reliable.Delivery, ack bool, done func(got []*reliable.Delivery) bool) []*reliable.Delivery {
	t.Helper()
	var got []*reliable.Delivery
	timer := time.NewTimer(c.Timeout)
	defer timer.Stop()
	for !done(got) {
		select {
		case d, ok := <-ch:
			if !ok {
				t.Fatalf("delivery channel closed after %d deliveries", len(got))
			}
			got = append(got, d)
			if ack {
				if err := d.Ack(context.Background()); err != nil {
					t.Fatalf("ack of %s: %v", d.Message.ID, err)
				}
			}
		case <-timer.C:
			t.Fatalf("timed out after %s with %d deliveries", c.Timeout, len(got))
		}
	}
	return got
}

func distinctIDs(ds []*reliable.Delivery) map[string]*reliable.Message {
	ids := make(map[string]*reliable.Message, len(ds))
	for _, d := range ds {
		ids[d.Message.ID] = d.Message
	}
	return ids
}

func haveAll(ids []string) func([]*reliable.Delivery) bool {
	return func(got []*reliable.Delivery) bool {
		seen := distinctIDs(got)
		for _, id := range ids {
			if _, ok := seen[id]; !ok {
				return false
			}
		}
		return true
	}
}

func haveN(n int) func([]*reliable.Delivery) bool {
	return func(got []*reliable.Delivery) bool { return len(got) >= n }
}

// events wakes waiters whenever a consumer records a delivery.
type events struct {
	mu      sync.Mutex
	changed chan struct{}
}

func newEvents() *events { return &events{changed: make(chan struct{})} }

func (e *events) notify() {
	e.mu.Lock()
	close(e.changed)
	e.changed = make(chan struct{})
	e.mu.Unlock()
}

func (e *events) wait() <-chan struct{} {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.changed
}

// consumer reads one subscription in its own goroutine, settles each
// delivery with its policy and records what happened, so a case can wait
// for events across several subscribers.
type consumer struct {
	ev *events

	mu     sync.Mutex
	got    []*reliable.Delivery
	err    error
	closed bool
	done   chan struct{}
}

// consume starts a consumer of ch that reports to ev. The policy settles
// each delivery, in the consumer's goroutine, one at a time; an error it
// returns fails the case at its next wait.
func consume(ev *events, name string, ch <-chan *reliable.Delivery, policy func(*reliable.Delivery) error) *consumer {
	cs := &consumer{ev: ev, done: make(chan struct{})}
	go func() {
		defer close(cs.done)
		for d := range ch {
			err := policy(d)
			cs.mu.Lock()
			cs.got = append(cs.got, d)
			if err != nil && cs.err == nil {
				cs.err = fmt.Errorf("%s: %w", name, err)
			}
			cs.mu.Unlock()
			ev.notify()
		}
		cs.mu.Lock()
		cs.closed = true
		cs.mu.Unlock()
		ev.notify()
	}()
	return cs
}

// snapshot returns the deliveries so far and the first policy error.
func (cs *consumer) snapshot() ([]*reliable.Delivery, error) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return append([]*reliable.Delivery(nil), cs.got...), cs.err
}

// ackAll acks every delivery.
func ackAll(d *reliable.Delivery) error {
	if err := d.Ack(context.Background()); err != nil {
		return fmt.Errorf("ack of %s: %w", d.Message.ID, err)
	}
	return nil
}

// waitAll waits until cond holds for the deliveries of all consumers
// together, failing t on a policy error or after the timeout.
func (c *suite) waitAll(t *testing.T, ev *events, what string, cond func(got []*reliable.Delivery) bool, cs ...*consumer) []*reliable.Delivery {
	t.Helper()
	timer := time.NewTimer(c.Timeout)
	defer timer.Stop()
	for {
		changed := ev.wait()
		var all []*reliable.Delivery
		for _, x := range cs {
			got, err := x.snapshot()
			if err != nil {
				t.Fatal(err)
			}
			all = append(all, got...)
		}
		if cond(all) {
			return all
		}
		select {
		case <-changed:
		case <-timer.C:
			t.Fatalf("timed out after %s waiting for %s (%d deliveries)", c.Timeout, what, len(all))
		}
	}
}

// ledger applies deliveries as an application would and counts what went
// wrong: a message applied twice, a message of a key applied after a later
// one of its key (out of order).
type ledger struct {
	mu         sync.Mutex
	applied    map[string]bool // message ID
	maxSeq     map[string]int  // key -> highest seq applied
	repeats    int
	outOfOrder []string
}

func newLedger() *ledger {
	return &ledger{applied: map[string]bool{}, maxSeq: map[string]int{}}
}

// apply records m as applied; an error means m is not a message of the
// suite (no x-seq header).
func (l *ledger) apply(m *reliable.Message) error {
	seq, err := strconv.Atoi(m.Headers["x-seq"])
	if err != nil {
		return fmt.Errorf("message %s has no x-seq header: %w", m.ID, err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.applied[m.ID] {
		l.repeats++
		return nil
	}
	l.applied[m.ID] = true
	if prev, ok := l.maxSeq[m.Key]; ok && seq < prev {
		l.outOfOrder = append(l.outOfOrder, fmt.Sprintf("key %s: seq %d after %d", m.Key, seq, prev))
		return nil
	}
	l.maxSeq[m.Key] = seq
	return nil
}

func (l *ledger) has(ids []string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, id := range ids {
		if !l.applied[id] {
			return false
		}
	}
	return true
}

func (l *ledger) verdict() (applied, repeats int, outOfOrder []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.applied), l.repeats, append([]string(nil), l.outOfOrder...)
}
