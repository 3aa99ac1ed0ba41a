package idempotency_test

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/reliable-go/reliable/idempotency"
	"github.com/reliable-go/reliable/internal/testenv"
)

// batchSizes records how many IDs each round trip of a store carried.
type batchSizes struct {
	mu    sync.Mutex
	sizes []int
}

func (b *batchSizes) add(n int) {
	b.mu.Lock()
	b.sizes = append(b.sizes, n)
	b.mu.Unlock()
}

func (b *batchSizes) max() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	m := 0
	for _, n := range b.sizes {
		m = max(m, n)
	}
	return m
}

// slowPipelines delays every Redis round trip, so that concurrent calls
// queue behind the ones in flight and go together, and records the
// pipelines' sizes.
type slowPipelines struct{ sizes *batchSizes }

func (slowPipelines) DialHook(next redis.DialHook) redis.DialHook { return next }
func (slowPipelines) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		time.Sleep(20 * time.Millisecond) // a lone call goes without a pipeline
		return next(ctx, cmd)
	}
}
func (h slowPipelines) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.sizes.add(len(cmds))
		time.Sleep(20 * time.Millisecond)
		return next(ctx, cmds)
	}
}

// unnestTracer records the ID count of each batched statement.
type unnestTracer struct{ sizes *batchSizes }

func (u unnestTracer) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	if strings.Contains(d.SQL, "unnest($2::text[])") && len(d.Args) > 1 {
		if ids, ok := d.Args[1].([]string); ok {
			u.sizes.add(len(ids))
		}
	}
	return ctx
}

func (unnestTracer) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// Batched Begins run in a pgx batch (after the statement that sets
// plan_cache_mode), seen by the batch hooks.

func (unnestTracer) TraceBatchStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	return ctx
}

func (u unnestTracer) TraceBatchQuery(_ context.Context, _ *pgx.Conn, d pgx.TraceBatchQueryData) {
	if strings.Contains(d.SQL, "unnest($2::text[])") && len(d.Args) > 1 {
		if ids, ok := d.Args[1].([]string); ok {
			u.sizes.add(len(ids))
		}
	}
}

func (unnestTracer) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData) {}

// handleConcurrently claims every ID at once, as a consumer's lanes do, then
// records done each one whose handler succeeded and aborts the one that
// failed, all at once.
func handleConcurrently(t *testing.T, s idempotency.Store, ids []string, failing string) {
	t.Helper()
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, len(ids))
	for _, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := s.Begin(ctx, id)
			if err != nil || st != idempotency.StatusNew {
				errs <- err
				t.Errorf("Begin(%s) = %v, %v; want new", id, st, err)
				return
			}
			if id == failing {
				errs <- s.Abort(ctx, id)
				return
			}
			errs <- s.Done(ctx, id)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

// checkOnlySucceededDone: every ID but the failing one is done; the failing
// one is free to be handled again (L20: done only after its own success).
func checkOnlySucceededDone(t *testing.T, s idempotency.Store, ids []string, failing string) {
	t.Helper()
	for _, id := range ids {
		st, err := s.Begin(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		want := idempotency.StatusDone
		if id == failing {
			want = idempotency.StatusNew
		}
		if st != want {
			t.Errorf("after the batch, Begin(%s) = %v, want %v", id, st, want)
		}
	}
}

func batchIDs(prefix string) []string {
	ids := make([]string, 24)
	for i := range ids {
		ids[i] = prefix + strconv.Itoa(i)
	}
	return ids
}

// TestRedisBatchRecordsOnlyItsSucceededMessagesDone: claims and done
// records of concurrent messages travel together in pipelines, and a
// message whose handler failed, in the middle of them, is not recorded done
// while its neighbours are.
func TestRedisBatchRecordsOnlyItsSucceededMessagesDone(t *testing.T) {
	client := testRedis(t)
	sizes := &batchSizes{}
	client.AddHook(slowPipelines{sizes})
	s, err := idempotency.NewRedis(client, idempotency.RedisConfig{Namespace: uniqueName("batch")})
	if err != nil {
		t.Fatal(err)
	}
	ids := batchIDs("msg-")
	handleConcurrently(t, s, ids, ids[11])
	if sizes.max() < 2 {
		t.Fatalf("no pipeline carried more than one call (sizes %v): nothing was batched", sizes.sizes)
	}
	checkOnlySucceededDone(t, s, ids, ids[11])
}

// TestPostgresBatchRecordsOnlyItsSucceededMessagesDone is the PostgreSQL
// store's: one statement carries many IDs.
func TestPostgresBatchRecordsOnlyItsSucceededMessagesDone(t *testing.T) {
	cfg, err := pgxpool.ParseConfig(testenv.PostgresDSN(t))
	if err != nil {
		t.Fatal(err)
	}
	sizes := &batchSizes{}
	cfg.ConnConfig.Tracer = unnestTracer{sizes}
	cfg.MaxConns = 8
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	table := uniqueName("idem_batch_")
	dropTable(t, pool, table)
	s, err := idempotency.NewPostgres(pool, idempotency.PostgresConfig{Namespace: "batch", Table: table})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	ids := batchIDs("msg-")
	handleConcurrently(t, s, ids, ids[5])
	if sizes.max() < 2 {
		t.Fatalf("no statement carried more than one ID (sizes %v): nothing was batched", sizes.sizes)
	}
	checkOnlySucceededDone(t, s, ids, ids[5])
}

// TestBatchedBeginOfOneIDClaimsOnce: of concurrent Begins of one ID, which
// may share a round trip, exactly one gets the claim (L19).
func TestBatchedBeginOfOneIDClaimsOnce(t *testing.T) {
	pool := testPool(t)
	table := uniqueName("idem_once_")
	dropTable(t, pool, table)
	pg, err := idempotency.NewPostgres(pool, idempotency.PostgresConfig{Namespace: "once", Table: table})
	if err != nil {
		t.Fatal(err)
	}
	if err := pg.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	client := testRedis(t)
	client.AddHook(slowPipelines{&batchSizes{}})
	rs, err := idempotency.NewRedis(client, idempotency.RedisConfig{Namespace: uniqueName("once")})
	if err != nil {
		t.Fatal(err)
	}
	for name, s := range map[string]idempotency.Store{"postgres": pg, "redis": rs} {
		t.Run(name, func(t *testing.T) {
			var wg sync.WaitGroup
			var mu sync.Mutex
			got := map[idempotency.Status]int{}
			for range 16 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					st, err := s.Begin(context.Background(), "same-id")
					if err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					got[st]++
					mu.Unlock()
				}()
			}
			wg.Wait()
			if got[idempotency.StatusNew] != 1 || got[idempotency.StatusInProgress] != 15 {
				t.Fatalf("statuses = %v, want one new and 15 in progress", got)
			}
		})
	}
}
