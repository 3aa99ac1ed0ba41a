package kafka

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/internal/testenv"
)

const (
	scramUser     = "alice"
	scramPassword = "alice-s3cret-pw"
)

// Produce and consume over TLS (a CA the test generates) with SASL
// SCRAM-SHA-512, SCRAM-SHA-256 and PLAIN, against a real broker: a
// single-node Kafka the test starts from the cluster's jars with a SASL_SSL
// listener and SCRAM users created by kafka-storage format --add-scram. A
// wrong password is a clear authentication error, not a retry loop, and the
// password appears in no log line or error.
func TestTLSAndSASL(t *testing.T) {
	node := startSecureNode(t)
	topic := uniqueName("secure")
	createTopic(t, []string{node.plain}, topic, 1, map[string]string{"_rf": "1"})
	tlsCfg, err := LoadTLS(node.caFile, "", "")
	if err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	config := func(mech SASLMechanism, password string) Config {
		return Config{
			Brokers: []string{node.secure},
			TLS:     tlsCfg,
			SASL:    SASL{Mechanism: mech, User: scramUser, Password: Secret(password)},
			// One node: the audit must accept a single replica here.
			Audit:  AuditConfig{MinReplicationFactor: 1, MinInsyncReplicas: 1},
			Logger: logger,
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	for _, mech := range []SASLMechanism{SASLScramSHA512, SASLScramSHA256, SASLPlain} {
		t.Run(string(mech), func(t *testing.T) {
			cfg := config(mech, scramPassword)
			logger.Info("connecting", "config", cfg)
			p, err := NewProducer(cfg)
			if err != nil {
				t.Fatalf("NewProducer over SASL_SSL: %v", err)
			}
			defer p.Close()
			m := &reliable.Message{Topic: topic, Key: "order-1", Payload: []byte(string(mech))}
			if err := p.Publish(ctx, m); err != nil {
				t.Fatalf("publish: %v", err)
			}
			cfg.Consumer.Group = uniqueName("secure-g")
			sub, err := NewSubscriber(cfg)
			if err != nil {
				t.Fatalf("NewSubscriber over SASL_SSL: %v", err)
			}
			defer sub.Close()
			ch, err := sub.Subscribe(ctx, topic)
			if err != nil {
				t.Fatal(err)
			}
			for d := range ch {
				_ = d.Ack(ctx)
				if d.Message.ID == m.ID {
					return
				}
			}
			t.Fatal("delivery channel closed before the message arrived")
		})
	}

	t.Run("WrongPassword", func(t *testing.T) {
		const wrong = "not-the-password-xyz"
		start := time.Now()
		_, err := NewProducer(config(SASLScramSHA512, wrong))
		if !errors.Is(err, reliable.ErrNotAuthorized) {
			t.Fatalf("NewProducer with a wrong password: %v, want ErrNotAuthorized", err)
		}
		if d := time.Since(start); d > 15*time.Second {
			t.Fatalf("the authentication failure took %s: retried", d)
		}
		cfg := config(SASLScramSHA256, wrong)
		cfg.Consumer.Group = "g"
		_, serr := NewSubscriber(cfg)
		if !errors.Is(serr, reliable.ErrNotAuthorized) {
			t.Fatalf("NewSubscriber with a wrong password: %v, want ErrNotAuthorized", serr)
		}
		t.Logf("wrong password fails in %s with: %v", time.Since(start).Round(time.Millisecond), err)
		for _, s := range []string{err.Error(), serr.Error(), logs.String()} {
			if strings.Contains(s, wrong) || strings.Contains(s, scramPassword) {
				t.Fatalf("a password leaked: %s", s)
			}
		}
	})
	if strings.Contains(logs.String(), scramPassword) {
		t.Fatalf("the password appears in the logs:\n%s", logs.String())
	}
}

type secureNode struct {
	secure, plain string // SASL_SSL and internal PLAINTEXT listener addresses
	caFile        string
}

// startSecureNode starts a single-node KRaft Kafka from the test cluster's
// jars, with a SASL_SSL listener (PLAIN and SCRAM) whose certificate is signed
// by a CA generated here. The node is killed when the test ends.
func startSecureNode(t *testing.T) secureNode {
	t.Helper()
	home := serviceEnv("RELIABLE_KAFKA_HOME")
	libs, _ := filepath.Glob(filepath.Join(home, "libs-*", "kafka_2.13-*.jar"))
	java, jerr := exec.LookPath("java")
	if home == "" || len(libs) == 0 || jerr != nil {
		testenv.Unavailable(t, "no Kafka jars under RELIABLE_KAFKA_HOME=%q or no java", home)
	}
	if testing.Short() {
		t.Skip("integration test skipped in -short mode")
	}
	classpath := filepath.Join(filepath.Dir(libs[0]), "*")
	dir := t.TempDir()
	caFile, keystore := writeCerts(t, dir)
	ports := freePorts(t, 3)
	secure := fmt.Sprintf("127.0.0.1:%d", ports[0])
	plain := fmt.Sprintf("127.0.0.1:%d", ports[1])
	jaasPlain := fmt.Sprintf(`org.apache.kafka.common.security.plain.PlainLoginModule required user_%s="%s";`, scramUser, scramPassword)
	props := strings.Join([]string{
		"process.roles=broker,controller",
		"node.id=1",
		fmt.Sprintf("controller.quorum.voters=1@127.0.0.1:%d", ports[2]),
		fmt.Sprintf("listeners=SASL_SSL://%s,INTERNAL://%s,CONTROLLER://127.0.0.1:%d", secure, plain, ports[2]),
		fmt.Sprintf("advertised.listeners=SASL_SSL://%s,INTERNAL://%s", secure, plain),
		"listener.security.protocol.map=SASL_SSL:SASL_SSL,INTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT",
		"inter.broker.listener.name=INTERNAL",
		"controller.listener.names=CONTROLLER",
		"sasl.enabled.mechanisms=SCRAM-SHA-512,SCRAM-SHA-256,PLAIN",
		"listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;",
		"listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;",
		"listener.name.sasl_ssl.plain.sasl.jaas.config=" + jaasPlain,
		"ssl.keystore.type=PEM",
		"ssl.keystore.location=" + keystore,
		"log.dirs=" + filepath.Join(dir, "data"),
		"offsets.topic.replication.factor=1",
		"offsets.topic.num.partitions=1",
		"transaction.state.log.replication.factor=1",
		"transaction.state.log.min.isr=1",
		"default.replication.factor=1",
		"min.insync.replicas=1",
		"auto.create.topics.enable=false",
		"group.initial.rebalance.delay.ms=0",
		"num.network.threads=1",
		"num.io.threads=2",
		"log.cleaner.enable=false",
	}, "\n") + "\n"
	propsFile := filepath.Join(dir, "node.properties")
	if err := os.WriteFile(propsFile, []byte(props), 0o600); err != nil {
		t.Fatal(err)
	}
	// Kafka 4.x logs through log4j2, 3.9 through reload4j: pass the config
	// the cluster's folder has.
	logFlag := "-Dlog4j.configuration=file:" + filepath.Join(home, "config", "log4j.properties")
	if l2 := filepath.Join(home, "config", "log4j2.properties"); fileExists(l2) {
		logFlag = "-Dlog4j2.configurationFile=" + l2
	}
	javaArgs := func(args ...string) []string {
		return append([]string{"-Xms64m", "-Xmx256m", "-XX:+UseSerialGC", "-Djava.net.preferIPv4Stack=true",
			logFlag, "-cp", classpath}, args...)
	}
	id := make([]byte, 16)
	_, _ = rand.Read(id)
	scram := fmt.Sprintf("[name=%s,password=%s]", scramUser, scramPassword)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	format := exec.CommandContext(ctx, java, javaArgs("kafka.tools.StorageTool", "format",
		"-t", base64.RawURLEncoding.EncodeToString(id), "-c", propsFile,
		"--add-scram", "SCRAM-SHA-512="+scram, "--add-scram", "SCRAM-SHA-256="+scram)...)
	if out, err := format.CombinedOutput(); err != nil {
		t.Fatalf("kafka-storage format: %v\n%s", err, out)
	}
	logFile, err := os.Create(filepath.Join(dir, "server.log"))
	if err != nil {
		t.Fatal(err)
	}
	node := exec.Command(java, javaArgs("kafka.Kafka", propsFile)...)
	node.Stdout, node.Stderr = logFile, logFile
	if err := node.Start(); err != nil {
		t.Fatalf("start node: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- node.Wait() }()
	t.Cleanup(func() {
		_ = node.Process.Kill()
		<-exited
		_ = logFile.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logFile.Name())
			if len(b) > 6000 {
				b = b[len(b)-6000:]
			}
			t.Logf("secure node log (tail):\n%s", b)
		}
	})
	for deadline := time.Now().Add(90 * time.Second); ; {
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("the secure node exited: %v", err)
		default:
		}
		if c, err := net.DialTimeout("tcp", secure, time.Second); err == nil {
			_ = c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the secure node did not open its port within 90s")
		}
		time.Sleep(200 * time.Millisecond)
	}
	return secureNode{secure: secure, plain: plain, caFile: caFile}
}

// writeCerts writes a CA certificate and a PEM keystore (PKCS#8 key and the
// server certificate for 127.0.0.1, signed by the CA).
func writeCerts(t *testing.T, dir string) (caFile, keystore string) {
	t.Helper()
	caKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "reliable test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	srvKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	srvTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, ca, &srvKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(srvKey)
	if err != nil {
		t.Fatal(err)
	}
	caFile = filepath.Join(dir, "ca.pem")
	keystore = filepath.Join(dir, "server-keystore.pem")
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	ks := append(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srvDER})...)
	ks = append(ks, caPEM...)
	if err := os.WriteFile(caFile, caPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keystore, ks, 0o600); err != nil {
		t.Fatal(err)
	}
	return caFile, keystore
}

func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ls []net.Listener
	var ports []int
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		_ = l.Close()
	}
	return ports
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
