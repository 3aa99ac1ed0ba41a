package rabbitmq

import (
	"strings"
	"testing"
)

// The helpers prefix and trim like the Kafka adapter's (L07), and an
// environment-prefixed topic puts every object the topology derives from it
// (exchange, queues, shard queues, dead-letter exchange and queue) in the
// environment's namespace, so two environments on one broker share none.
func TestEnvironmentNames(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ env, name, want string }{
		{"prod", "orders", "prod.orders"},
		{"", "orders", "orders"},
		{"staging-eu", "kitchen.v2", "staging-eu.kitchen.v2"},
	} {
		if got := EnvironmentName(c.env, c.name); got != c.want {
			t.Errorf("EnvironmentName(%q, %q) = %q, want %q", c.env, c.name, got, c.want)
		}
		if got, ok := TrimEnvironment(c.env, c.want); !ok || got != c.name {
			t.Errorf("TrimEnvironment(%q, %q) = %q, %t, want %q, true", c.env, c.want, got, ok, c.name)
		}
	}
	if got, ok := TrimEnvironment("prod", "production.orders"); ok {
		t.Errorf("TrimEnvironment(prod, production.orders) = %q, true: the separator is part of the prefix", got)
	}

	names := func(env string) []string {
		topic := EnvironmentName(env, "orders")
		return []string{
			ExchangeName(topic), QueueName(topic, "kitchen"), ShardQueueName(topic, "kitchen", 3),
			DeadLetterQueueName(topic, "kitchen"), deadLetterExchangeName(topic), shardExchangeName(topic, "kitchen"),
		}
	}
	prod, staging := names("prod"), names("staging")
	for i, n := range prod {
		if !strings.HasPrefix(n, "prod.") {
			t.Errorf("object %d of a prod topic is %q, outside prod's namespace", i, n)
		}
		if got, ok := TrimEnvironment("staging", n); ok {
			t.Errorf("prod's %q belongs to staging as %q", n, got)
		}
		if n == staging[i] {
			t.Errorf("prod and staging share %q", n)
		}
	}
}
