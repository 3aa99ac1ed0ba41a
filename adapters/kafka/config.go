package kafka

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/IBM/sarama"

	"github.com/reliable-go/reliable"
)

// Default values of Config. Each field's doc says which one applies.
const (
	DefaultClientID                = "reliable-go"
	DefaultMaxMessageBytes         = 1 << 20
	DefaultProducerRetries         = 1000
	DefaultProducerRetryBackoffMax = time.Second
	DefaultCloseTimeout            = 30 * time.Second
	DefaultCommitInterval          = time.Second
	DefaultMaxInFlightPerPartition = 256
	DefaultRebalanceTimeout        = 60 * time.Second
	DefaultDrainTimeout            = 30 * time.Second
	DefaultSessionTimeout          = 10 * time.Second
	DefaultRedeliveryBackoffMax    = 5 * time.Second
	DefaultMinReplicationFactor    = 3
	DefaultMinInsyncReplicas       = 2
)

// DefaultVersion is the Kafka protocol version assumed when Config.Version is
// zero, and the lowest one accepted.
var DefaultVersion = sarama.V2_8_0_0

// Config configures a [Publisher], a [Subscriber] and [NewProducer]. The zero
// value of every optional field selects the durable default documented on it;
// only Brokers (and Consumer.Group, for a subscriber) are required.
//
// Config's String, GoString and LogValue never show the SASL password, so a
// Config may be logged.
type Config struct {
	// Brokers are the bootstrap addresses, "host:port". Required.
	Brokers []string
	// ClientID names this client in broker logs and quotas. Defaults to
	// DefaultClientID.
	ClientID string
	// Version is the oldest Kafka version of the cluster. Defaults to
	// DefaultVersion (2.8), also the minimum: the idempotent producer's
	// recovery from lost sequence numbers needs it.
	Version sarama.KafkaVersion

	// Environment ("prod", "staging") is stamped on every published message
	// as reliable.HeaderEnvironment and, unless DisableEnvironmentPrefix is
	// set, prefixed with a dot to every topic name and consumer group ID:
	// topic "orders" is the Kafka topic "prod.orders". A consumer pointed at
	// the wrong cluster then reads its own environment's topics with its own
	// group and cannot commit offsets for another environment (L07).
	// Messages delivered to the application carry the unprefixed topic.
	Environment string
	// DisableEnvironmentPrefix keeps topic names and group IDs as given, e.g.
	// when every environment has its own cluster. The environment header is
	// still stamped.
	DisableEnvironmentPrefix bool

	// TLS, when not nil, encrypts connections with this configuration. Use
	// [LoadTLS] for a custom CA and an optional client certificate.
	TLS *tls.Config
	// SASL authenticates the client. The zero value disables SASL.
	SASL SASL

	// Audit checks the durability settings of the topics in use. See
	// [AuditConfig] for its defaults.
	Audit AuditConfig

	// Producer configures publishing.
	Producer ProducerConfig
	// Consumer configures subscribing.
	Consumer ConsumerConfig

	// Logger receives warnings and errors. Defaults to slog.Default().
	Logger *slog.Logger

	// Tune, when set, is called last on the sarama configuration built from
	// the fields above, for settings this Config does not cover (flush
	// thresholds, buffer sizes, timeouts). Changing a durability setting there
	// is possible but logged as a warning each time a client is built.
	// Cooperative rebalancing (a cooperative-sticky strategy alone) is
	// refused with a *reliable.ConfigError: the subscriber drains and commits
	// a partition when its session ends, which cooperative revocation skips.
	Tune func(*sarama.Config)
}

