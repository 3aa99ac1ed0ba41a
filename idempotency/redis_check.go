package idempotency

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"
)

// Verify checks the Redis server for settings under which the store loses
// records, so a message would be processed twice:
//
//   - an eviction policy other than noeviction: under memory pressure Redis
//     deletes done records and live claims;
//   - the store talking to a replica (role:slave): writes are refused, or
//     with replica-read-only off kept on the replica alone;
//   - a primary with replicas but min-replicas-to-write 0: replication is
//     asynchronous, so a failover to a replica can lose the last records
//     acknowledged by the old primary (configure min-replicas-to-write, or
//     accept that a failover can repeat recent messages);
//   - appendonly off: a Redis restart forgets records written since the
//     last RDB snapshot.
//
// It returns nil when none applies, else every problem found, joined. A
// server that refuses CONFIG (some managed services) is reported as such.
// The store runs Verify once, in the background, on its first Begin that
// reaches Redis, and logs what it finds as a warning; call it at start-up
// to fail fast instead.
func (s *RedisStore) Verify(ctx context.Context) error {
	var problems []error
	cfg := func(name string) (string, error) {
		m, err := s.client.ConfigGet(ctx, name).Result()
		if err != nil {
			return "", err
		}
		v, ok := m[name]
		if !ok {
			return "", fmt.Errorf("CONFIG GET %s returned nothing", name)
		}
		return v, nil
	}
	if policy, err := cfg("maxmemory-policy"); err != nil {
		problems = append(problems, fmt.Errorf("cannot read maxmemory-policy (%w): make sure it is noeviction", err))
	} else if policy != "noeviction" {
		problems = append(problems, fmt.Errorf("maxmemory-policy is %s, not noeviction: Redis may evict done records and claims, and their messages are then processed again", policy))
	}
	if aof, err := cfg("appendonly"); err == nil && aof != "yes" {
		problems = append(problems, errors.New("appendonly is off: a Redis restart forgets the records written since the last snapshot"))
	}
	info, err := s.client.Info(ctx, "replication").Result()
	if err != nil {
		problems = append(problems, fmt.Errorf("cannot read INFO replication: %w", err))
	} else {
		fields := infoFields(info)
		switch {
		case fields["role"] == "slave":
			problems = append(problems, errors.New("connected to a replica: the store must write to the primary"))
		case fields["connected_slaves"] != "" && fields["connected_slaves"] != "0":
			if n, err := cfg("min-replicas-to-write"); err == nil && n == "0" {
				problems = append(problems, fmt.Errorf("the primary has %s replica(s) and min-replicas-to-write 0: a failover to an asynchronous replica can lose the latest records", fields["connected_slaves"]))
			}
		}
	}
	if len(problems) == 0 {
		return nil
	}
	return fmt.Errorf("idempotency: redis server settings break deduplication: %w", errors.Join(problems...))
}

func infoFields(info string) map[string]string {
	m := map[string]string{}
	for line := range strings.SplitSeq(info, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok {
			m[k] = v
		}
	}
	return m
}

// verifyOnce runs Verify in the background on the first Begin that finds
// Redis reachable and logs what it finds; an unreachable Redis is Ready's
// business, not a setting, so the check waits for a later Begin then.
func (s *RedisStore) verifyOnce() {
	if s.verified.Load() || !s.verifying.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer s.verifying.Store(false)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if s.client.Ping(ctx).Err() != nil {
			return
		}
		err := s.Verify(ctx)
		s.verified.Store(true)
		if err != nil {
			s.cfg.Logger.Warn("redis dedupe store: server settings can lose records", slog.String("namespace", s.cfg.Namespace),
				slog.String("error", err.Error()))
		}
	}()
}
