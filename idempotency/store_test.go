package idempotency_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/idempotency"
)

// storeFactory returns a store in namespace ns with the given claim TTL and
// retention. Stores made with the same ns by one factory share their records
// (two consumer instances of one group).
type storeFactory func(t *testing.T, ns string, claimTTL, retention time.Duration) idempotency.Store

func memoryFactory() storeFactory {
	stores := map[string]*idempotency.MemoryStore{}
	var mu sync.Mutex
	return func(t *testing.T, ns string, claimTTL, retention time.Duration) idempotency.Store {
		mu.Lock()
		defer mu.Unlock()
		// The memory store has no namespaces: one store per namespace.
		if s, ok := stores[ns]; ok {
			return s
		}
		s := idempotency.NewMemory()
		s.ClaimTTL, s.Retention = claimTTL, retention
		stores[ns] = s
		return s
	}
}

func redisFactory(t *testing.T) storeFactory {
	client := testRedis(t)
	prefix := uniqueName("reliable-test:") + ":"
	return func(t *testing.T, ns string, claimTTL, retention time.Duration) idempotency.Store {
		s, err := idempotency.NewRedis(client, idempotency.RedisConfig{Namespace: ns, KeyPrefix: prefix, ClaimTTL: claimTTL, Retention: retention})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
}

func postgresFactory(t *testing.T) storeFactory {
	pool := testPool(t)
	table := uniqueName("idem_")
	dropTable(t, pool, table, table+"_migrations")
	return func(t *testing.T, ns string, claimTTL, retention time.Duration) idempotency.Store {
		s, err := idempotency.NewPostgres(pool, idempotency.PostgresConfig{Namespace: ns, Table: table, ClaimTTL: claimTTL, Retention: retention})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Migrate(ctx); err != nil {
			t.Fatal(err)
		}
		return s
	}
}

func TestMemoryStore(t *testing.T) {
	t.Parallel()
	runStoreSuite(t, memoryFactory(), false)
}

func TestRedisStore(t *testing.T) {
	t.Parallel()
	runStoreSuite(t, redisFactory(t), true)
}

func TestPostgresStore(t *testing.T) {
	t.Parallel()
	runStoreSuite(t, postgresFactory(t), true)
}

func begin(t *testing.T, s idempotency.Store, id string, want idempotency.Status) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	got, err := s.Begin(ctx, id)
	if err != nil {
		t.Fatalf("Begin(%q): %v", id, err)
	}
	if got != want {
		t.Fatalf("Begin(%q) = %v, want %v", id, got, want)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// runStoreSuite checks the semantics every Store shares. ownedClaims is true
// for stores that tell their own claims from other instances' ones.
func runStoreSuite(t *testing.T, newStore storeFactory, ownedClaims bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)

	t.Run("BeginDoneAbort", func(t *testing.T) {
		s := newStore(t, uniqueName("ns"), time.Minute, time.Hour)
		begin(t, s, "m1", idempotency.StatusNew)
		begin(t, s, "m1", idempotency.StatusInProgress)
		must(t, s.Abort(ctx, "m1"))
		begin(t, s, "m1", idempotency.StatusNew) // a failed attempt may be retried at once
		must(t, s.Done(ctx, "m1"))
		begin(t, s, "m1", idempotency.StatusDone)
		must(t, s.Abort(ctx, "m1")) // Abort never removes a done record
		begin(t, s, "m1", idempotency.StatusDone)
		must(t, s.Done(ctx, "m1")) // Done is idempotent
		begin(t, s, "m1", idempotency.StatusDone)
		if _, err := s.Begin(ctx, ""); !errors.Is(err, idempotency.ErrEmptyID) {
			t.Fatalf("Begin(\"\") = %v, want ErrEmptyID", err)
		}
	})

	t.Run("L20RedeliveryAfterCrashBeforeCommitIsSkipped", func(t *testing.T) {
		// L20: the handler succeeded and Done was recorded, then the consumer
		// crashed before committing; the broker delivers the message again
		// (to another instance) and it must not be handled twice.
		ns := uniqueName("ns")
		first, second := newStore(t, ns, time.Minute, time.Hour), newStore(t, ns, time.Minute, time.Hour)
		handled := 0
		deliver := func(s idempotency.Store) {
			st, err := s.Begin(ctx, "order-1/paid")
			must(t, err)
			if st != idempotency.StatusNew {
				return // duplicate: complete the delivery without the handler
			}
			handled++
			must(t, s.Done(ctx, "order-1/paid"))
		}
		deliver(first)
		deliver(second) // redelivery after the crash
		if handled != 1 {
			t.Fatalf("handler ran %d times, want 1", handled)
		}
	})

	t.Run("L19ConcurrentBeginExactlyOneNew", func(t *testing.T) {
		// L19: two deliveries that both "check then insert" both proceed.
		// Begin is one atomic step: of many concurrent Begins exactly one wins.
		ns := uniqueName("ns")
		const ids, racers = 10, 16
		for i := range ids {
			id := reliable.NewID()
			var wins atomic.Int32
			var wg sync.WaitGroup
			for r := range racers {
				s := newStore(t, ns, time.Minute, time.Hour) // same namespace: separate instances where the store has them
				wg.Add(1)
				go func() {
					defer wg.Done()
					st, err := s.Begin(ctx, id)
					if err != nil {
						t.Errorf("racer %d: %v", r, err)
						return
					}
					if st == idempotency.StatusNew {
						wins.Add(1)
					} else if st != idempotency.StatusInProgress {
						t.Errorf("racer %d got %v", r, st)
					}
				}()
			}
			wg.Wait()
			if n := wins.Load(); n != 1 {
				t.Fatalf("id %d: %d Begins returned StatusNew, want exactly 1", i, n)
			}
		}
	})

	t.Run("L20ExpiredClaimIsReclaimable", func(t *testing.T) {
		// L20: a consumer crashed mid-handler. Its claim expires and the
		// redelivered message is processed, not lost.
		ns := uniqueName("ns")
		crashed := newStore(t, ns, 150*time.Millisecond, time.Hour)
		begin(t, crashed, "m", idempotency.StatusNew)
		other := newStore(t, ns, time.Minute, time.Hour)
		begin(t, other, "m", idempotency.StatusInProgress)
		time.Sleep(250 * time.Millisecond)
		begin(t, other, "m", idempotency.StatusNew)
		if ownedClaims {
			// The crashed instance comes back and aborts: the other's claim stays.
			must(t, crashed.Abort(ctx, "m"))
			begin(t, other, "m", idempotency.StatusInProgress)
		}
		must(t, other.Done(ctx, "m"))
		begin(t, crashed, "m", idempotency.StatusDone)
	})

	t.Run("NamespacesAreSeparate", func(t *testing.T) {
		a := newStore(t, uniqueName("kitchen"), time.Minute, time.Hour)
		b := newStore(t, uniqueName("billing"), time.Minute, time.Hour)
		begin(t, a, "m", idempotency.StatusNew)
		must(t, a.Done(ctx, "m"))
		begin(t, b, "m", idempotency.StatusNew) // another service processes it too
	})

	t.Run("L17DoneExpiresAfterRetention", func(t *testing.T) {
		s := newStore(t, uniqueName("ns"), time.Minute, 150*time.Millisecond)
		begin(t, s, "m", idempotency.StatusNew)
		must(t, s.Done(ctx, "m"))
		begin(t, s, "m", idempotency.StatusDone)
		time.Sleep(250 * time.Millisecond)
		begin(t, s, "m", idempotency.StatusNew)
	})
}

func TestConfigValidation(t *testing.T) {
	t.Parallel()
	_, err := idempotency.NewRedis(nil, idempotency.RedisConfig{ClaimTTL: -1, Retention: time.Microsecond})
	var ce *reliable.ConfigError
	if !errors.As(err, &ce) || !errors.Is(err, reliable.ErrInvalidConfig) {
		t.Fatalf("NewRedis = %v, want a ConfigError", err)
	}
	if len(ce.Problems) != 3 {
		t.Fatalf("want every problem listed at once, got %q", ce.Problems)
	}
	_, err = idempotency.NewPostgres(nil, idempotency.PostgresConfig{Namespace: "g"})
	if !errors.Is(err, reliable.ErrInvalidConfig) {
		t.Fatalf("NewPostgres(nil pool) = %v", err)
	}
	_, err = idempotency.NewPostgres(nil, idempotency.PostgresConfig{})
	if !errors.Is(err, reliable.ErrInvalidConfig) {
		t.Fatalf("NewPostgres without namespace = %v", err)
	}
}

func TestStatusString(t *testing.T) {
	t.Parallel()
	for st, want := range map[idempotency.Status]string{
		idempotency.StatusNew: "new", idempotency.StatusDone: "done", idempotency.StatusInProgress: "in progress", 9: "Status(9)",
	} {
		if st.String() != want {
			t.Errorf("%d: %q, want %q", int(st), st.String(), want)
		}
	}
}
