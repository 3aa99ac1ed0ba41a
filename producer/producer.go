package producer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/reliable-go/reliable"
)

// DefaultMaxMessageBytes is the default size limit: Kafka's default
// message.max.bytes is about 1 MiB, and far smaller messages are the goal (L13).
const DefaultMaxMessageBytes = 1 << 20

// Config configures a Producer. The zero value is valid and durable.
type Config struct {
	// Environment is stamped on every message as reliable.HeaderEnvironment,
	// so consumers of another environment refuse it (L07). Empty stamps
	// nothing.
	Environment string
	// Source is stamped as reliable.HeaderSource (the CloudEvents source,
	// a URI reference), e.g. "order-service". Defaults to the running
	// program's main package path (e.g. "github.com/acme/orders/cmd/orders"),
	// or its executable name when the binary has no build information, so
	// every message carries the four attributes CloudEvents requires: id,
	// source, specversion and type (a message without a Type gets
	// DefaultType). A ce_source header the message already has is kept.
	Source string
	// MaxMessageBytes refuses larger messages before sending with a
	// *reliable.MessageTooLargeError. Defaults to DefaultMaxMessageBytes.
	MaxMessageBytes int
	// Backoff spaces retries of transient failures. See reliable.Backoff for
	// its defaults.
	Backoff reliable.Backoff
	// MaxAttempts bounds the attempts per Publish call. Defaults to 0: retry
	// until the context ends, so a broker outage delays publishing instead of
	// losing messages.
	MaxAttempts int
	// Logger receives a warning per failed attempt. Defaults to slog.Default().
	Logger *slog.Logger
}

// Validate returns every problem of c at once, or nil.
func (c Config) Validate() error {
	var p reliable.Problems
	p.Addf(c.MaxMessageBytes < 0, "MaxMessageBytes is %d, must be 0 (default) or positive", c.MaxMessageBytes)
	p.Addf(c.MaxAttempts < 0, "MaxAttempts is %d, must be 0 (until the context ends) or positive", c.MaxAttempts)
	p.Addf(c.Backoff.Initial < 0, "Backoff.Initial is negative")
	p.Addf(c.Backoff.Max < 0, "Backoff.Max is negative")
	p.Addf(c.Backoff.Max > 0 && c.Backoff.Initial > c.Backoff.Max, "Backoff.Initial %s is above Backoff.Max %s", c.Backoff.Initial, c.Backoff.Max)
	return p.Err("producer")
}