// ProducerConfig configures the publishing side.
type ProducerConfig struct {
	// MaxMessageBytes is the largest record (key, value, headers and record
	// overhead) the producer sends; larger ones fail before anything is sent
	// with a *reliable.MessageTooLargeError (L13). Keep it at or below the
	// broker's message.max.bytes. Defaults to DefaultMaxMessageBytes (1 MiB).
	MaxMessageBytes int
	// Retries is how often sarama resends a record the broker did not
	// acknowledge (leader change, NotEnoughReplicas, timeouts) before
	// Publish reports it as failed. Defaults to DefaultProducerRetries, with
	// RetryBackoffMax that is about 15 minutes: effectively unlimited, so
	// the caller's context decides how long to wait (L06).
	Retries int
	// RetryBackoffMax caps the exponential backoff (from 100ms) between
	// sarama's resends. Defaults to DefaultProducerRetryBackoffMax.
	RetryBackoffMax time.Duration
	// Partitioner chooses a record's partition. Defaults to
	// sarama.NewMurmur2Partitioner: a key lands in the partition the Java
	// client chooses, so services in other languages can share topics.
	Partitioner sarama.PartitionerConstructor
	// Compression of record batches. Defaults to none.
	Compression sarama.CompressionCodec
	// CloseTimeout bounds how long Close waits for records still in flight.
	// Defaults to DefaultCloseTimeout.
	CloseTimeout time.Duration

	// Source is stamped as reliable.HeaderSource by [NewProducer], e.g.
	// "order-service". Optional.
	Source string
	// Backoff spaces the attempts of [NewProducer]'s retry loop (a whole
	// Publish after sarama gave up). See reliable.Backoff for its defaults.
	Backoff reliable.Backoff
	// MaxAttempts bounds [NewProducer]'s attempts per Publish call. Defaults
	// to 0: retry until the context ends.
	MaxAttempts int
}

// ConsumerConfig configures the subscribing side.
type ConsumerConfig struct {
	// Group is the consumer group ID, prefixed by the environment (see
	// Config.Environment). Required for a Subscriber.
	Group string
	// CommitInterval is how often the offsets of completed deliveries are
	// committed. Offsets are also committed when a partition is revoked and on
	// shutdown. Defaults to DefaultCommitInterval.
	CommitInterval time.Duration
	// MaxInFlightPerPartition bounds the deliveries of one partition that are
	// received but not yet committed; the partition pauses at the bound, so a
	// backlog waits in Kafka, not in memory (L23). Defaults to
	// DefaultMaxInFlightPerPartition.
	MaxInFlightPerPartition int
	// DrainTimeout bounds how long a revoked partition (a rebalance, or the
	// Subscribe context ending) waits for its in-flight deliveries to be
	// settled before its last commit. Must be below RebalanceTimeout, or the
	// member is evicted and its commits fail. Defaults to DefaultDrainTimeout.
	DrainTimeout time.Duration
	// RebalanceTimeout is how long the group waits for members to rejoin in a
	// rebalance. Defaults to DefaultRebalanceTimeout.
	RebalanceTimeout time.Duration
	// SessionTimeout is how long the group waits for a member's heartbeat
	// before it evicts the member. Defaults to DefaultSessionTimeout.
	SessionTimeout time.Duration
	// DeadLetterTopic, when set, is the topic (unprefixed, like every topic
	// name; the environment prefix is applied) that [Subscriber.DeadLetter]
	// publishes poison messages to. NewSubscriber fails with an error
	// matching reliable.ErrUnknownTopic when it does not exist, and audits
	// its durability like any topic written to. Kafka has no dead-letter
	// policy of its own: without a dead-letter path a poison message is
	// redelivered until an operator acts.
	DeadLetterTopic string
	// RedeliveryBackoff spaces the redeliveries of a nacked record, which
	// comes back in the same claim with Attempt+1 (see [Subscriber]). Its
	// zero fields take reliable.Backoff's defaults, except Max, which
	// defaults to DefaultRedeliveryBackoffMax.
	RedeliveryBackoff reliable.Backoff
	// OnError, when set, is called with every error of the consumer group:
	// failed commits, fetch errors, rebalance failures. They are logged in any
	// case. It must not block.
	OnError func(error)
}

// SASLMechanism names a SASL mechanism.
type SASLMechanism string

// The supported SASL mechanisms.
const (
	SASLPlain       SASLMechanism = sarama.SASLTypePlaintext
	SASLScramSHA256 SASLMechanism = sarama.SASLTypeSCRAMSHA256
	SASLScramSHA512 SASLMechanism = sarama.SASLTypeSCRAMSHA512
)

// SASL holds SASL credentials. The zero value disables SASL.
type SASL struct {
	// Mechanism is SASLPlain, SASLScramSHA256 or SASLScramSHA512; empty
	// disables SASL.
	Mechanism SASLMechanism
	User      string
	Password  Secret
}

// Secret is a string that formats and logs as "[REDACTED]" (when set), so a
// password cannot leak through fmt, slog or an error message.
type Secret string

const redacted = "[REDACTED]"

func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return redacted
}

// GoString redacts %#v.
func (s Secret) GoString() string { return fmt.Sprintf("%q", s.String()) }

