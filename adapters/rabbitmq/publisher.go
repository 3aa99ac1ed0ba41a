package rabbitmq

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/reliable-go/reliable"
)

// Publisher publishes messages to RabbitMQ and reports a message as sent
// only once the broker confirmed it (L03): publisher confirms on a pool of
// confirm-mode channels, persistent delivery mode (L02), and mandatory
// routing, so a message no queue is bound for fails with
// reliable.ErrUnroutable although the broker then acks it.
//
// Publish makes one attempt per message, waiting within ctx for the
// connection when it is down. Messages that were not confirmed (nacked, or
// the connection broke before the confirm) come back in a
// *reliable.PublishError matching reliable.ErrNotConfirmed. [NewProducer]
// wraps a Publisher with the producer package's retries; use it unless you
// retry yourself.
//
// A Publisher is safe for concurrent use.
type Publisher struct {
	cm    *connManager
	cfg   publisherConfig
	chans []*confirmChannel
	next  atomic.Uint64

	exchanges sync.Map // topic -> struct{}: exchanges known to exist
	forbidden sync.Map // topic -> forbiddenTopic: the broker refused a write

	closeMu  sync.RWMutex // Publish holds it shared, Close exclusively
	closed   atomic.Bool
	closing  context.Context // cancelled by Close after the close timeout: ends in-flight calls
	stopCall context.CancelFunc
	done     chan struct{} // closed by Close: stops the reapers

	// testHookAfterSend, when set, runs in the caller after its messages
	// were sent and before their confirms are read.
	testHookAfterSend func()
}

var _ reliable.Publisher = (*Publisher)(nil)

// NewPublisher connects to the broker at url (amqp:// or amqps://) and
// returns a Publisher. It fails at once with an error matching
// reliable.ErrNotAuthorized when the broker refuses the credentials, and with
// a *reliable.ConfigError for invalid options; when the broker is
// unreachable it returns a Publisher that keeps reconnecting, whose Publish
// waits within its context.
func NewPublisher(url string, opts ...PublisherOption) (*Publisher, error) {
	cfg, err := newPublisherConfig(opts)
	if err != nil {
		return nil, err
	}
	cm, err := newConnManager(url, &cfg.common, "publisher")
	if err != nil {
		return nil, err
	}
	p := &Publisher{cm: cm, cfg: cfg, done: make(chan struct{})}
	p.closing, p.stopCall = context.WithCancel(context.Background())
	p.chans = make([]*confirmChannel, cfg.channels)
	for i := range p.chans {
		cc := &confirmChannel{
			p:        p,
			queue:    make(chan sendReq, 64),
			window:   make(chan struct{}, cfg.window),
			inflight: make(chan *amqp.DeferredConfirmation, cfg.window),
		}
		p.chans[i] = cc
		go cc.run()
		go cc.reap()
	}
	return p, nil
}

// Publish sends msgs and waits for their confirms. It returns nil when the
// broker confirmed every message durably, else a *reliable.PublishError
// naming the failed ones, or ctx's error when ctx ended first (messages
// already sent may still be written).
//
// The messages of one call go over one channel in the order given, so one
// key's messages in a call are written in order. Publish sets empty IDs and
// zero times in place.
func (p *Publisher) Publish(ctx context.Context, msgs ...*reliable.Message) error {
	if p.closed.Load() {
		return reliable.ErrClosed
	}
	p.closeMu.RLock()
	defer p.closeMu.RUnlock()
	if p.closed.Load() {
		return reliable.ErrClosed
	}
	if len(msgs) == 0 {
		return nil
	}
	callCtx := ctx
	ctx, stop := p.bindClose(ctx)
	defer stop()
	err := p.publish(ctx, msgs)
	if err != nil && p.closing.Err() != nil && callCtx.Err() == nil {
		// Close cut the call short: say so, keeping the details.
		return fmt.Errorf("rabbitmq: publisher closed during publish: %w: %w", reliable.ErrClosed, err)
	}
	return err
}

// bindClose returns ctx, also cancelled when Close gives up waiting for
// in-flight calls.
func (p *Publisher) bindClose(ctx context.Context) (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	unhook := context.AfterFunc(p.closing, func() { cancel(reliable.ErrClosed) })
	return ctx, func() {
		unhook()
		cancel(nil)
	}
}

