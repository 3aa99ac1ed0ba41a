package rabbitmq

import "strings"

// EnvironmentSeparator joins an environment and a name in broker names:
// environment "prod" and topic "orders" make "prod.orders". The Kafka
// adapter uses the same separator for its topic and group prefixes.
const EnvironmentSeparator = "."

// EnvironmentName returns name in environment env, the way the Kafka
// adapter's Config.Environment prefixes topics and groups (L07): env + "." +
// name, or name itself when env is empty.
//
// Every RabbitMQ object of a topic is named after the topic (its exchange,
// each group's queue, shard queues, dead-letter exchange and queue), so an
// environment-prefixed topic, EnvironmentName(env, topic), puts all of them
// in env's namespace: QueueName(EnvironmentName("prod", "orders"),
// "kitchen") is "prod.orders.kitchen". Use it where a tool outside the
// adapter (reliablectl, rabbitmqctl, policies, permissions regexes) names
// them.
func EnvironmentName(env, name string) string {
	if env == "" {
		return name
	}
	return env + EnvironmentSeparator + name
}

// TrimEnvironment returns the name without environment env's prefix (the
// inverse of [EnvironmentName]), and whether brokerName belongs to env. An
// empty env owns every name.
func TrimEnvironment(env, brokerName string) (string, bool) {
	if env == "" {
		return brokerName, true
	}
	return strings.CutPrefix(brokerName, env+EnvironmentSeparator)
}
