package rabbitmq

import (
	"crypto/tls"
	"log/slog"
	"strings"
	"time"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/producer"
)

// Defaults of the options below.
const (
	// DefaultConfirmChannels is the number of confirm-mode channels a
	// Publisher spreads concurrent Publish calls over.
	DefaultConfirmChannels = 4
	// DefaultConfirmWindow is how many messages a confirm channel may have
	// published and not yet confirmed.
	DefaultConfirmWindow = 1024
	// DefaultPrefetch is the number of unacked deliveries the broker sends a
	// subscription ahead of the application.
	DefaultPrefetch = 64
	// DefaultDialTimeout bounds the TCP connect plus the TLS and AMQP
	// handshakes of one dial.
	DefaultDialTimeout = 10 * time.Second
	// DefaultShardStandby is how long a subscriber with primary shards waits
	// before registering on the other shards as a standby.
	DefaultShardStandby = 3 * time.Second
	// DefaultHeartbeat is the AMQP heartbeat interval: a silent network (no
	// RST) is detected after about two of them.
	DefaultHeartbeat = 10 * time.Second
	// DefaultCloseTimeout is how long Publisher.Close lets in-flight Publish
	// calls finish before it makes them return reliable.ErrClosed.
	DefaultCloseTimeout = 5 * time.Second
)

// Option configures both a Publisher and a Subscriber.
type Option interface {
	PublisherOption
	SubscriberOption
}

// PublisherOption configures a Publisher. Options that only make sense for a
// publisher have this type, so passing one to a subscriber does not compile.
type PublisherOption interface{ applyPublisher(*publisherConfig) }

// SubscriberOption configures a Subscriber.
type SubscriberOption interface{ applySubscriber(*subscriberConfig) }

// common holds the settings shared by publishers and subscribers.
type common struct {
	tls         *tls.Config
	logger      *slog.Logger
	topology    Topology
	backoff     reliable.Backoff
	dialTimeout time.Duration
	heartbeat   time.Duration
	connName    string
	// environment names the environment (L07); noEnvPrefix keeps broker
	// names unprefixed.
	environment string
	noEnvPrefix bool
}

// prefix returns what is prepended to a topic to name its broker objects.
func (c *common) prefix() string {
	if c.noEnvPrefix {
		return ""
	}
	return EnvironmentName(c.environment, "")
}

func (c *common) validate(p *reliable.Problems) {
	c.topology.validate(p)
	p.Addf(c.dialTimeout < 0, "DialTimeout is negative")
	p.Addf(c.heartbeat < 0, "Heartbeat is negative")
	p.Addf(strings.ContainsAny(c.environment, " /\\\x00"), "Environment %q contains a space, slash or NUL", c.environment)
	p.Addf(c.backoff.Initial < 0 || c.backoff.Max < 0, "reconnect Backoff has a negative duration")
}

func (c *common) withDefaults() {
	if c.logger == nil {
		c.logger = slog.Default()
	}
	if c.dialTimeout == 0 {
		c.dialTimeout = DefaultDialTimeout
	}
	if c.heartbeat == 0 {
		c.heartbeat = DefaultHeartbeat
	}
	if c.backoff == (reliable.Backoff{}) {
		c.backoff = reliable.Backoff{Initial: 200 * time.Millisecond, Max: 5 * time.Second}
	}
	c.topology = c.topology.withDefaults()
}

type publisherConfig struct {
	common
	channels     int
	window       int
	closeTimeout time.Duration
	producer     producer.Config
}

type subscriberConfig struct {
	common
	prefetch int
	shards   []int
	standby  time.Duration
}

type commonOption func(*common)

func (f commonOption) applyPublisher(c *publisherConfig)   { f(&c.common) }
func (f commonOption) applySubscriber(c *subscriberConfig) { f(&c.common) }

type publisherOption func(*publisherConfig)

func (f publisherOption) applyPublisher(c *publisherConfig) { f(c) }

type subscriberOption func(*subscriberConfig)

