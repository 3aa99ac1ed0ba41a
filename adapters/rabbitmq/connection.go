package rabbitmq

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	neturl "net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/reliable-go/reliable"
)

// This adapter runs its own reconnect loop instead of amqp091-go's
// Config.Recovery (v1.12+): that one gives up after 5 attempts by default,
// reopens a channel after any abnormal close, and reuses the *Channel as the
// deliveries' Acknowledger with no stale-tag guard (PITFALLS B2, B3). Here a
// lost connection is replaced by a new *amqp.Connection, whose channels are
// new objects: an ack for a delivery of the old channel can never be sent on
// the new one, and each subscription channel carries a generation so such
// acks are dropped before they reach the library.

// classify maps broker errors to the SDK's sentinels, keeping the original
// error in the chain.
func classify(err error) error {
	if err == nil {
		return nil
	}
	var ae *amqp.Error
	if errors.As(err, &ae) {
		switch {
		case ae.Code == amqp.AccessRefused:
			return fmt.Errorf("%w: %w", reliable.ErrNotAuthorized, err)
		case ae.Code == amqp.NotAllowed && strings.Contains(strings.ToLower(ae.Reason), "vhost"):
			return fmt.Errorf("%w: %w", reliable.ErrNotAuthorized, err)
		case ae.Code == amqp.NotFound:
			return fmt.Errorf("%w: %w", reliable.ErrUnknownTopic, err)
		}
	}
	return err
}

// fatal reports whether err means reconnecting cannot help.
func fatal(err error) bool { return errors.Is(err, reliable.ErrNotAuthorized) }

// RedactURL returns url with its password replaced by "xxxxx", for logs and
// errors. A URL that does not parse loses its whole user info.
func RedactURL(url string) string {
	uri, err := amqp.ParseURI(url)
	if err == nil {
		if uri.Password != "" {
			uri.Password = "xxxxx"
		}
		return uri.String()
	}
	scheme, rest, ok := strings.Cut(url, "://")
	if !ok {
		return "(unparsable URL)"
	}
	host := rest
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		host = rest[:i]
	}
	if at := strings.LastIndex(host, "@"); at >= 0 {
		rest = "xxxxx@" + rest[at+1:]
	}
	return scheme + "://" + rest
}

// dial opens one connection, bounded by ctx and the dial timeout. Errors
// never contain the password.
func dial(ctx context.Context, url string, c *common) (*amqp.Connection, error) {
	if _, err := amqp.ParseURI(url); err != nil {
		var ue *neturl.Error
		if errors.As(err, &ue) {
			err = ue.Err // a *url.Error repeats the URL, password included
		}
		return nil, &reliable.ConfigError{Component: "rabbitmq", Problems: []string{
			fmt.Sprintf("URL %s: %v", RedactURL(url), err)}}
	}
	props := amqp.NewConnectionProperties()
	if c.connName != "" {
		props.SetClientConnectionName(c.connName)
	}
	cfg := amqp.Config{
		Heartbeat:  c.heartbeat,
		Properties: props,
		Dial:       amqp.DefaultDial(c.dialTimeout),
	}
	if c.tls != nil {
		cfg.TLSClientConfig = c.tls.Clone()
	}
	type result struct {
		conn *amqp.Connection
		err  error
	}
	done := make(chan result, 1)
	go func() {
		conn, err := amqp.DialConfig(url, cfg)
		done <- result{conn, err}
	}()
	select {
	case r := <-done:
		if r.err != nil {
			return nil, fmt.Errorf("rabbitmq: connect to %s: %w", RedactURL(url), classify(r.err))
		}
		return r.conn, nil
	case <-ctx.Done():
		go func() {
			if r := <-done; r.conn != nil {
				_ = r.conn.Close()
			}
		}()
		return nil, fmt.Errorf("rabbitmq: connect to %s: %w", RedactURL(url), ctx.Err())
	}
}

// closeDeadline bounds how long closing a connection waits for the
// broker's close-ok.
const closeDeadline = 5 * time.Second

// connManager keeps one connection open: it redials with backoff whenever the
// connection is lost, until closed or until the broker refuses the
// credentials. Users get the current connection and its generation from
// connection and open their own channels on it.
type connManager struct {
	url  string
	cfg  *common
	role string
	log  *slog.Logger

	mu        sync.Mutex
	conn      *amqp.Connection
	gen       uint64
	ready     chan struct{} // closed once conn is set, fatalErr is set, or closed
	fatal     error
	lastErr   error
	blocked   chan struct{} // non-nil while the broker blocks publishing
	reason    string
	isBlocked atomic.Bool // blocked != nil, read without the lock
	closed    bool

	done chan struct{}
	wg   sync.WaitGroup
}

// newConnManager dials once and starts the reconnect loop. It fails at once
// on a refused login or an invalid URL; when the broker is unreachable it
// returns a manager that keeps trying, so an application can start before
// its broker.
func newConnManager(url string, cfg *common, role string) (*connManager, error) {
	m := &connManager{
		url: url, cfg: cfg, role: role,
		log:   cfg.logger.With(slog.String("component", "rabbitmq "+role), slog.String("url", RedactURL(url))),
		ready: make(chan struct{}),
		done:  make(chan struct{}),
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.dialTimeout)
	conn, err := dial(ctx, url, cfg)
	cancel()
	if err != nil {
		// A refused login, a bad URL or a server certificate that does not
		// verify is a configuration mistake: report it now rather than
		// retry it in the background.
		var ce *reliable.ConfigError
		var ve *tls.CertificateVerificationError
		if fatal(err) || errors.As(err, &ce) || errors.As(err, &ve) {
			return nil, err
		}
		m.log.Warn("broker unreachable, will keep trying", slog.String("error", err.Error()))
		m.lastErr = err
	}
	m.wg.Add(1)
	go m.run(conn)
	return m, nil
}