// LogValue redacts the secret in slog output.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// MarshalText redacts the secret in JSON and other text encodings.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// String describes c for logs, without the SASL password.
func (c Config) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "kafka.Config{Brokers:%v ClientID:%q Version:%s Environment:%q TLS:%t",
		c.Brokers, c.ClientID, c.Version, c.Environment, c.TLS != nil)
	if c.SASL.Mechanism != "" {
		fmt.Fprintf(&b, " SASL:%s/%s Password:%s", c.SASL.Mechanism, c.SASL.User, c.SASL.Password)
	}
	if c.Consumer.Group != "" {
		fmt.Fprintf(&b, " Group:%q", c.Consumer.Group)
	}
	b.WriteString("}")
	return b.String()
}

// GoString redacts %#v.
func (c Config) GoString() string { return c.String() }

// LogValue describes c for slog, without the SASL password.
func (c Config) LogValue() slog.Value {
	attrs := []slog.Attr{
		slog.Any("brokers", c.Brokers),
		slog.String("client_id", c.ClientID),
		slog.String("environment", c.Environment),
		slog.Bool("tls", c.TLS != nil),
	}
	if c.SASL.Mechanism != "" {
		attrs = append(attrs, slog.String("sasl_mechanism", string(c.SASL.Mechanism)),
			slog.String("sasl_user", c.SASL.User), slog.Any("sasl_password", c.SASL.Password))
	}
	if c.Consumer.Group != "" {
		attrs = append(attrs, slog.String("group", c.Consumer.Group))
	}
	return slog.GroupValue(attrs...)
}

// Validate returns every problem of c at once, as a *reliable.ConfigError, or
// nil. It does not check Consumer.Group, which only a Subscriber needs.
func (c Config) Validate() error {
	var p reliable.Problems
	c.validate(&p)
	return p.Err("kafka")
}

func (c Config) validate(p *reliable.Problems) {
	p.Addf(len(c.Brokers) == 0, "Brokers is empty")
	for _, b := range c.Brokers {
		_, port, err := net.SplitHostPort(b)
		p.Addf(err != nil || port == "", "broker address %q is not host:port", b)
	}
	p.Addf(c.Version != (sarama.KafkaVersion{}) && !c.Version.IsAtLeast(DefaultVersion),
		"Version %s is below the supported minimum %s", c.Version, DefaultVersion)
	p.Addf(strings.ContainsAny(c.Environment, " /\\\x00"), "Environment %q contains a space, slash or NUL", c.Environment)
	switch c.SASL.Mechanism {
	case "":
		p.Addf(c.SASL.User != "" || c.SASL.Password != "", "SASL credentials are set but SASL.Mechanism is empty")
	case SASLPlain, SASLScramSHA256, SASLScramSHA512:
		p.Addf(c.SASL.User == "", "SASL.User is empty")
		p.Addf(c.SASL.Password == "", "SASL.Password is empty")
	default:
		p.Addf(true, "SASL.Mechanism %q is not one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512", c.SASL.Mechanism)
	}
	c.Audit.validate(p)
	pc := c.Producer
	p.Addf(pc.MaxMessageBytes < 0, "Producer.MaxMessageBytes is negative")
	p.Addf(pc.MaxMessageBytes >= int(sarama.MaxRequestSize), "Producer.MaxMessageBytes %d is not below sarama's MaxRequestSize %d", pc.MaxMessageBytes, sarama.MaxRequestSize)
	p.Addf(pc.Retries < 0, "Producer.Retries is negative")
	p.Addf(pc.RetryBackoffMax < 0, "Producer.RetryBackoffMax is negative")
	p.Addf(pc.CloseTimeout < 0, "Producer.CloseTimeout is negative")
	p.Addf(pc.MaxAttempts < 0, "Producer.MaxAttempts is negative")
	cc := c.Consumer
	p.Addf(cc.CommitInterval < 0, "Consumer.CommitInterval is negative")
	p.Addf(cc.MaxInFlightPerPartition < 0, "Consumer.MaxInFlightPerPartition is negative")
	p.Addf(cc.DrainTimeout < 0, "Consumer.DrainTimeout is negative")
	p.Addf(cc.RebalanceTimeout < 0, "Consumer.RebalanceTimeout is negative")
	p.Addf(cc.SessionTimeout < 0, "Consumer.SessionTimeout is negative")
	p.Addf(strings.ContainsAny(cc.DeadLetterTopic, " /\\\x00"), "Consumer.DeadLetterTopic %q contains a space, slash or NUL", cc.DeadLetterTopic)
	p.Addf(cc.RedeliveryBackoff.Initial < 0 || cc.RedeliveryBackoff.Max < 0, "Consumer.RedeliveryBackoff has a negative delay")
	d := c.withDefaults().Consumer
	p.Addf(d.DrainTimeout >= d.RebalanceTimeout, "Consumer.DrainTimeout %s must be below Consumer.RebalanceTimeout %s, or a slow drain gets the member evicted", d.DrainTimeout, d.RebalanceTimeout)
}