func (p *Publisher) publish(ctx context.Context, msgs []*reliable.Message) error {
	now := time.Now()
	frameMax := p.cm.frameMax()
	for _, m := range msgs {
		if m == nil {
			return &reliable.InvalidMessageError{Problems: []string{"message is nil"}}
		}
		m.EnsureID()
		if m.Time.IsZero() {
			m.Time = now
		}
		if err := m.Validate(); err != nil {
			return err
		}
		// Refused before anything is written: a field AMQP cannot encode
		// would break the connection every other publish shares.
		if err := checkWire(m, frameMax); err != nil {
			return err
		}
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("rabbitmq: publish: %w", err)
	}

	errs := make([]error, len(msgs))
	send := msgs
	if unknown, err := p.checkExchanges(ctx, msgs); err != nil {
		return err
	} else if len(unknown) > 0 {
		send = send[:0:0]
		for i, m := range msgs {
			if e, ok := unknown[m.Topic]; ok {
				errs[i] = e
			} else {
				send = append(send, m)
			}
		}
	}
	if len(send) > 0 {
		sent, err := p.pick().publish(ctx, send)
		if err != nil {
			return err
		}
		j := 0
		for i := range msgs {
			if errs[i] == nil {
				errs[i] = sent[j]
				j++
			}
		}
	}
	var pe reliable.PublishError
	for i, err := range errs {
		if err != nil {
			pe.Failed = append(pe.Failed, reliable.MessageError{MessageID: msgs[i].ID, Err: err})
		}
	}
	if len(pe.Failed) > 0 {
		return &pe
	}
	return nil
}

// checkExchanges makes sure the exchange of each topic exists, once per
// topic, with a passive declare on a throwaway channel: publishing to a
// missing exchange would close the shared confirm channel with 404 and fail
// every message in flight on it. It returns the topics that do not exist,
// with their error.
func (p *Publisher) checkExchanges(ctx context.Context, msgs []*reliable.Message) (map[string]error, error) {
	var unknown map[string]error
	for _, m := range msgs {
		if f, ok := p.forbidden.Load(m.Topic); ok {
			if f := f.(forbiddenTopic); time.Since(f.at) < forbiddenTTL {
				if unknown == nil {
					unknown = make(map[string]error)
				}
				unknown[m.Topic] = fmt.Errorf("rabbitmq: topic %q: %w", m.Topic, f.err)
				continue
			}
			p.forbidden.Delete(m.Topic)
		}
		if _, ok := p.exchanges.Load(m.Topic); ok {
			continue
		}
		if _, ok := unknown[m.Topic]; ok {
			continue
		}
		conn, _, err := p.cm.connection(ctx)
		if err != nil {
			return nil, err
		}
		err = withChannel(ctx, conn, func(ch *amqp.Channel) error {
			return ch.ExchangeDeclarePassive(ExchangeName(p.cfg.prefix()+m.Topic), amqp.ExchangeTopic, true, false, false, false, nil)
		})
		switch {
		case err == nil:
			p.exchanges.Store(m.Topic, struct{}{})
		case ctx.Err() != nil:
			return nil, err
		default:
			err = classify(err)
			if unknown == nil {
				unknown = make(map[string]error)
			}
			unknown[m.Topic] = fmt.Errorf("rabbitmq: topic %q: %w", m.Topic, err)
		}
	}
	return unknown, nil
}

// ctxError is the error for ctx ending while doing what; it names the
// broker's resource alarm when one blocks the connection.
func (p *Publisher) ctxError(ctx context.Context, what string) error {
	// With ctx done, waitUnblocked returns at once: nil, or the alarm.
	if err := p.cm.waitUnblocked(ctx); err != nil {
		return err
	}
	return fmt.Errorf("rabbitmq: %s: %w", what, ctx.Err())
}

// pick returns a confirm channel, preferring one with no calls queued.
func (p *Publisher) pick() *confirmChannel {
	start := p.next.Add(1)
	n := uint64(len(p.chans))
	for i := uint64(0); i < n; i++ {
		cc := p.chans[(start+i)%n]
		if len(cc.queue) == 0 {
			return cc
		}
	}
	return p.chans[start%n]
}

