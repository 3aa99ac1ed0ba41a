package idempotency

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/reliable-go/reliable"
)

// RedisConfig configures a [RedisStore].
type RedisConfig struct {
	// Namespace scopes the records, usually the consumer group: two services
	// that both consume a message each process it once. Required.
	Namespace string
	// KeyPrefix starts every Redis key. Defaults to "reliable:idem:".
	KeyPrefix string
	// ClaimTTL is how long a claim lives. Defaults to DefaultClaimTTL.
	ClaimTTL time.Duration
	// Retention is how long a done record lives; Redis expires it (L17).
	// Defaults to DefaultRetention.
	Retention time.Duration
	// Logger receives the warning of the server check the store runs on
	// its first Begin (see RedisStore.Verify). Defaults to slog.Default().
	Logger *slog.Logger
	// MaxBatch is how many concurrent Begin (or Done) calls one pipeline
	// carries: calls that arrive while earlier ones are on the wire go
	// together in the next round trip, each with its own result, as if
	// sent alone. Defaults to DefaultMaxBatch; 1 sends every call alone.
	MaxBatch int
}

func (c RedisConfig) withDefaults() RedisConfig {
	if c.KeyPrefix == "" {
		c.KeyPrefix = "reliable:idem:"
	}
	c.ClaimTTL = orDefault(c.ClaimTTL, DefaultClaimTTL)
	c.Retention = orDefault(c.Retention, DefaultRetention)
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.MaxBatch == 0 {
		c.MaxBatch = DefaultMaxBatch
	}
	return c
}

// Validate returns every problem of the configuration at once.
func (c RedisConfig) Validate() error {
	var p reliable.Problems
	p.Addf(c.Namespace == "", "Namespace is empty: set it to the consumer group")
	p.Addf(c.ClaimTTL < 0, "ClaimTTL is negative (%s)", c.ClaimTTL)
	p.Addf(c.ClaimTTL > 0 && c.ClaimTTL < time.Millisecond, "ClaimTTL %s is below Redis' 1ms resolution", c.ClaimTTL)
	p.Addf(c.Retention < 0, "Retention is negative (%s)", c.Retention)
	p.Addf(c.Retention > 0 && c.Retention < time.Millisecond, "Retention %s is below Redis' 1ms resolution", c.Retention)
	p.Addf(c.MaxBatch < 0, "MaxBatch is negative (%d)", c.MaxBatch)
	return p.Err("idempotency redis store")
}

// RedisStore is a [Store] in Redis. A record is one string key: "c:<owner>"
// while claimed (expiring after the claim TTL), "d" once done (expiring after
// the retention). Begin and Abort are Lua scripts, so each is one atomic
// step: there is no window between checking and claiming (L19).
//
// Durability is Redis': with the default RDB snapshots a Redis crash can
// forget recent done records, and the messages behind them are then processed
// again. Enable AOF with appendfsync everysec (or always) when that matters,
// or use the PostgreSQL store.
//
// The server must not evict keys (maxmemory-policy noeviction), and the store
// must write to the primary. Replication is asynchronous: a failover to a
// replica can lose the latest records, whose messages are then processed
// again, unless the primary has min-replicas-to-write set. The store checks
// these settings on its first Begin and logs a warning (see
// [RedisStore.Verify]).
type RedisStore struct {
	client redis.UniversalClient
	cfg    RedisConfig
	owner  string
	// verified is set once Verify ran against a reachable server;
	// verifying while a check runs.
	verified, verifying atomic.Bool

	begins *batcher[Status]
	dones  *batcher[struct{}]
}

var (
	// KEYS[1] record; ARGV[1] claim value; ARGV[2] claim TTL in ms.
	redisBegin = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if not v then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if v == 'd' then return 2 end
return 3`)
	// KEYS[1] record; ARGV[1] our claim value. Removes only our own claim,
	// never a done record or another consumer's claim.
	redisAbort = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0`)
)

