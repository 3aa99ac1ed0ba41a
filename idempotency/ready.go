package idempotency

import (
	"context"
	"fmt"
	"time"
)

// readyTimeout bounds one readiness check, so a black-holed database cannot
// hang a probe.
const readyTimeout = 2 * time.Second

// Ready returns nil when the database answers a ping within 2 s (or ctx's
// deadline, if sooner), else why not.
func (s *PostgresStore) Ready(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	if err := s.pool.Ping(ctx); err != nil {
		return fmt.Errorf("idempotency: postgres store unreachable: %w", err)
	}
	return nil
}

// Ready returns nil when Redis answers a ping within 2 s (or ctx's deadline,
// if sooner), else why not.
func (s *RedisStore) Ready(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	// go-redis honours a context deadline only with ContextTimeoutEnabled,
	// which is the caller's option: wait for the ping apart from it.
	res := make(chan error, 1)
	go func() { res <- s.client.Ping(ctx).Err() }()
	var err error
	select {
	case err = <-res:
	case <-ctx.Done():
		err = ctx.Err()
	}
	if err != nil {
		return fmt.Errorf("idempotency: redis store unreachable: %w", err)
	}
	return nil
}
