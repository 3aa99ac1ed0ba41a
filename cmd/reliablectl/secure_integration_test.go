package main

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"

	"github.com/reliable-go/reliable/adapters/kafka"
	"github.com/reliable-go/reliable/internal/testenv"
)

// reliablectl on a TLS and SASL Kafka (issue 17): lag, audit, dlt list and
// dlt replay --execute work over SASL_SSL with SCRAM-SHA-512, SCRAM-SHA-256
// and PLAIN, the password coming from $RELIABLE_KAFKA_SASL_PASSWORD or a
// file; a wrong password, a password on the command line, a missing CA and
// --help never print the password (stdout and stderr are searched for it).
func TestKafkaTLSAndSASL(t *testing.T) {
	node := testenv.StartSecureKafka(t)
	topic := testenv.UniqueName(t, "secure")
	dlt := topic + ".dlt"
	plain := []string{node.Plain}
	for _, tp := range []string{topic, dlt} {
		testenv.CreateTopicWith(t, plain, tp, &sarama.TopicDetail{NumPartitions: 2, ReplicationFactor: 1})
	}
	// One dead letter, written on the plaintext listener.
	cfg := testenv.SaramaConfig()
	p, err := sarama.NewSyncProducer(plain, cfg)
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = p.SendMessage(&sarama.ProducerMessage{Topic: dlt, Key: sarama.StringEncoder("order-1"), Value: sarama.StringEncoder("poison"),
		Headers: []sarama.RecordHeader{{Key: []byte(kafka.HeaderDeadLetterTopic), Value: []byte(topic)}, {Key: []byte("ce_id"), Value: []byte("m-1")}}})
	_ = p.Close()
	if err != nil {
		t.Fatal(err)
	}

	// A fresh node's group coordinator loads its offsets topic first.
	admin := testenv.ClusterAdmin(t, plain)
	for deadline := time.Now().Add(60 * time.Second); ; {
		resp, err := admin.AlterConsumerGroupOffsets("g", map[string]map[int32]sarama.OffsetAndMetadata{
			topic: {0: {Offset: 0, LeaderEpoch: -1}, 1: {Offset: 0, LeaderEpoch: -1}}}, nil)
		if err == nil {
			for _, ps := range resp.Errors {
				for _, kerr := range ps {
					if kerr != sarama.ErrNoError {
						err = kerr
					}
				}
			}
		}
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("commit the group's offsets on the secure node: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}

	pwFile := filepath.Join(t.TempDir(), "password")
	writeFile(t, pwFile, []byte(testenv.SecureKafkaPassword+"\n"))
	base := map[string]string{envKafkaBrokers: node.Secure, envKafkaCAFile: node.CAFile, envKafkaSASLUser: testenv.SecureKafkaUser}
	with := func(kv ...string) map[string]string {
		env := map[string]string{}
		for k, v := range base {
			env[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			env[kv[i]] = kv[i+1]
		}
		return env
	}
	noSecret := func(t *testing.T, r result, secrets ...string) {
		t.Helper()
		for _, s := range secrets {
			if strings.Contains(r.stdout+r.stderr, s) {
				t.Fatalf("output shows the secret %q:\n%s%s", s, r.stdout, r.stderr)
			}
		}
	}

	for _, mech := range []string{"SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"} {
		t.Run(mech, func(t *testing.T) {
			// The password from the environment.
			r := cli(t, with(envKafkaSASLPassword, testenv.SecureKafkaPassword), "lag", "--group", "g", "--topic", topic, "--kafka-sasl-mechanism", mech)
			r.expect(t, exitOK, "")
			noSecret(t, r, testenv.SecureKafkaPassword)
			// From a file, the mechanism from the environment.
			r = cli(t, with(envKafkaSASLMechanism, mech), "audit", "kafka", "--topic", topic, "--kafka-sasl-password-file", pwFile,
				"--min-replication-factor", "1", "--min-insync-replicas", "1")
			r.expect(t, exitOK, "")
			if !strings.Contains(r.stdout, "0 fail") {
				t.Fatalf("audit over SASL_SSL: %s", r.stdout)
			}
			noSecret(t, r, testenv.SecureKafkaPassword)
		})
	}

	t.Run("ReplayExecute", func(t *testing.T) {
		env := with(envKafkaSASLMechanism, "SCRAM-SHA-512", envKafkaSASLPasswordFile, pwFile)
		r := cli(t, env, "dlt", "list", "--topic", dlt, "-o", "json")
		r.expect(t, exitOK, "")
		if !strings.Contains(r.stdout, `"m-1"`) {
			t.Fatalf("dlt list over SASL_SSL does not show the dead letter: %s", r.stdout)
		}
		r = cli(t, env, "dlt", "replay", "--topic", dlt, "--all", "--execute")
		r.expect(t, exitOK, "")
		client, err := sarama.NewClient(plain, testenv.SaramaConfig())
		if err != nil {
			t.Fatal(err)
		}
		defer client.Close()
		var total int64
		for _, part := range []int32{0, 1} {
			n, err := client.GetOffset(topic, part, sarama.OffsetNewest)
			if err != nil {
				t.Fatal(err)
			}
			total += n
		}
		if total != 1 {
			t.Fatalf("replay over SASL_SSL wrote %d records to %s, want 1", total, topic)
		}
	})

	t.Run("WrongPassword", func(t *testing.T) {
		const wrong = "wrong-pa55word-zq"
		for _, mech := range []string{"SCRAM-SHA-512", "PLAIN"} {
			start := time.Now()
			r := cli(t, with(envKafkaSASLPassword, wrong, envKafkaSASLMechanism, mech), "lag", "--group", "g", "--topic", topic)
			r.expect(t, exitFailure, "SASL Authentication failed")
			if !strings.Contains(r.stderr, "check the SASL user, password and mechanism") {
				t.Fatalf("no hint: %s", r.stderr)
			}
			noSecret(t, r, wrong, testenv.SecureKafkaPassword)
			if d := time.Since(start); d > 15*time.Second {
				t.Fatalf("a wrong password took %s to fail", d)
			}
		}
		wrongFile := filepath.Join(t.TempDir(), "wrong")
		writeFile(t, wrongFile, []byte(wrong))
		r := cli(t, with(envKafkaSASLMechanism, "SCRAM-SHA-256"), "dlt", "replay", "--topic", dlt, "--all", "--execute", "--kafka-sasl-password-file", wrongFile)
		r.expect(t, exitFailure, "SASL Authentication failed")
		noSecret(t, r, wrong)
	})

	t.Run("PasswordInArgvRefused", func(t *testing.T) {
		for _, args := range [][]string{
			{"lag", "--group", "g", "--kafka-sasl-mechanism", "PLAIN", "--kafka-sasl-password", testenv.SecureKafkaPassword},
			{"lag", "--group", "g", "--kafka-sasl-mechanism", "PLAIN", "--kafka-sasl-password=" + testenv.SecureKafkaPassword},
		} {
			r := cli(t, base, args...)
			r.expect(t, exitUsage, "no password on the command line")
			noSecret(t, r, testenv.SecureKafkaPassword)
		}
		r := cli(t, with(envKafkaSASLPassword, testenv.SecureKafkaPassword), "lag", "--help")
		r.expect(t, exitOK, "")
		noSecret(t, r, testenv.SecureKafkaPassword)
		if strings.Contains(r.stdout, "--kafka-sasl-password ") {
			t.Fatalf("--help offers a password flag:\n%s", r.stdout)
		}
	})

	t.Run("TLSVerification", func(t *testing.T) {
		env := with(envKafkaSASLPassword, testenv.SecureKafkaPassword, envKafkaSASLMechanism, "PLAIN")
		delete(env, envKafkaCAFile)
		// The system roots do not trust the test CA.
		r := cli(t, env, "lag", "--group", "g", "--topic", topic, "--kafka-tls")
		r.expect(t, exitFailure, "certificate")
		noSecret(t, r, testenv.SecureKafkaPassword)
		// Only an explicit flag skips the verification.
		cli(t, env, "lag", "--group", "g", "--topic", topic, "--kafka-insecure-skip-verify").expect(t, exitOK, "")
		// A wrong server name fails verification with the CA.
		r = cli(t, with(envKafkaSASLPassword, testenv.SecureKafkaPassword, envKafkaSASLMechanism, "PLAIN"), "lag", "--group", "g", "--topic", topic, "--kafka-tls-server-name", "kafka.example.com")
		r.expect(t, exitFailure, "kafka.example.com")
	})
}