func (c Config) withDefaults() Config {
	if c.Source == "" {
		c.Source = DefaultSource()
	}
	if c.MaxMessageBytes == 0 {
		c.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Producer is a durable reliable.Publisher on top of an adapter's publisher.
// It is safe for concurrent use.
type Producer struct {
	pub    reliable.Publisher
	cfg    Config
	closed atomic.Bool
}

var _ reliable.AsyncPublisher = (*Producer)(nil)

// New returns a Producer that publishes through pub, which must report each
// unconfirmed message (a *reliable.PublishError) so that only those are
// retried. New refuses an invalid config with a *reliable.ConfigError listing
// every problem.
func New(pub reliable.Publisher, cfg Config) (*Producer, error) {
	if pub == nil {
		return nil, &reliable.ConfigError{Component: "producer", Problems: []string{"publisher is nil"}}
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Producer{pub: pub, cfg: cfg.withDefaults()}, nil
}

// Publish validates and stamps msgs, then publishes them, retrying the ones
// not confirmed until all are confirmed, a permanent error occurs, or ctx
// ends. Nothing is sent when any message is invalid or too large.
//
// On a retry, a message whose earlier outcome was unknown may be written
// twice; per key, messages are written in the order given within each
// attempt. For strict per-key order across failures, publish one message per
// key at a time, as the outbox relay does.
func (p *Producer) Publish(ctx context.Context, msgs ...*reliable.Message) error {
	if p.closed.Load() {
		return reliable.ErrClosed
	}
	if err := p.prepare(msgs); err != nil {
		return err
	}
	pending := msgs
	var cause error // the last failure that was not just ctx ending
	for attempt := 1; ; attempt++ {
		err := p.pub.Publish(ctx, pending...)
		if err == nil {
			return nil
		}
		if ctxErr := ctx.Err(); ctxErr != nil {
			// A call cut short by ctx says only that; the failure that
			// made us retry is what the caller needs to see.
			if cause == nil || !errors.Is(err, ctxErr) {
				cause = err
			}
			return fmt.Errorf("producer: %w (last error: %w)", ctxErr, cause)
		}
		cause = err
		if reliable.IsPermanent(err) {
			return err
		}
		pending = unconfirmed(pending, err)
		if p.cfg.MaxAttempts > 0 && attempt >= p.cfg.MaxAttempts {
			return fmt.Errorf("producer: gave up after %d attempts: %w", attempt, err)
		}
		delay := p.cfg.Backoff.Delay(attempt)
		if d := reliable.RetryDelay(err); d > delay {
			delay = d
		}
		p.cfg.Logger.WarnContext(ctx, "publish failed, retrying",
			slog.Int("attempt", attempt), slog.Int("messages", len(pending)),
			slog.Duration("backoff", delay), slog.String("error", err.Error()))
		if serr := reliable.Sleep(ctx, delay); serr != nil {
			return fmt.Errorf("producer: %w while retrying %d messages (last error: %w)", serr, len(pending), err)
		}
	}
}

// PublishAsync validates and stamps msg like Publish, then hands it to the
// underlying publisher's PublishAsync, which calls done once with the
// outcome. It does not retry: a caller that publishes asynchronously (the
// outbox relay) owns its retries. A message refused by the checks is
// returned as the error and nothing is sent. When the underlying publisher
// has no PublishAsync, the error matches errors.ErrUnsupported.
func (p *Producer) PublishAsync(ctx context.Context, msg *reliable.Message, done func(*reliable.Message, error)) error {
	if p.closed.Load() {
		return reliable.ErrClosed
	}
	ap, ok := p.pub.(reliable.AsyncPublisher)
	if !ok {
		return fmt.Errorf("producer: %T has no PublishAsync: %w", p.pub, errors.ErrUnsupported)
	}
	if done == nil {
		return errors.New("producer: PublishAsync needs a done function")
	}
	if err := p.prepare([]*reliable.Message{msg}); err != nil {
		var pe *reliable.PublishError
		if errors.As(err, &pe) && len(pe.Failed) == 1 {
			return pe.Failed[0].Err
		}
		return err
	}
	return ap.PublishAsync(ctx, msg, done)
}

// prepare checks every message and stamps the SDK's fields. When any
// message is invalid or too large, nothing is sent and the error is a
// *reliable.PublishError naming every message of the call: the refused ones
// with their permanent error, the others as not sent (ErrNotConfirmed), so a
// caller such as the outbox relay dead-letters only the refused ones and
// publishes the rest again.
func (p *Producer) prepare(msgs []*reliable.Message) error {
	now := time.Now()
	refused := make(map[*reliable.Message]error)
	for _, m := range msgs {
		if m == nil {
			return &reliable.InvalidMessageError{Problems: []string{"message is nil"}}
		}
		m.EnsureID()
		if m.Time.IsZero() {
			m.Time = now
		}
		if err := m.Validate(); err != nil {
			refused[m] = err
			continue
		}
		if m.Type == "" {
			m.Type = DefaultType
		}
		if m.Headers == nil {
			m.Headers = make(map[string]string, 2)
		}
		if p.cfg.Environment != "" {
			m.Headers[reliable.HeaderEnvironment] = p.cfg.Environment
		}
		if _, ok := m.Headers[reliable.HeaderSource]; !ok {
			m.Headers[reliable.HeaderSource] = p.cfg.Source
		}
		if size := m.Size(); size > p.cfg.MaxMessageBytes {
			refused[m] = &reliable.MessageTooLargeError{MessageID: m.ID, Size: size, Max: p.cfg.MaxMessageBytes}
		}
	}
	if len(refused) == 0 {
		return nil
	}
	pe := &reliable.PublishError{}
	var first string
	for _, m := range msgs {
		if err, ok := refused[m]; ok {
			pe.Failed = append(pe.Failed, reliable.MessageError{MessageID: m.ID, Err: err})
			if first == "" {
				first = m.ID
			}
		}
	}
	for _, m := range msgs {
		if _, ok := refused[m]; !ok {
			pe.Failed = append(pe.Failed, reliable.MessageError{MessageID: m.ID,
				Err: fmt.Errorf("producer: not sent, message %q of the same call was refused: %w", first, reliable.ErrNotConfirmed)})
		}
	}
	return pe
}

// unconfirmed returns the messages err names as failed, keeping their order;
// all of them when err does not say.
func unconfirmed(msgs []*reliable.Message, err error) []*reliable.Message {
	var pe *reliable.PublishError
	if !errors.As(err, &pe) {
		return msgs
	}
	failed := pe.FailedIDs()
	out := make([]*reliable.Message, 0, len(failed))
	for _, m := range msgs {
		if failed[m.ID] {
			out = append(out, m)
		}
	}
	if len(out) == 0 {
		return msgs
	}
	return out
}

// Close closes the underlying publisher. Publish after Close returns
// reliable.ErrClosed.
func (p *Producer) Close() error {
	if p.closed.Swap(true) {
		return nil
	}
	return p.pub.Close()
}
