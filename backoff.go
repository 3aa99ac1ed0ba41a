package reliable

import (
	"context"
	"math"
	"math/rand/v2"
	"time"
)

// Backoff is an exponential backoff with jitter. The zero value uses the
// defaults documented on each field.
type Backoff struct {
	// Initial is the delay before the second attempt. Defaults to 100ms.
	Initial time.Duration
	// Max caps the delay. Defaults to 30s.
	Max time.Duration
	// Multiplier grows the delay per attempt. Defaults to 2.
	Multiplier float64
	// Jitter spreads each delay uniformly by ±Jitter of its value, so that
	// many clients failing together do not retry together. Defaults to 0.2;
	// set a negative value for none.
	Jitter float64
}

// Delay returns how long to wait after the given failed attempt (1 for the
// first failure).
func (b Backoff) Delay(attempt int) time.Duration {
	initial, maxDelay, mult, jitter := b.Initial, b.Max, b.Multiplier, b.Jitter
	if initial <= 0 {
		initial = 100 * time.Millisecond
	}
	if maxDelay <= 0 {
		maxDelay = 30 * time.Second
	}
	if mult < 1 {
		mult = 2
	}
	if jitter == 0 {
		jitter = 0.2
	}
	if attempt < 1 {
		attempt = 1
	}
	d := float64(initial) * math.Pow(mult, float64(attempt-1))
	if d > float64(maxDelay) {
		d = float64(maxDelay)
	}
	if jitter > 0 {
		d *= 1 + jitter*(2*rand.Float64()-1)
	}
	return time.Duration(d)
}

// Sleep waits for d or until ctx ends, returning ctx's error in that case.
func Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