// NewRedis returns a store using client, which may be a single node, a
// sentinel failover client or a cluster client: every operation touches one
// key.
func NewRedis(client redis.UniversalClient, cfg RedisConfig) (*RedisStore, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if client == nil {
		return nil, &reliable.ConfigError{Component: "idempotency redis store", Problems: []string{"client is nil"}}
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	s := &RedisStore{client: client, cfg: cfg, owner: "c:" + hex.EncodeToString(b[:])}
	s.begins = &batcher[Status]{max: cfg.MaxBatch, flush: s.beginMany, abandoned: s.abandonedClaim}
	s.dones = &batcher[struct{}]{max: cfg.MaxBatch, flush: s.doneMany}
	return s, nil
}

// ClaimDuration returns how long a claim made by Begin lives. A handler that runs
// longer may see its message claimed and handled by another consumer: bound
// handlers below it.
func (s *RedisStore) ClaimDuration() time.Duration { return s.cfg.ClaimTTL }

func (s *RedisStore) key(id string) string {
	return s.cfg.KeyPrefix + s.cfg.Namespace + ":" + id
}

// Begin implements [Store].
func (s *RedisStore) Begin(ctx context.Context, id string) (Status, error) {
	if id == "" {
		return 0, ErrEmptyID
	}
	s.verifyOnce()
	if s.cfg.MaxBatch > 1 {
		return s.begins.do(ctx, id)
	}
	return s.beginOne(ctx, id)
}

// beginOne is Begin for one ID, in a round trip of its own.
func (s *RedisStore) beginOne(ctx context.Context, id string) (Status, error) {
	n, err := redisBegin.Run(ctx, s.client, []string{s.key(id)}, s.owner, s.cfg.ClaimTTL.Milliseconds()).Int()
	if err != nil {
		return 0, fmt.Errorf("idempotency: redis begin %s: %w", quoteShort(id), err)
	}
	return Status(n), nil
}

// beginMany runs the Begin script for each ID in one pipeline. The script
// is sent by its digest; IDs the server answers NOSCRIPT for (a restarted
// or flushed server) go again with the script's text.
func (s *RedisStore) beginMany(ctx context.Context, ids []string) ([]Status, []error) {
	out, errs := make([]Status, len(ids)), make([]error, len(ids))
	if len(ids) == 1 { // a lone call: no pipeline
		out[0], errs[0] = s.beginOne(ctx, ids[0])
		return out, errs
	}
	run := func(idx []int, send func(redis.Pipeliner, string) *redis.Cmd) []int {
		pipe := s.client.Pipeline()
		cmds := make([]*redis.Cmd, len(idx))
		for k, i := range idx {
			cmds[k] = send(pipe, ids[i])
		}
		_, _ = pipe.Exec(ctx)
		var again []int
		for k, i := range idx {
			n, err := cmds[k].Int()
			if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
				again = append(again, i)
				continue
			}
			out[i], errs[i] = Status(n), err
			if err != nil {
				errs[i] = fmt.Errorf("idempotency: redis begin %s: %w", quoteShort(ids[i]), err)
			}
		}
		return again
	}
	all := make([]int, len(ids))
	for i := range all {
		all[i] = i
	}
	ttl := s.cfg.ClaimTTL.Milliseconds()
	again := run(all, func(p redis.Pipeliner, id string) *redis.Cmd {
		return redisBegin.EvalSha(ctx, p, []string{s.key(id)}, s.owner, ttl)
	})
	if len(again) > 0 {
		run(again, func(p redis.Pipeliner, id string) *redis.Cmd {
			return redisBegin.Eval(ctx, p, []string{s.key(id)}, s.owner, ttl)
		})
	}
	return out, errs
}

// abandonedClaim releases a claim that a batch made for a caller that had
// stopped waiting: nobody will handle the message under it.
func (s *RedisStore) abandonedClaim(id string, st Status, err error) {
	if err != nil || st != StatusNew {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), abandonTimeout)
	defer cancel()
	_ = s.Abort(ctx, id)
}

// doneMany records the IDs as done in one pipeline.
func (s *RedisStore) doneMany(ctx context.Context, ids []string) ([]struct{}, []error) {
	errs := make([]error, len(ids))
	if len(ids) == 1 {
		errs[0] = s.doneOne(ctx, ids[0])
		return make([]struct{}, 1), errs
	}
	pipe := s.client.Pipeline()
	cmds := make([]*redis.StatusCmd, len(ids))
	for i, id := range ids {
		cmds[i] = pipe.Set(ctx, s.key(id), "d", s.cfg.Retention)
	}
	_, _ = pipe.Exec(ctx)
	for i, c := range cmds {
		if err := c.Err(); err != nil {
			errs[i] = fmt.Errorf("idempotency: redis done %s: %w", quoteShort(ids[i]), err)
		}
	}
	return make([]struct{}, len(ids)), errs
}

// Done implements [Store].
func (s *RedisStore) Done(ctx context.Context, id string) error {
	if id == "" {
		return ErrEmptyID
	}
	if s.cfg.MaxBatch > 1 {
		_, err := s.dones.do(ctx, id)
		return err
	}
	return s.doneOne(ctx, id)
}

// doneOne is Done for one ID, in a round trip of its own.
func (s *RedisStore) doneOne(ctx context.Context, id string) error {
	if err := s.client.Set(ctx, s.key(id), "d", s.cfg.Retention).Err(); err != nil {
		return fmt.Errorf("idempotency: redis done %s: %w", quoteShort(id), err)
	}
	return nil
}

// Abort implements [Store]. It releases only a claim this store made, so a
// consumer whose claim expired cannot release the claim another consumer took
// since.
func (s *RedisStore) Abort(ctx context.Context, id string) error {
	if id == "" {
		return ErrEmptyID
	}
	if err := redisAbort.Run(ctx, s.client, []string{s.key(id)}, s.owner).Err(); err != nil {
		return fmt.Errorf("idempotency: redis abort %s: %w", quoteShort(id), err)
	}
	return nil
}
