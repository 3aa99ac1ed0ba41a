package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/IBM/sarama"

	"github.com/reliable-go/reliable"
)

// Publisher is a single-attempt durable reliable.Publisher on sarama's
// AsyncProducer: acks from all in-sync replicas, the idempotent producer, one
// request in flight per broker, no topic auto-creation, and the murmur2
// partitioner. It is safe for concurrent use.
//
// "Single attempt" means Publish reports a record that sarama gave up on
// (after Config.Producer.Retries resends) instead of sending it again; wrap
// it in producer.New, as [NewProducer] does, to retry until the context ends.
type Publisher struct {
	cfg    Config
	prefix string
	log    *slog.Logger
	client sarama.Client
	prod   sarama.AsyncProducer
	topics *topicChecker

	mu     sync.RWMutex  // held for reading while sending to prod.Input()
	closed atomic.Bool   // set under mu
	done   chan struct{} // closed when both result channels are drained
}

var _ reliable.AsyncPublisher = (*Publisher)(nil)

// NewPublisher connects to the cluster and returns a Publisher. It refuses an
// invalid cfg with a *reliable.ConfigError listing every problem, and bad
// credentials with an error matching reliable.ErrNotAuthorized. When
// cfg.Audit.Topics is set, their durability is audited before it returns.
func NewPublisher(cfg Config) (*Publisher, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	sc, err := cfg.saramaConfig(roleProducer)
	if err != nil {
		return nil, err
	}
	client, err := sarama.NewClient(cfg.Brokers, sc)
	if err != nil {
		return nil, classifyConnect(err)
	}
	prod, err := sarama.NewAsyncProducerFromClient(client)
	if err != nil {
		_ = client.Close()
		return nil, classifyConnect(err)
	}
	p := &Publisher{
		cfg:    cfg,
		prefix: cfg.prefix(),
		log:    cfg.Logger,
		client: client,
		prod:   prod,
		topics: newTopicChecker(client, cfg.Audit, cfg.Audit.policyFor(roleProducer), cfg.Logger),
		done:   make(chan struct{}),
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for rec := range prod.Successes() {
			settle(rec, nil)
		}
	}()
	go func() {
		defer wg.Done()
		for e := range prod.Errors() {
			settle(e.Msg, e.Err)
		}
	}()
	go func() {
		wg.Wait()
		close(p.done)
	}()
	if len(cfg.Audit.Topics) > 0 {
		if err := p.topics.check(context.Background(), p.kafkaTopics(cfg.Audit.Topics)...); err != nil {
			_ = p.Close()
			return nil, err
		}
	}
	return p, nil
}

// errClosed matches reliable.ErrClosed and is permanent, so a retry loop
// around a closed publisher stops.
var errClosed = reliable.Permanent(reliable.ErrClosed)

// inflight is a record's sarama Metadata: where its result goes.
type inflight struct {
	id   string
	size int
	max  int
	// Exactly one of b and fn is set.
	b   *batch
	idx int
	fn  func(*reliable.Message, error)
	msg *reliable.Message // for fn
}

// batch collects the results of one Publish call.
type batch struct {
	mu        sync.Mutex
	errs      []error
	settled   []bool
	remaining int
	done      chan struct{}
}

func settle(rec *sarama.ProducerMessage, err error) {
	f, ok := rec.Metadata.(*inflight)
	if !ok {
		return
	}
	if err != nil {
		err = classify(err, f.id, f.size, f.max)
	}
	if f.fn != nil {
		f.fn(f.msg, err)
		return
	}
	b := f.b
	b.mu.Lock()
	b.errs[f.idx] = err
	b.settled[f.idx] = true
	b.remaining--
	if b.remaining == 0 {
		close(b.done)
	}
	b.mu.Unlock()
}