func (f subscriberOption) applySubscriber(c *subscriberConfig) { f(c) }

// WithTLS sets the TLS configuration for amqps:// URLs, for example a
// RootCAs pool holding a private CA, or client certificates. The config is
// cloned before each dial. Without it, an amqps:// URL verifies the server
// against the system roots.
func WithTLS(cfg *tls.Config) Option {
	return commonOption(func(c *common) { c.tls = cfg })
}

// WithLogger sets the logger for connection events. Defaults to
// slog.Default(). Credentials are never logged.
func WithLogger(l *slog.Logger) Option {
	return commonOption(func(c *common) { c.logger = l })
}

// WithTopology sets how queues are declared. Publishers, subscribers and
// [Declare] of one topic must use the same Topology: RabbitMQ refuses to
// redeclare a queue with other arguments. Defaults to the zero Topology,
// whose defaults are documented on its fields.
func WithTopology(t Topology) Option {
	return commonOption(func(c *common) { c.topology = t })
}

// WithReconnectBackoff spaces reconnection attempts. Defaults to 200ms
// doubling up to 5s, with jitter.
func WithReconnectBackoff(b reliable.Backoff) Option {
	return commonOption(func(c *common) { c.backoff = b })
}

// WithDialTimeout bounds one connection attempt (TCP, TLS and AMQP
// handshakes). Defaults to DefaultDialTimeout.
func WithDialTimeout(d time.Duration) Option {
	return commonOption(func(c *common) { c.dialTimeout = d })
}

// WithHeartbeat sets the AMQP heartbeat interval. Defaults to
// DefaultHeartbeat.
func WithHeartbeat(d time.Duration) Option {
	return commonOption(func(c *common) { c.heartbeat = d })
}

// WithConnectionName names the connection in the management UI and API
// (the client property connection_name).
func WithConnectionName(name string) Option {
	return commonOption(func(c *common) { c.connName = name })
}

// WithConfirmChannels sets how many confirm-mode channels a Publisher uses.
// One Publish call uses one channel, so the messages of a call keep their
// order; concurrent calls spread over the channels. Defaults to
// DefaultConfirmChannels.
func WithConfirmChannels(n int) PublisherOption {
	return publisherOption(func(c *publisherConfig) { c.channels = n })
}

// WithConfirmWindow bounds the messages a confirm channel has in flight
// (published, not yet confirmed). Publish waits for room. Defaults to
// DefaultConfirmWindow.
func WithConfirmWindow(n int) PublisherOption {
	return publisherOption(func(c *publisherConfig) { c.window = n })
}

// WithCloseTimeout bounds how long Publisher.Close waits for in-flight
// Publish calls (a call waiting for a reconnect or for the broker to lift a
// resource alarm would otherwise hold Close as long as its context). When
// it expires, those calls return an error matching reliable.ErrClosed; the
// outcome of their messages is unknown, as with ErrNotConfirmed. Defaults
// to DefaultCloseTimeout.
func WithCloseTimeout(d time.Duration) PublisherOption {
	return publisherOption(func(c *publisherConfig) { c.closeTimeout = d })
}

// WithProducerConfig configures the retrying producer that [NewProducer]
// wraps around the Publisher: environment and source stamping, size limit,
// retry backoff. Ignored by [NewPublisher].
func WithProducerConfig(cfg producer.Config) PublisherOption {
	return publisherOption(func(c *publisherConfig) { c.producer = cfg })
}

// WithPrefetch sets how many unacked deliveries the broker sends ahead per
// subscription (basic.qos, per consumer). Defaults to DefaultPrefetch.
func WithPrefetch(n int) SubscriberOption {
	return subscriberOption(func(c *subscriberConfig) { c.prefetch = n })
}

