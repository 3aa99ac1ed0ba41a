package reliable_test

import (
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/reliable-go/reliable"
)

func TestClassification(t *testing.T) {
	base := io.ErrUnexpectedEOF
	cases := []struct {
		name      string
		err       error
		permanent bool
	}{
		{"plain error is retryable", base, false},
		{"retryable", reliable.Retryable(base), false},
		{"permanent", reliable.Permanent(base), true},
		{"wrapped permanent", fmt.Errorf("handler: %w", reliable.Permanent(base)), true},
		{"too large", &reliable.MessageTooLargeError{Size: 10, Max: 1}, true},
		{"config", &reliable.ConfigError{Component: "x", Problems: []string{"a"}}, true},
		{"unknown topic", fmt.Errorf("kafka: %w", reliable.ErrUnknownTopic), true},
		{"not confirmed is retryable", reliable.ErrNotConfirmed, false},
		{"closed is permanent", fmt.Errorf("publish: %w", reliable.ErrClosed), true},
		{"retryable wins over wrapped sentinel", reliable.Retryable(reliable.ErrUnknownTopic), false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := reliable.IsPermanent(c.err); got != c.permanent {
				t.Fatalf("IsPermanent = %v, want %v", got, c.permanent)
			}
			if got := reliable.IsRetryable(c.err); got == c.permanent {
				t.Fatalf("IsRetryable = %v, want %v", got, !c.permanent)
			}
			if !errors.Is(c.err, base) && (c.name == "retryable" || c.name == "permanent") {
				t.Fatal("wrapper hides the cause from errors.Is")
			}
		})
	}
	if reliable.IsRetryable(nil) || reliable.IsPermanent(nil) {
		t.Fatal("nil is neither retryable nor permanent")
	}
	if reliable.Retryable(nil) != nil || reliable.Permanent(nil) != nil || reliable.RetryAfter(time.Second, nil) != nil {
		t.Fatal("wrapping nil must give nil")
	}
}

func TestRetryDelay(t *testing.T) {
	err := fmt.Errorf("fetch: %w", reliable.RetryAfter(3*time.Second, io.EOF))
	if d := reliable.RetryDelay(err); d != 3*time.Second {
		t.Fatalf("RetryDelay = %s", d)
	}
	if d := reliable.RetryDelay(io.EOF); d != 0 {
		t.Fatalf("RetryDelay of a plain error = %s", d)
	}
}

func TestPublishErrorUnwrapsEachMessage(t *testing.T) {
	err := error(&reliable.PublishError{Failed: []reliable.MessageError{
		{MessageID: "a", Err: reliable.ErrNotConfirmed},
		{MessageID: "b", Err: fmt.Errorf("exchange orders: %w", reliable.ErrUnroutable)},
	}})
	if !errors.Is(err, reliable.ErrUnroutable) || !errors.Is(err, reliable.ErrNotConfirmed) {
		t.Fatalf("errors.Is does not see each message's error: %v", err)
	}
	var pe *reliable.PublishError
	if !errors.As(err, &pe) || !pe.FailedIDs()["b"] || pe.FailedIDs()["c"] {
		t.Fatalf("FailedIDs = %v", pe.FailedIDs())
	}
}

func TestProblemsListsEverything(t *testing.T) {
	var p reliable.Problems
	p.Addf(true, "Topic is required")
	p.Addf(false, "never")
	p.Addf(true, "Concurrency is %d", -1)
	err := p.Err("consumer")
	var ce *reliable.ConfigError
	if !errors.As(err, &ce) || len(ce.Problems) != 2 || !errors.Is(err, reliable.ErrInvalidConfig) {
		t.Fatalf("got %v", err)
	}
	var none reliable.Problems
	if none.Err("x") != nil {
		t.Fatal("no problems must give nil")
	}
}

func TestMessageTooLargeSaysWhatToDo(t *testing.T) {
	// L13: the error tells the user to send IDs instead of full documents.
	err := &reliable.MessageTooLargeError{MessageID: "m1", Size: 2 << 20, Max: 1 << 20}
	if !errors.Is(err, reliable.ErrMessageTooLarge) {
		t.Fatal("does not match ErrMessageTooLarge")
	}
	want := `reliable: message "m1" is 2097152 bytes, over the 1048576-byte limit: publish the entity's ID and status and let consumers fetch the details`
	if err.Error() != want {
		t.Fatalf("got %q", err.Error())
	}
}

func TestBackoffGrowsAndCaps(t *testing.T) {
	b := reliable.Backoff{Initial: 10 * time.Millisecond, Max: 100 * time.Millisecond, Jitter: -1}
	want := []time.Duration{10, 20, 40, 80, 100, 100}
	for i, w := range want {
		if got := b.Delay(i + 1); got != w*time.Millisecond {
			t.Fatalf("Delay(%d) = %s, want %s", i+1, got, w*time.Millisecond)
		}
	}
	j := reliable.Backoff{Initial: 100 * time.Millisecond}
	for i := 0; i < 100; i++ {
		if d := j.Delay(1); d < 80*time.Millisecond || d > 120*time.Millisecond {
			t.Fatalf("jittered delay %s outside ±20%%", d)
		}
	}
}
