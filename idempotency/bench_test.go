package idempotency_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/reliable-go/reliable/idempotency"
)

// The per-message overhead of dedupe: one Begin and one Done per message,
// sequential (one lane), on the real services.
func benchBeginDone(b *testing.B, s idempotency.Store) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	prefix := uniqueName("m")
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		id := prefix + strconv.Itoa(i)
		if st, err := s.Begin(ctx, id); err != nil || st != idempotency.StatusNew {
			b.Fatal(st, err)
		}
		if err := s.Done(ctx, id); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkBeginDoneRedis(b *testing.B) {
	s, err := idempotency.NewRedis(testRedis(b), idempotency.RedisConfig{Namespace: uniqueName("bench"), Retention: time.Minute})
	if err != nil {
		b.Fatal(err)
	}
	benchBeginDone(b, s)
}

func BenchmarkBeginDonePostgres(b *testing.B) {
	pool := testPool(b)
	table := uniqueName("idem_")
	dropTable(b, pool, table, table+"_migrations")
	s, err := idempotency.NewPostgres(pool, idempotency.PostgresConfig{Namespace: "bench", Table: table})
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Migrate(context.Background()); err != nil {
		b.Fatal(err)
	}
	benchBeginDone(b, s)
}

func BenchmarkBeginDoneMemory(b *testing.B) {
	benchBeginDone(b, idempotency.NewMemory())
}
