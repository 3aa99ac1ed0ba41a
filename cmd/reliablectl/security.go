package main

import (
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/IBM/sarama"
	"github.com/spf13/pflag"
	"github.com/xdg-go/scram"

	"github.com/reliable-go/reliable/adapters/kafka"
)

// Environment variables of the Kafka and RabbitMQ security settings. The
// SASL password has no flag at all: a process's argv is visible to every
// user of the machine (ps, /proc) and lands in shell history.
const (
	envKafkaTLS              = "RELIABLE_KAFKA_TLS"
	envKafkaCAFile           = "RELIABLE_KAFKA_CA_FILE"
	envKafkaCertFile         = "RELIABLE_KAFKA_CERT_FILE"
	envKafkaKeyFile          = "RELIABLE_KAFKA_KEY_FILE"
	envKafkaServerName       = "RELIABLE_KAFKA_TLS_SERVER_NAME"
	envKafkaSASLMechanism    = "RELIABLE_KAFKA_SASL_MECHANISM"
	envKafkaSASLUser         = "RELIABLE_KAFKA_SASL_USER"
	envKafkaSASLPassword     = "RELIABLE_KAFKA_SASL_PASSWORD"
	envKafkaSASLPasswordFile = "RELIABLE_KAFKA_SASL_PASSWORD_FILE"
	envAMQPCAFile            = "RELIABLE_AMQP_CA_FILE"
	envAMQPCertFile          = "RELIABLE_AMQP_CERT_FILE"
	envAMQPKeyFile           = "RELIABLE_AMQP_KEY_FILE"
)

// tlsFlags are the TLS settings of one kind of connection.
type tlsFlags struct {
	enable                    bool
	caFile, certFile, keyFile string
	serverName                string
	insecureSkipVerify        bool
}

// register adds the TLS flags named prefix-... to f; what names the service.
func (t *tlsFlags) register(f *pflag.FlagSet, prefix, what string, caEnv, certEnv, keyEnv string) {
	if prefix == "kafka" {
		f.BoolVar(&t.enable, prefix+"-tls", false, "connect to "+what+" over TLS (implied by --"+prefix+"-ca-file and --"+prefix+"-cert-file; default $"+envKafkaTLS+")")
	}
	f.StringVar(&t.caFile, prefix+"-ca-file", "", "PEM file of the CA certificates that sign "+what+"'s certificate (default $"+caEnv+"; else the system roots)")
	f.StringVar(&t.certFile, prefix+"-cert-file", "", "PEM file of a client certificate, for mutual TLS (default $"+certEnv+")")
	f.StringVar(&t.keyFile, prefix+"-key-file", "", "PEM file of the client certificate's private key (default $"+keyEnv+")")
	f.StringVar(&t.serverName, prefix+"-tls-server-name", "", "name to verify the server's certificate against, when it differs from the host dialled")
	f.BoolVar(&t.insecureSkipVerify, prefix+"-insecure-skip-verify", false, "do not verify the server's certificate (testing only: anyone on the path can read and change the traffic)")
}

// config returns the TLS configuration, or nil when TLS is off. The files
// are read here; their content never appears in an error.
func (t *tlsFlags) config(a *app, caEnv, certEnv, keyEnv string, forced bool) (*tls.Config, error) {
	ca := orEnv(a, t.caFile, caEnv)
	cert := orEnv(a, t.certFile, certEnv)
	key := orEnv(a, t.keyFile, keyEnv)
	if !forced && !t.enable && ca == "" && cert == "" && t.serverName == "" && !t.insecureSkipVerify {
		return nil, nil
	}
	cfg, err := kafka.LoadTLS(ca, cert, key)
	if err != nil {
		// LoadTLS prefixes its errors with "kafka:" for any service.
		return nil, usagef("%s", strings.TrimPrefix(err.Error(), "kafka: "))
	}
	cfg.ServerName = t.serverName
	cfg.InsecureSkipVerify = t.insecureSkipVerify
	return cfg, nil
}

// saslFlags are the Kafka SASL settings. The password comes from
// $RELIABLE_KAFKA_SASL_PASSWORD or a file, never from a flag.
type saslFlags struct {
	mechanism, user, passwordFile string
	passwordInArgv                string // the refused --kafka-sasl-password
}

