package idempotency_test

import (
	"context"
	"testing"
	"time"

	"github.com/reliable-go/reliable/idempotency"
)

// Issue 15 item 9: every store reports the claim TTL it applies, so the
// consumer can bound handlers below it. The reported duration is the real
// one: a claim is in progress just before it and free to take after it.
func TestStoresReportTheirClaimDuration(t *testing.T) {
	t.Parallel()
	for name, f := range map[string]storeFactory{"memory": memoryFactory(), "redis": redisFactory(t), "postgres": postgresFactory(t)} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			def, ok := f(t, uniqueName("ns"), 0, 0).(idempotency.ClaimReporter)
			if !ok {
				t.Fatal("store does not implement ClaimReporter")
			}
			if d := def.ClaimDuration(); d != idempotency.DefaultClaimTTL {
				t.Fatalf("default ClaimDuration %s, want %s", d, idempotency.DefaultClaimTTL)
			}
			const ttl = 400 * time.Millisecond
			ns := uniqueName("ns")
			a, b := f(t, ns, ttl, 0), f(t, ns, ttl, 0)
			if d := a.(idempotency.ClaimReporter).ClaimDuration(); d != ttl {
				t.Fatalf("ClaimDuration %s, want %s", d, ttl)
			}
			start := time.Now()
			if st, err := a.Begin(ctx, "m"); err != nil || st != idempotency.StatusNew {
				t.Fatalf("Begin: %s, %v", st, err)
			}
			st, err := b.Begin(ctx, "m")
			if time.Since(start) < ttl/2 && (err != nil || st != idempotency.StatusInProgress) {
				t.Fatalf("Begin within the claim: %s, %v", st, err)
			}
			time.Sleep(time.Until(start.Add(ttl + 50*time.Millisecond)))
			if st, err := b.Begin(ctx, "m"); err != nil || st != idempotency.StatusNew {
				t.Fatalf("Begin after ClaimDuration: %s, %v", st, err)
			}
		})
	}
}