// Publish sends msgs and waits until the cluster acknowledged every one of
// them on all in-sync replicas. It returns nil only then.
//
// Nothing is sent when a message is invalid (*reliable.InvalidMessageError),
// larger than Config.Producer.MaxMessageBytes (*reliable.MessageTooLargeError,
// L13), or for a topic that does not exist (reliable.ErrUnknownTopic) or fails
// the durability audit (ErrNotDurable). Otherwise a *reliable.PublishError
// lists each message that was not acknowledged: its error matches
// reliable.ErrNotConfirmed when retrying may help (sarama gave up after
// Config.Producer.Retries resends; the record may still have been written),
// or a permanent sentinel such as reliable.ErrNotAuthorized.
//
// Messages of one key keep their order within a call. When ctx ends first,
// the unacknowledged messages are reported with ctx's error; they may still
// be written.
func (p *Publisher) Publish(ctx context.Context, msgs ...*reliable.Message) error {
	recs, err := p.prepare(ctx, msgs)
	if err != nil || len(recs) == 0 {
		return err
	}
	b := &batch{
		errs:      make([]error, len(recs)),
		settled:   make([]bool, len(recs)),
		remaining: len(recs),
		done:      make(chan struct{}),
	}
	for i, rec := range recs {
		rec.Metadata.(*inflight).b = b
		rec.Metadata.(*inflight).idx = i
	}
	sent, err := p.send(ctx, recs)
	if err != nil {
		// Records never handed to sarama fail now; the others are awaited
		// below as usual.
		b.mu.Lock()
		for i := sent; i < len(recs); i++ {
			b.errs[i], b.settled[i] = err, true
			b.remaining--
		}
		if b.remaining == 0 {
			close(b.done)
		}
		b.mu.Unlock()
	}
	select {
	case <-b.done:
	case <-ctx.Done():
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	var failed []reliable.MessageError
	for i, m := range msgs {
		e := b.errs[i]
		if !b.settled[i] {
			e = fmt.Errorf("kafka: stopped waiting for the acknowledgement: %w: %w", reliable.ErrNotConfirmed, ctx.Err())
		}
		if e != nil {
			failed = append(failed, reliable.MessageError{MessageID: m.ID, Err: e})
		}
	}
	if len(failed) > 0 {
		p.topics.forgetIfUnknown(failed)
		return &reliable.PublishError{Failed: failed}
	}
	return nil
}

// PublishAsync sends msg without waiting and calls done exactly once, from
// the producer's own goroutine, when the cluster acknowledged it on all
// in-sync replicas (nil) or sarama gave up (an error classified as in
// Publish). done must not block. When PublishAsync returns an error, nothing
// was sent and done is never called. ctx bounds only the hand-over to sarama.
//
// Records of one key are written in the order of the PublishAsync calls
// that returned nil, as long as none failed; after a failure, resend it and
// everything after it of that key.
func (p *Publisher) PublishAsync(ctx context.Context, msg *reliable.Message, done func(*reliable.Message, error)) error {
	if done == nil {
		return errors.New("kafka: PublishAsync needs a done function")
	}
	if p.closed.Load() {
		return errClosed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	rec, err := p.record(msg, time.Now())
	if err != nil {
		return err
	}
	if !p.topics.known(rec.Topic) {
		if err := p.topics.check(ctx, rec.Topic); err != nil {
			return err
		}
	}
	f := rec.Metadata.(*inflight)
	f.fn, f.msg = done, msg
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed.Load() {
		return errClosed
	}
	select {
	case p.prod.Input() <- rec:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("kafka: not sent: %w", ctx.Err())
	}
}

// prepare validates msgs, stamps IDs and times, checks sizes and topics, and
// returns the records to send; nothing is sent on error.
func (p *Publisher) prepare(ctx context.Context, msgs []*reliable.Message) ([]*sarama.ProducerMessage, error) {
	if p.closed.Load() {
		return nil, errClosed
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	now := time.Now()
	recs := make([]*sarama.ProducerMessage, len(msgs))
	var topics []string
	for i, m := range msgs {
		rec, err := p.record(m, now)
		if err != nil {
			return nil, err
		}
		recs[i] = rec
		if !p.topics.known(rec.Topic) && !contains(topics, rec.Topic) {
			topics = append(topics, rec.Topic)
		}
	}
	if err := p.topics.check(ctx, topics...); err != nil {
		return nil, err
	}
	return recs, nil
}

// record validates and stamps m and builds its record, with an inflight as
// its Metadata.
func (p *Publisher) record(m *reliable.Message, now time.Time) (*sarama.ProducerMessage, error) {
	if m == nil {
		return nil, &reliable.InvalidMessageError{Problems: []string{"message is nil"}}
	}
	m.EnsureID()
	if m.Time.IsZero() {
		m.Time = now
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	rec := toRecord(m, p.prefix+m.Topic, p.cfg.Environment)
	size := recordSize(rec)
	if size > p.cfg.Producer.MaxMessageBytes {
		return nil, &reliable.MessageTooLargeError{MessageID: m.ID, Size: size, Max: p.cfg.Producer.MaxMessageBytes}
	}
	rec.Metadata = &inflight{id: m.ID, size: size, max: p.cfg.Producer.MaxMessageBytes}
	return rec, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// send hands recs to sarama in order and returns how many it handed over.
func (p *Publisher) send(ctx context.Context, recs []*sarama.ProducerMessage) (int, error) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed.Load() {
		return 0, errClosed
	}
	in := p.prod.Input()
	for i, rec := range recs {
		select {
		case in <- rec:
		case <-ctx.Done():
			return i, fmt.Errorf("kafka: not sent: %w", ctx.Err())
		}
	}
	return len(recs), nil
}

func (p *Publisher) kafkaTopics(topics []string) []string {
	out := make([]string, len(topics))
	for i, t := range topics {
		out[i] = p.prefix + t
	}
	return out
}

// Audit checks the durability settings of topics (unprefixed names) now,
// whatever the configured policy, and returns what it found.
func (p *Publisher) Audit(ctx context.Context, topics ...string) ([]Finding, error) {
	adm, err := p.topics.admin()
	if err != nil {
		return nil, err
	}
	return Audit(ctx, adm, p.cfg.Audit, p.kafkaTopics(topics)...)
}

// Close waits up to Config.Producer.CloseTimeout for records in flight to be
// acknowledged or fail, then closes the connections. Publish after Close
// returns reliable.ErrClosed.
func (p *Publisher) Close() error {
	p.mu.Lock()
	if p.closed.Load() {
		p.mu.Unlock()
		return nil
	}
	p.closed.Store(true)
	p.mu.Unlock()

	p.prod.AsyncClose()
	t := time.NewTimer(p.cfg.Producer.CloseTimeout)
	defer t.Stop()
	select {
	case <-p.done:
	case <-t.C:
		// The drain goroutines keep running and settle what still arrives;
		// the client stays open for them.
		return fmt.Errorf("kafka: close: records still in flight after %s", p.cfg.Producer.CloseTimeout)
	}
	if err := p.client.Close(); err != nil && !errors.Is(err, sarama.ErrClosedClient) {
		return fmt.Errorf("kafka: close client: %w", err)
	}
	return nil
}
