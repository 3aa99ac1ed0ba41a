package kafka

import "strings"

// EnvironmentSeparator joins an environment and a name in the broker's
// names: environment "prod" and topic "orders" make the Kafka topic
// "prod.orders". The RabbitMQ adapter uses the same separator.
const EnvironmentSeparator = "."

// EnvironmentName returns the name Kafka knows name by in environment env,
// the way Config.Environment prefixes topic names and consumer group IDs
// (L07): env + "." + name, or name itself when env is empty. Use it where a
// tool outside the adapter (reliablectl, kafka-topics.sh, ACLs, dashboards)
// names a topic or a group.
func EnvironmentName(env, name string) string {
	if env == "" {
		return name
	}
	return env + EnvironmentSeparator + name
}

// TrimEnvironment returns the name the application uses for a Kafka topic
// or group ID of environment env (the inverse of [EnvironmentName]), and
// whether brokerName belongs to env. An empty env owns every name.
func TrimEnvironment(env, brokerName string) (string, bool) {
	if env == "" {
		return brokerName, true
	}
	return strings.CutPrefix(brokerName, env+EnvironmentSeparator)
}

// BrokerName returns the name the adapter configured by c uses on Kafka for
// a topic or consumer group ID: EnvironmentName(c.Environment, name), or
// name unchanged when c.DisableEnvironmentPrefix is set.
func (c Config) BrokerName(name string) string {
	if c.DisableEnvironmentPrefix {
		return name
	}
	return EnvironmentName(c.Environment, name)
}
