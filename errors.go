package reliable

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Sentinel errors. Every error the SDK returns for one of these conditions
// matches the sentinel with errors.Is, and usually carries details in a typed
// error that errors.As finds.
var (
	// ErrClosed is returned by a publisher or subscriber used after Close.
	ErrClosed = errors.New("reliable: closed")
	// ErrInvalidConfig is matched by every *ConfigError.
	ErrInvalidConfig = errors.New("reliable: invalid configuration")
	// ErrInvalidMessage is matched by every *InvalidMessageError.
	ErrInvalidMessage = errors.New("reliable: invalid message")
	// ErrMessageTooLarge is matched by every *MessageTooLargeError. Nothing was
	// sent.
	ErrMessageTooLarge = errors.New("reliable: message too large")
	// ErrUnknownTopic means the topic (Kafka) or exchange (RabbitMQ) does not
	// exist. The SDK never creates topics implicitly.
	ErrUnknownTopic = errors.New("reliable: unknown topic")
	// ErrUnroutable means RabbitMQ returned a mandatory message because no
	// queue was bound for it. The broker acks such a message anyway; the SDK
	// counts it as not delivered.
	ErrUnroutable = errors.New("reliable: unroutable message")
	// ErrNotAuthorized means the broker refused the credentials or the
	// operation. Retrying does not help.
	ErrNotAuthorized = errors.New("reliable: not authorized")
	// ErrNotConfirmed means the broker did not confirm a message: it nacked it,
	// or the connection broke before the confirm arrived, so the outcome is
	// unknown. Publishing again is safe; consumers deduplicate by ID.
	ErrNotConfirmed = errors.New("reliable: publish not confirmed")
	// ErrWrongEnvironment means a message's environment header differs from the
	// consumer's environment (L07). Such a message is never handled.
	ErrWrongEnvironment = errors.New("reliable: message from another environment")
)

// RetryableError marks a failure that may succeed later: a network blip, a
// replica that is behind (L21), a downstream service that is overloaded.
// A consumer parks the message in the retry table, behind which later
// messages of the same key wait (L09, L11).
type RetryableError struct {
	Err error
	// After, when positive, is the earliest time to try again, overriding the
	// backoff policy for this attempt.
	After time.Duration
}

func (e *RetryableError) Error() string {
	if e.Err == nil {
		return "retryable error"
	}
	return e.Err.Error()
}

func (e *RetryableError) Unwrap() error { return e.Err }

// PermanentError marks a failure that will never succeed: a poison message,
// a payload that does not parse, a state transition that cannot apply. The
// consumer dead-letters the message at once, with the error as the reason.
type PermanentError struct {
	Err error
}

func (e *PermanentError) Error() string {
	if e.Err == nil {
		return "permanent error"
	}
	return e.Err.Error()
}

func (e *PermanentError) Unwrap() error { return e.Err }

// Retryable wraps err so that [IsRetryable] reports true. Retryable(nil)
// returns nil.
func Retryable(err error) error {
	if err == nil {
		return nil
	}
	return &RetryableError{Err: err}
}

// RetryAfter is like [Retryable] and asks for the next attempt no sooner than
// d from now. RetryAfter(d, nil) returns nil.
func RetryAfter(d time.Duration, err error) error {
	if err == nil {
		return nil
	}
	return &RetryableError{Err: err, After: d}
}

// Permanent wraps err so that [IsPermanent] reports true. Permanent(nil)
// returns nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &PermanentError{Err: err}
}