// Close waits for in-flight Publish calls, up to the close timeout (see
// WithCloseTimeout), then makes the ones still waiting (for a reconnect, a
// resource alarm, confirms) return an error matching reliable.ErrClosed, and
// closes the channels and the connection, which takes at most 5 s more.
// Publish after Close returns reliable.ErrClosed.
func (p *Publisher) Close() error {
	if p.closed.Swap(true) {
		return nil
	}
	locked := make(chan struct{})
	go func() {
		p.closeMu.Lock()
		close(locked)
	}()
	timer := time.NewTimer(p.cfg.closeTimeout)
	select {
	case <-locked:
	case <-timer.C:
		p.stopCall()
		<-locked // every wait in Publish ends with its context
	}
	timer.Stop()
	p.stopCall()
	defer p.closeMu.Unlock()
	p.cm.close()
	close(p.done)
	return nil
}

// confirmChannel is one slot of the channel pool. It owns a confirm-mode
// channel, reopened after it closes, and the window of in-flight messages.
// One sender goroutine publishes the queued calls in order, like a raw
// amqp091-go loop, and one reaper frees the window as confirms arrive.
type confirmChannel struct {
	p        *Publisher
	queue    chan sendReq                    // calls waiting for the sender
	window   chan struct{}                   // one token per message published and not confirmed
	inflight chan *amqp.DeferredConfirmation // the published ones, in order, for reap
	cur      *pubChan                        // owned by the sender goroutine
}

// sendReq is one Publish call's messages for the sender.
type sendReq struct {
	ctx  context.Context
	msgs []*reliable.Message
	res  chan sendResult // buffered: the sender never waits for the caller
}

// sendResult is what the sender hands back: the deferred confirmations of
// the messages sent, and the errors of the ones that were not.
type sendResult struct {
	pc   *pubChan
	dcs  []*amqp.DeferredConfirmation
	errs []error
}

// run is the sender goroutine. It writes to the socket, which cannot be
// interrupted: a broker that stopped reading (a resource alarm that began
// mid-call, a network blackhole) stalls it, while callers still return when
// their context ends (#111).
func (cc *confirmChannel) run() {
	for {
		select {
		case req := <-cc.queue:
			if err := req.ctx.Err(); err != nil {
				req.res <- sendResult{} // the caller is gone
				continue
			}
			req.res <- cc.send(req.ctx, req.msgs)
		case <-cc.p.done:
			return
		}
	}
}

// reap returns each message's window token once its confirm (or nack, or
// channel close) arrived, in publish order, like a raw sliding window: one
// goroutine per channel frees a whole burst of confirms at once, instead of
// each waiting caller being woken to return its own tokens.
func (cc *confirmChannel) reap() {
	for {
		select {
		case dc := <-cc.inflight:
			<-dc.Done() // always closes: ack, nack, or the channel's end
			<-cc.window
		case <-cc.p.done:
			return
		}
	}
}

func notConfirmed(reason string) error {
	return fmt.Errorf("rabbitmq: %s: %w", reason, reliable.ErrNotConfirmed)
}

// publish hands msgs to the sender and waits for their confirms. It returns
// one error per message (nil when confirmed), or ctx's error.
func (cc *confirmChannel) publish(ctx context.Context, msgs []*reliable.Message) ([]error, error) {
	req := sendReq{ctx: ctx, msgs: msgs, res: make(chan sendResult, 1)}
	select {
	case cc.queue <- req:
	case <-ctx.Done():
		return nil, cc.p.ctxError(ctx, "publish")
	}
	var r sendResult
	select {
	case r = <-req.res:
	case <-ctx.Done():
		go func() {
			select {
			case r := <-req.res:
				cc.release(r, msgs, 0)
			case <-cc.p.done:
			}
		}()
		return nil, cc.p.ctxError(ctx, "publish")
	}
	if r.errs == nil { // skipped: ctx ended while queued
		return nil, cc.p.ctxError(ctx, "publish")
	}
	if h := cc.p.testHookAfterSend; h != nil {
		h()
	}
	for i, dc := range r.dcs {
		if dc == nil {
			continue
		}
		select {
		case <-dc.Done():
			if !dc.Acked() {
				// A nack, or the channel closed first: the outcome is unknown.
				r.errs[i] = notConfirmed("broker did not confirm (nack or channel closed)")
			}
		case <-ctx.Done():
			go cc.release(r, msgs, i)
			return nil, cc.p.ctxError(ctx, "waiting for confirms")
		}
	}
	if r.pc != nil {
		for i, ret := range r.pc.takeReturns(msgs, r.dcs) {
			if r.errs[i] == nil {
				r.errs[i] = reliable.Permanent(fmt.Errorf(
					"rabbitmq: exchange %q returned message %q (%d %s): no queue is bound for routing key %q; declare the consumer groups' queues first (rabbitmq.Declare): %w",
					ret.Exchange, msgs[i].ID, ret.ReplyCode, ret.ReplyText, ret.RoutingKey, reliable.ErrUnroutable))
			}
		}
	}
	return r.errs, nil
}