// WithShardIndexes gives a Subscriber of a sharded topology (Topology.Shards
// > 1) its primary shards, numbered from 0: it consumes them at once and
// the other shards only after the standby delay (see WithShardStandby).
// Each shard queue has a single active consumer, the first one registered,
// so instances started with different primary shards each become the active
// consumer of their own shards, and the standby registrations take over the
// shards of an instance that stops. Defaults to every shard at once.
func WithShardIndexes(primary ...int) SubscriberOption {
	return subscriberOption(func(c *subscriberConfig) { c.shards = append([]int(nil), primary...) })
}

// WithShardStandby sets how long a Subscriber with primary shards waits
// before it also registers on the other shards, as a standby. A negative
// delay never registers on them (a static assignment: a stopped instance's
// shards wait for it). Defaults to DefaultShardStandby.
func WithShardStandby(d time.Duration) SubscriberOption {
	return subscriberOption(func(c *subscriberConfig) { c.standby = d })
}

// WithEnvironment sets the environment ("prod", "staging") of a Publisher,
// a Subscriber or Declare, as kafka.Config.Environment does (L07):
//
//   - every broker object of a topic is named in the environment's
//     namespace, EnvironmentName(env, topic): topic "orders" is the exchange
//     "prod.orders", group "kitchen" its queue "prod.orders.kitchen" (see
//     WithoutEnvironmentPrefix). Messages are published and delivered with
//     the application's topic, "orders";
//   - a Publisher (and so NewProducer) stamps env on every message as
//     reliable.HeaderEnvironment;
//   - a Subscriber refuses messages whose environment header is not env:
//     such a message is never handed to the application; it is rejected to
//     the dead-letter queue and logged with the reason.
//
// Empty (the default) prefixes, stamps and checks nothing.
func WithEnvironment(env string) Option {
	return commonOption(func(c *common) { c.environment = env })
}

// WithoutEnvironmentPrefix keeps exchange and queue names as the topic and
// group give them, e.g. when every environment has its own broker or
// virtual host, like kafka.Config.DisableEnvironmentPrefix. The environment
// is still stamped and checked.
func WithoutEnvironmentPrefix() Option {
	return commonOption(func(c *common) { c.noEnvPrefix = true })
}

func newPublisherConfig(opts []PublisherOption) (publisherConfig, error) {
	var c publisherConfig
	for _, o := range opts {
		if o != nil {
			o.applyPublisher(&c)
		}
	}
	var p reliable.Problems
	c.validate(&p)
	p.Addf(c.channels < 0, "ConfirmChannels is %d, must be positive", c.channels)
	p.Addf(c.window < 0, "ConfirmWindow is %d, must be positive", c.window)
	p.Addf(c.closeTimeout < 0, "CloseTimeout is negative")
	if err := p.Err("rabbitmq publisher"); err != nil {
		return c, err
	}
	c.withDefaults()
	if c.channels == 0 {
		c.channels = DefaultConfirmChannels
	}
	if c.window == 0 {
		c.window = DefaultConfirmWindow
	}
	if c.closeTimeout == 0 {
		c.closeTimeout = DefaultCloseTimeout
	}
	return c, nil
}

func newSubscriberConfig(opts []SubscriberOption) (subscriberConfig, error) {
	var c subscriberConfig
	for _, o := range opts {
		if o != nil {
			o.applySubscriber(&c)
		}
	}
	var p reliable.Problems
	c.validate(&p)
	p.Addf(c.prefetch < 0, "Prefetch is %d, must be positive", c.prefetch)
	p.Addf(c.prefetch > 65535, "Prefetch is %d, above the AMQP maximum 65535", c.prefetch)
	shards := c.topology.Shards
	if shards < 1 {
		shards = 1
	}
	for _, i := range c.shards {
		p.Addf(i < 0 || i >= shards, "shard index %d is outside the %d shards of the topology", i, shards)
	}
	if err := p.Err("rabbitmq subscriber"); err != nil {
		return c, err
	}
	c.withDefaults()
	if c.prefetch == 0 {
		c.prefetch = DefaultPrefetch
	}
	if c.standby == 0 {
		c.standby = DefaultShardStandby
	}
	return c, nil
}