// IsPermanent reports whether err, or an error it wraps, is a
// *PermanentError. Sentinels that retrying cannot fix (ErrClosed, ErrMessageTooLarge,
// ErrInvalidMessage, ErrInvalidConfig, ErrNotAuthorized, ErrWrongEnvironment,
// ErrUnknownTopic) count as permanent too.
func IsPermanent(err error) bool {
	if err == nil {
		return false
	}
	var p *PermanentError
	if errors.As(err, &p) {
		return true
	}
	var r *RetryableError
	if errors.As(err, &r) {
		return false
	}
	for _, s := range permanentSentinels {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}

var permanentSentinels = []error{
	ErrClosed, ErrMessageTooLarge, ErrInvalidMessage, ErrInvalidConfig,
	ErrNotAuthorized, ErrWrongEnvironment, ErrUnknownTopic,
}

// IsRetryable reports whether a later attempt may succeed. Every non-nil
// error that is not permanent is retryable: an unknown failure is safer
// retried (and, after the configured attempts, dead-lettered) than dropped.
func IsRetryable(err error) bool {
	return err != nil && !IsPermanent(err)
}

// RetryDelay returns the delay a *RetryableError in err's chain asked for,
// or 0.
func RetryDelay(err error) time.Duration {
	var r *RetryableError
	if errors.As(err, &r) && r.After > 0 {
		return r.After
	}
	return 0
}

// ConfigError lists every problem found in a configuration at once, so a
// user fixes them in one go. It matches ErrInvalidConfig.
type ConfigError struct {
	// Component names what was being configured, e.g. "kafka producer".
	Component string
	Problems  []string
}

func (e *ConfigError) Error() string {
	return fmt.Sprintf("reliable: invalid %s configuration: %s", e.Component, strings.Join(e.Problems, "; "))
}

// Is makes errors.Is(err, ErrInvalidConfig) true.
func (e *ConfigError) Is(target error) bool { return target == ErrInvalidConfig }

// Problems collects configuration problems; its Err returns nil or a
// *ConfigError with all of them. The zero value is ready to use.
type Problems struct {
	list []string
}

// Addf records a problem when cond is true.
func (p *Problems) Addf(cond bool, format string, args ...any) {
	if cond {
		p.list = append(p.list, fmt.Sprintf(format, args...))
	}
}

// Err returns nil when no problem was recorded, else a *ConfigError.
func (p *Problems) Err(component string) error {
	if len(p.list) == 0 {
		return nil
	}
	return &ConfigError{Component: component, Problems: append([]string(nil), p.list...)}
}

// InvalidMessageError says why a message cannot be published. It matches
// ErrInvalidMessage.
type InvalidMessageError struct {
	MessageID string
	Problems  []string
}

func (e *InvalidMessageError) Error() string {
	return fmt.Sprintf("reliable: invalid message %q: %s", e.MessageID, strings.Join(e.Problems, "; "))
}

// Is makes errors.Is(err, ErrInvalidMessage) true.
func (e *InvalidMessageError) Is(target error) bool { return target == ErrInvalidMessage }

// MessageTooLargeError is returned before anything is sent when a message
// exceeds the producer's limit (L13). It matches ErrMessageTooLarge.
type MessageTooLargeError struct {
	MessageID string
	Size, Max int
}

func (e *MessageTooLargeError) Error() string {
	return fmt.Sprintf("reliable: message %q is %d bytes, over the %d-byte limit: "+
		"publish the entity's ID and status and let consumers fetch the details", e.MessageID, e.Size, e.Max)
}

// Is makes errors.Is(err, ErrMessageTooLarge) true.
func (e *MessageTooLargeError) Is(target error) bool { return target == ErrMessageTooLarge }

// PublishError reports which messages of a Publish call were not confirmed.
// Messages not listed were confirmed. It unwraps to each message's error, so
// errors.Is(err, ErrUnroutable) asks whether any message was unroutable.
type PublishError struct {
	Failed []MessageError
}

// MessageError is the failure of one message.
type MessageError struct {
	MessageID string
	Err       error
}

func (e *PublishError) Error() string {
	if len(e.Failed) == 1 {
		return fmt.Sprintf("reliable: publish of message %q failed: %v", e.Failed[0].MessageID, e.Failed[0].Err)
	}
	return fmt.Sprintf("reliable: %d messages not published, first %q: %v", len(e.Failed), e.Failed[0].MessageID, e.Failed[0].Err)
}

// Unwrap returns the error of each failed message.
func (e *PublishError) Unwrap() []error {
	errs := make([]error, len(e.Failed))
	for i, f := range e.Failed {
		errs[i] = f.Err
	}
	return errs
}

// FailedIDs returns the set of message IDs that failed.
func (e *PublishError) FailedIDs() map[string]bool {
	ids := make(map[string]bool, len(e.Failed))
	for _, f := range e.Failed {
		ids[f.MessageID] = true
	}
	return ids
}