// release forgets the returns of r's messages once their confirms arrived:
// the caller stopped waiting.
func (cc *confirmChannel) release(r sendResult, msgs []*reliable.Message, from int) {
	for _, dc := range r.dcs[from:] {
		if dc != nil {
			<-dc.Done()
		}
	}
	if r.pc != nil {
		r.pc.takeReturns(msgs, r.dcs)
	}
}

// send publishes msgs in order and returns their deferred confirmations.
// Only the sender goroutine calls it.
func (cc *confirmChannel) send(ctx context.Context, msgs []*reliable.Message) sendResult {
	r := sendResult{dcs: make([]*amqp.DeferredConfirmation, len(msgs)), errs: make([]error, len(msgs))}
	fail := func(from int, err error) {
		for j := from; j < len(msgs); j++ {
			r.errs[j] = err
		}
	}
	pc, err := cc.current(ctx)
	if err != nil {
		fail(0, err)
		return r
	}
	r.pc = pc
	cm := cc.p.cm
	for i, m := range msgs {
		if err := cm.waitUnblocked(ctx); err != nil {
			fail(i, err)
			return r
		}
		select {
		case cc.window <- struct{}{}:
		case <-ctx.Done():
			fail(i, fmt.Errorf("rabbitmq: waiting for the confirm window: %w", ctx.Err()))
			return r
		}
		pub := toPublishing(m)
		if env := cc.p.cfg.environment; env != "" {
			pub.Headers[reliable.HeaderEnvironment] = env
		}
		dc, err := pc.ch.PublishWithDeferredConfirmWithContext(ctx, ExchangeName(cc.p.cfg.prefix()+m.Topic), routingKey(m), true, false, pub)
		if err != nil || dc == nil {
			<-cc.window
			if ctx.Err() != nil {
				fail(i, fmt.Errorf("rabbitmq: publish: %w", ctx.Err()))
			} else {
				fail(i, notConfirmed(fmt.Sprintf("send failed: %v", classify(err))))
			}
			return r
		}
		r.dcs[i] = dc
		cc.inflight <- dc // never blocks: it has room for the whole window
	}
	return r
}

// current returns the open channel, opening one (and waiting for the
// connection) when needed. Only the sender goroutine calls it.
func (cc *confirmChannel) current(ctx context.Context) (*pubChan, error) {
	if cc.cur != nil && !cc.cur.ch.IsClosed() {
		return cc.cur, nil
	}
	cc.cur = nil
	cm := cc.p.cm
	for attempt := 1; ; attempt++ {
		conn, _, err := cm.connection(ctx)
		if err != nil {
			return nil, err
		}
		pc, err := openPubChan(conn, cc.p.channelClosed)
		if err == nil {
			cc.cur = pc
			return pc, nil
		}
		if fatal(err) {
			return nil, err
		}
		if serr := reliable.Sleep(ctx, cm.cfg.backoff.Delay(attempt)); serr != nil {
			return nil, fmt.Errorf("rabbitmq: opening a confirm channel: %w (last error: %v)", serr, err)
		}
	}
}

// channelClosed learns from the broker's reason for closing a confirm
// channel, so that the next Publish fails at once instead of closing the
// shared channel again under every message in flight on it:
//
//   - 404, an exchange was deleted: the cache of existing exchanges is
//     dropped, and the next Publish to it fails with ErrUnknownTopic;
//   - 403, the user may not write to an exchange: Publish to that topic fails
//     with ErrNotAuthorized (permanent) for forbiddenTTL, after which it is
//     tried again, in case an operator granted the permission.
func (p *Publisher) channelClosed(e *amqp.Error) {
	switch e.Code {
	case amqp.NotFound:
		p.exchanges.Clear()
	case amqp.AccessRefused:
		if topic, ok := refusedExchange(e.Reason); ok {
			p.forbidden.Store(topic, forbiddenTopic{
				err: fmt.Errorf("%w: %w", reliable.ErrNotAuthorized, e),
				at:  time.Now(),
			})
		}
	}
}