func (s *saslFlags) register(f *pflag.FlagSet) {
	f.StringVar(&s.mechanism, "kafka-sasl-mechanism", "", "SASL mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (default $"+envKafkaSASLMechanism+")")
	f.StringVar(&s.user, "kafka-sasl-user", "", "SASL user (default $"+envKafkaSASLUser+")")
	f.StringVar(&s.passwordFile, "kafka-sasl-password-file", "", "file holding the SASL password (default $"+envKafkaSASLPasswordFile+"; or set the password itself in $"+envKafkaSASLPassword+")")
	// Accepted only to refuse it with a useful message.
	f.StringVar(&s.passwordInArgv, "kafka-sasl-password", "", "")
	_ = f.MarkHidden("kafka-sasl-password")
}

// apply sets SASL on cfg. The password is registered as a secret first, so
// no later output can show it.
func (s *saslFlags) apply(a *app, cfg *sarama.Config) error {
	if s.passwordInArgv != "" {
		a.addSecret(s.passwordInArgv)
		return usagef("no password on the command line (other users see it in ps): set $%s or --kafka-sasl-password-file", envKafkaSASLPassword)
	}
	mech := strings.ToUpper(orEnv(a, s.mechanism, envKafkaSASLMechanism))
	user := orEnv(a, s.user, envKafkaSASLUser)
	password, err := secretFromEnvOrFile(a, envKafkaSASLPassword, orEnv(a, s.passwordFile, envKafkaSASLPasswordFile), "--kafka-sasl-password-file")
	if err != nil {
		return err
	}
	if mech == "" {
		if user != "" || password != "" {
			return usagef("SASL credentials are set but no mechanism: set --kafka-sasl-mechanism or $%s", envKafkaSASLMechanism)
		}
		return nil
	}
	switch kafka.SASLMechanism(mech) {
	case kafka.SASLPlain:
	case kafka.SASLScramSHA256:
		cfg.Net.SASL.SCRAMClientGeneratorFunc = func() sarama.SCRAMClient { return &scramClient{hash: scram.SHA256} }
	case kafka.SASLScramSHA512:
		cfg.Net.SASL.SCRAMClientGeneratorFunc = func() sarama.SCRAMClient { return &scramClient{hash: scram.SHA512} }
	default:
		return usagef("--kafka-sasl-mechanism %q is not one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512", mech)
	}
	if user == "" {
		return usagef("SASL needs a user: set --kafka-sasl-user or $%s", envKafkaSASLUser)
	}
	if password == "" {
		return usagef("SASL needs a password: set $%s or --kafka-sasl-password-file", envKafkaSASLPassword)
	}
	cfg.Net.SASL.Enable = true
	cfg.Net.SASL.Handshake = true
	cfg.Net.SASL.Mechanism = sarama.SASLMechanism(mech)
	cfg.Net.SASL.User = user
	cfg.Net.SASL.Password = password
	return nil
}

// secretFromEnvOrFile returns the secret in $env, else in file (without its
// trailing newline), registering it for redaction.
func secretFromEnvOrFile(a *app, env, file, fileFlag string) (string, error) {
	if v := a.getenv(env); v != "" {
		a.addSecret(v)
		return v, nil
	}
	if file == "" {
		return "", nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			err = pe.Err // the message names the file once, below
		}
		return "", usagef("%s %s: %v", fileFlag, file, err)
	}
	v := strings.TrimRight(string(b), "\r\n")
	a.addSecret(v)
	if v == "" {
		return "", usagef("%s %s is empty", fileFlag, file)
	}
	return v, nil
}

// orEnv returns v, or else the environment variable env.
func orEnv(a *app, v, env string) string {
	if v != "" {
		return v
	}
	return strings.TrimSpace(a.getenv(env))
}

// addSecret registers a credential: any output that would contain it shows
// xxxxx instead (see redact).
func (a *app) addSecret(s string) {
	if s != "" {
		a.credentials = append(a.credentials, s)
		a.secrets = append(a.secrets, s) // in URLs and DSNs, at any length
	}
}

// scramClient adapts xdg-go/scram to sarama.SCRAMClient, as sarama's
// examples and the Kafka adapter do.
type scramClient struct {
	hash scram.HashGeneratorFcn
	conv *scram.ClientConversation
}

func (c *scramClient) Begin(user, password, authzID string) error {
	client, err := c.hash.NewClient(user, password, authzID)
	if err != nil {
		return fmt.Errorf("SCRAM: %w", err)
	}
	c.conv = client.NewConversation()
	return nil
}

func (c *scramClient) Step(challenge string) (string, error) { return c.conv.Step(challenge) }

func (c *scramClient) Done() bool { return c.conv.Done() }