func (c Config) withDefaults() Config {
	if c.ClientID == "" {
		c.ClientID = DefaultClientID
	}
	if c.Version == (sarama.KafkaVersion{}) {
		c.Version = DefaultVersion
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	pc := &c.Producer
	if pc.MaxMessageBytes == 0 {
		pc.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if pc.Retries == 0 {
		pc.Retries = DefaultProducerRetries
	}
	if pc.RetryBackoffMax == 0 {
		pc.RetryBackoffMax = DefaultProducerRetryBackoffMax
	}
	if pc.Partitioner == nil {
		pc.Partitioner = sarama.NewMurmur2Partitioner
	}
	if pc.CloseTimeout == 0 {
		pc.CloseTimeout = DefaultCloseTimeout
	}
	cc := &c.Consumer
	if cc.CommitInterval == 0 {
		cc.CommitInterval = DefaultCommitInterval
	}
	if cc.MaxInFlightPerPartition == 0 {
		cc.MaxInFlightPerPartition = DefaultMaxInFlightPerPartition
	}
	if cc.RebalanceTimeout == 0 {
		cc.RebalanceTimeout = DefaultRebalanceTimeout
	}
	if cc.DrainTimeout == 0 {
		cc.DrainTimeout = min(DefaultDrainTimeout, cc.RebalanceTimeout/2)
	}
	if cc.SessionTimeout == 0 {
		cc.SessionTimeout = DefaultSessionTimeout
	}
	if cc.RedeliveryBackoff.Max == 0 {
		cc.RedeliveryBackoff.Max = DefaultRedeliveryBackoffMax
	}
	c.Audit = c.Audit.withDefaults()
	return c
}

// prefix returns what is prepended to topic names and group IDs.
func (c Config) prefix() string {
	if c.Environment == "" || c.DisableEnvironmentPrefix {
		return ""
	}
	return c.Environment + "."
}

// role selects the settings saramaConfig applies.
type role int

const (
	roleProducer role = iota
	roleConsumer
)

// saramaConfig builds the durable sarama configuration for r. c must have its
// defaults applied.
func (c Config) saramaConfig(r role) (*sarama.Config, error) {
	sc := sarama.NewConfig()
	sc.ClientID = c.ClientID
	sc.Version = c.Version
	// Never create a topic because a producer or consumer mentioned it.
	sc.Metadata.AllowAutoTopicCreation = false

	if c.TLS != nil {
		sc.Net.TLS.Enable = true
		sc.Net.TLS.Config = c.TLS
	}
	if c.SASL.Mechanism != "" {
		sc.Net.SASL.Enable = true
		sc.Net.SASL.Handshake = true
		sc.Net.SASL.Mechanism = sarama.SASLMechanism(c.SASL.Mechanism)
		sc.Net.SASL.User = c.SASL.User
		sc.Net.SASL.Password = string(c.SASL.Password)
		switch c.SASL.Mechanism {
		case SASLScramSHA256:
			sc.Net.SASL.SCRAMClientGeneratorFunc = scramSHA256
		case SASLScramSHA512:
			sc.Net.SASL.SCRAMClientGeneratorFunc = scramSHA512
		}
	}

	switch r {
	case roleProducer:
		p := &sc.Producer
		p.RequiredAcks = sarama.WaitForAll
		p.Idempotent = true
		// More than one in-flight request may reorder records on retries.
		sc.Net.MaxOpenRequests = 1
		p.Retry.Max = c.Producer.Retries
		p.Retry.BackoffFunc = retryBackoff(c.Producer.RetryBackoffMax)
		p.Return.Successes = true
		p.Return.Errors = true
		p.Partitioner = c.Producer.Partitioner
		p.MaxMessageBytes = c.Producer.MaxMessageBytes
		p.Compression = c.Producer.Compression
	case roleConsumer:
		cs := &sc.Consumer
		// Commit only what is complete, ourselves (L04, L05).
		cs.Offsets.AutoCommit.Enable = false
		// A new group reads what is already there instead of skipping it.
		cs.Offsets.Initial = sarama.OffsetOldest
		// An out-of-range offset (data deleted by retention) restarts at the
		// oldest record: duplicates, never a silent skip to the newest.
		cs.Group.ResetInvalidOffsets = true
		// Never hand out records of another client's aborted transaction;
		// records of open transactions wait until they commit.
		cs.IsolationLevel = sarama.ReadCommitted
		cs.Return.Errors = true
		cs.Group.Rebalance.Timeout = c.Consumer.RebalanceTimeout
		cs.Group.Session.Timeout = c.Consumer.SessionTimeout
		// Frequent heartbeats let a member notice a rebalance sooner.
		cs.Group.Heartbeat.Interval = c.Consumer.SessionTimeout / 10
	}

	if c.Tune != nil {
		c.Tune(sc)
		for _, w := range weakened(sc, r) {
			c.Logger.Warn("kafka: Config.Tune weakened a durability setting", slog.String("setting", w))
		}
	}
	if err := sc.Validate(); err != nil {
		return nil, &reliable.ConfigError{Component: "kafka", Problems: []string{"sarama: " + err.Error()}}
	}
	if r == roleConsumer {
		if name, ok := cooperative(sc); ok {
			return nil, &reliable.ConfigError{Component: "kafka", Problems: []string{fmt.Sprintf(
				"Config.Tune selects cooperative rebalancing (strategy %q), which the subscriber does not support: "+
					"it revokes partitions inside a running session, and a revoked partition would stall at its in-flight limit; "+
					"use an eager strategy (range, roundrobin, sticky), or list an eager one next to it", name)}}
		}
	}
	return sc, nil
}

// cooperative reports whether sc's balance strategies negotiate the
// cooperative rebalance protocol (every strategy supports it, as sarama
// decides), and names one.
func cooperative(sc *sarama.Config) (string, bool) {
	strategies := sc.Consumer.Group.Rebalance.GroupStrategies
	if s := sc.Consumer.Group.Rebalance.Strategy; s != nil {
		strategies = []sarama.BalanceStrategy{s} // the deprecated field wins
	}
	if len(strategies) == 0 {
		return "", false
	}
	for _, s := range strategies {
		p, ok := s.(sarama.RebalanceProtocolBalanceStrategy)
		if !ok || !slices.Contains(p.SupportedProtocols(), sarama.RebalanceProtocolCooperative) {
			return "", false
		}
	}
	return strategies[0].Name(), true
}

// weakened lists the durability settings Tune changed.
func weakened(sc *sarama.Config, r role) []string {
	var w []string
	add := func(cond bool, s string) {
		if cond {
			w = append(w, s)
		}
	}
	add(sc.Metadata.AllowAutoTopicCreation, "Metadata.AllowAutoTopicCreation=true")
	switch r {
	case roleProducer:
		add(sc.Producer.RequiredAcks != sarama.WaitForAll, "Producer.RequiredAcks is not WaitForAll")
		add(!sc.Producer.Idempotent, "Producer.Idempotent=false")
		add(sc.Net.MaxOpenRequests != 1, "Net.MaxOpenRequests is not 1")
		add(!sc.Producer.Return.Successes || !sc.Producer.Return.Errors, "Producer.Return.Successes/Errors disabled")
	case roleConsumer:
		add(sc.Consumer.Offsets.AutoCommit.Enable, "Consumer.Offsets.AutoCommit.Enable=true")
		add(sc.Consumer.Offsets.Initial != sarama.OffsetOldest, "Consumer.Offsets.Initial is not OffsetOldest")
		add(!sc.Consumer.Return.Errors, "Consumer.Return.Errors=false")
		add(sc.Consumer.IsolationLevel != sarama.ReadCommitted, "Consumer.IsolationLevel is not ReadCommitted")
	}
	return w
}

// retryBackoff doubles from 100ms up to maxDelay.
func retryBackoff(maxDelay time.Duration) func(retries, maxRetries int) time.Duration {
	b := reliable.Backoff{Initial: 100 * time.Millisecond, Max: maxDelay}
	return func(retries, _ int) time.Duration { return b.Delay(retries) }
}