// forbiddenTTL is how long a topic the broker refused writes to is refused
// without asking the broker again.
const forbiddenTTL = 30 * time.Second

// forbiddenTopic is a topic the broker refused a write to, and why.
type forbiddenTopic struct {
	err error
	at  time.Time
}

// refusedExchange returns the exchange a 403 close reason names, as
// RabbitMQ 3.10 words it: "ACCESS_REFUSED - access to exchange 'T' in vhost
// '/' refused for user 'u'" (other versions say "write access to ...").
func refusedExchange(reason string) (string, bool) {
	const marker = "access to exchange '"
	_, rest, ok := strings.Cut(reason, marker)
	if !ok {
		return "", false
	}
	name, _, ok := strings.Cut(rest, "' in vhost")
	return name, ok
}

// returnsBuffer holds the returns the broker may send before the collector
// or a caller moves them into the map. It is far more than a collection
// interval's worth; were it full, amqp091-go would block its reader for up
// to 5 s and then drop the return (v1.13+), which collect prevents by
// emptying it every returnsCollectInterval.
const (
	returnsBuffer          = 4096
	returnsCollectInterval = 100 * time.Millisecond
)

// pubChan is one amqp091-go channel in confirm mode, with its returns.
//
// A mandatory message that no queue takes is returned (basic.return) and
// then acked. amqp091-go's reader goroutine puts the return into the
// buffered returns channel before it processes the ack, so once a caller saw
// the ack, the return is in the channel or already in the map: collect,
// under mu, moves the channel's contents into the map, and nothing can be
// in between.
type pubChan struct {
	ch      *amqp.Channel
	returns chan amqp.Return

	mu       sync.Mutex
	returned map[string]amqp.Return // by message ID
}

func openPubChan(conn *amqp.Connection, onClose func(*amqp.Error)) (*pubChan, error) {
	ch, err := conn.Channel()
	if err != nil {
		return nil, fmt.Errorf("rabbitmq: open channel: %w", classify(err))
	}
	if err := ch.Confirm(false); err != nil {
		_ = ch.Close()
		return nil, fmt.Errorf("rabbitmq: enable confirms: %w", classify(err))
	}
	pc := &pubChan{
		ch:       ch,
		returns:  ch.NotifyReturn(make(chan amqp.Return, returnsBuffer)),
		returned: make(map[string]amqp.Return),
	}
	closes := ch.NotifyClose(make(chan *amqp.Error, 1))
	go pc.watch(closes, onClose)
	return pc, nil
}

// watch empties the returns channel periodically until the channel closes,
// and reports the broker's close to onClose.
func (pc *pubChan) watch(closes <-chan *amqp.Error, onClose func(*amqp.Error)) {
	tick := time.NewTicker(returnsCollectInterval)
	defer tick.Stop()
	for {
		select {
		case e, ok := <-closes:
			if e != nil {
				onClose(e)
			}
			if !ok {
				pc.collect()
				return
			}
		case <-tick.C:
			pc.collect()
		}
	}
}

// collect moves the buffered returns into the map.
func (pc *pubChan) collect() {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	pc.collectLocked()
}

func (pc *pubChan) collectLocked() {
	for {
		select {
		case r, ok := <-pc.returns:
			if !ok {
				return
			}
			pc.returned[r.MessageId] = r
		default:
			return
		}
	}
}

// takeReturns returns, by index, the messages of msgs that were sent (dcs
// not nil) and returned, and forgets them. Their confirms must have arrived.
func (pc *pubChan) takeReturns(msgs []*reliable.Message, dcs []*amqp.DeferredConfirmation) map[int]amqp.Return {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	pc.collectLocked()
	if len(pc.returned) == 0 {
		return nil
	}
	var out map[int]amqp.Return
	for i, m := range msgs {
		if dcs[i] == nil {
			continue
		}
		if r, ok := pc.returned[m.ID]; ok {
			delete(pc.returned, m.ID)
			if out == nil {
				out = make(map[int]amqp.Return)
			}
			out[i] = r
		}
	}
	return out
}