func (m *connManager) run(conn *amqp.Connection) {
	defer m.wg.Done()
	failures := 0
	if conn == nil {
		failures = 1
	}
	for {
		if conn == nil {
			if failures > 0 {
				select {
				case <-time.After(m.cfg.backoff.Delay(failures)):
				case <-m.done:
					return
				}
			}
			ctx, cancel := context.WithCancel(context.Background())
			go func() {
				select {
				case <-m.done:
					cancel()
				case <-ctx.Done():
				}
			}()
			c, err := dial(ctx, m.url, m.cfg)
			cancel()
			if err != nil {
				failures++
				m.mu.Lock()
				m.lastErr = err
				m.mu.Unlock()
				if fatal(err) {
					m.log.Error("broker refused the credentials; not reconnecting", slog.String("error", err.Error()))
					m.setFatal(err)
					return
				}
				select {
				case <-m.done:
					return
				default:
				}
				level := slog.LevelDebug
				if failures%10 == 2 { // the first failed redial, then every 10th
					level = slog.LevelWarn
				}
				m.log.Log(context.Background(), level, "reconnect failed", slog.Int("attempt", failures), slog.String("error", err.Error()))
				continue
			}
			conn = c
			if failures > 0 {
				m.log.Info("reconnected", slog.Int("attempts", failures))
			}
			failures = 0
		}
		closes := conn.NotifyClose(make(chan *amqp.Error, 1))
		blocks := conn.NotifyBlocked(make(chan amqp.Blocking, 8))
		m.setConn(conn)
	watch:
		for {
			select {
			case b, ok := <-blocks:
				if !ok {
					blocks = nil
					continue
				}
				m.setBlocked(b)
			case e := <-closes:
				reason := "closed"
				if e != nil {
					reason = e.Error()
				}
				m.log.Warn("connection lost, reconnecting", slog.String("reason", reason))
				m.clearConn(fmt.Errorf("rabbitmq: connection lost: %s", reason))
				conn = nil
				failures = 1
				break watch
			case <-m.done:
				// A blocked broker does not read the close: do not wait
				// long for its answer.
				wait := closeDeadline
				if m.isBlocked.Load() {
					wait = time.Second
				}
				_ = conn.CloseDeadline(time.Now().Add(wait))
				return
			}
		}
	}
}

func (m *connManager) setConn(conn *amqp.Connection) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.conn = conn
	m.gen++
	m.lastErr = nil
	close(m.ready)
}

func (m *connManager) clearConn(err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.conn = nil
	m.lastErr = err
	m.ready = make(chan struct{})
	m.unblockLocked()
}

func (m *connManager) setFatal(err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.fatal = err
	select {
	case <-m.ready:
	default:
		close(m.ready)
	}
}

func (m *connManager) setBlocked(b amqp.Blocking) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if b.Active {
		if m.blocked == nil {
			m.blocked = make(chan struct{})
			m.isBlocked.Store(true)
		}
		m.reason = b.Reason
		m.log.Warn("broker blocked publishing (resource alarm)", slog.String("reason", b.Reason))
		return
	}
	if m.blocked != nil {
		m.log.Info("broker unblocked publishing")
	}
	m.unblockLocked()
}

func (m *connManager) unblockLocked() {
	if m.blocked != nil {
		close(m.blocked)
		m.blocked = nil
		m.reason = ""
		m.isBlocked.Store(false)
	}
}

// waitUnblocked returns at once unless the broker blocks the connection (a
// memory or disk alarm); then it waits for the unblock or ctx, whose error
// it returns with the alarm's reason. Publishing to a blocked connection
// would hang in the socket write (amqp091-go #111).
func (m *connManager) waitUnblocked(ctx context.Context) error {
	if !m.isBlocked.Load() {
		return nil
	}
	m.mu.Lock()
	blocked, reason := m.blocked, m.reason
	m.mu.Unlock()
	if blocked == nil {
		return nil
	}
	select {
	case <-blocked:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("rabbitmq: broker blocks publishing (%s): %w", reason, ctx.Err())
	}
}

// connection returns the open connection and its generation, waiting within
// ctx while it is being re-established.
func (m *connManager) connection(ctx context.Context) (*amqp.Connection, uint64, error) {
	for {
		m.mu.Lock()
		if m.closed {
			m.mu.Unlock()
			return nil, 0, reliable.ErrClosed
		}
		if m.fatal != nil {
			err := m.fatal
			m.mu.Unlock()
			return nil, 0, err
		}
		if m.conn != nil && !m.conn.IsClosed() {
			conn, gen := m.conn, m.gen
			m.mu.Unlock()
			return conn, gen, nil
		}
		ready, last := m.ready, m.lastErr
		var poll <-chan time.Time
		if m.conn != nil {
			// Closed, and run has not noticed yet: poll until it has.
			ready, poll = nil, time.After(20*time.Millisecond)
		}
		m.mu.Unlock()
		select {
		case <-ready:
		case <-poll:
		case <-ctx.Done():
			if last != nil {
				return nil, 0, fmt.Errorf("rabbitmq: waiting for a connection: %w (last error: %v)", ctx.Err(), last)
			}
			return nil, 0, fmt.Errorf("rabbitmq: waiting for a connection: %w", ctx.Err())
		}
	}
}

// frameMax returns the frame_max the current connection negotiated, or 0
// when there is none.
func (m *connManager) frameMax() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.conn == nil {
		return 0
	}
	return m.conn.Config.FrameSize
}

// close stops reconnecting and closes the connection.
func (m *connManager) close() {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return
	}
	m.closed = true
	close(m.done)
	m.mu.Unlock()
	m.wg.Wait()
}
