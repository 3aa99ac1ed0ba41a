package testenv

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The user of StartSecureKafka's node, for SCRAM-SHA-512, SCRAM-SHA-256 and
// PLAIN alike.
const (
	SecureKafkaUser     = "alice"
	SecureKafkaPassword = "alice-s3cret-pw"
)

// SecureKafka is a single-node Kafka with a SASL_SSL listener, started by
// StartSecureKafka.
type SecureKafka struct {
	// Secure is the SASL_SSL listener's address (host:port): SCRAM-SHA-512,
	// SCRAM-SHA-256 and PLAIN, a certificate for 127.0.0.1 and localhost
	// that CA signed.
	Secure string
	// Plain is the PLAINTEXT listener's address, for setting up topics and
	// records without credentials.
	Plain string
	// CA signed the listener's certificate; CAFile is its certificate, PEM
	// encoded.
	CA     *TestCA
	CAFile string
}

// StartSecureKafka starts a single-node KRaft Kafka from the jars of the
// local test cluster (RELIABLE_KAFKA_HOME) with a SASL_SSL listener whose
// certificate a CA generated here signed, and the user SecureKafkaUser
// (created by kafka-storage format --add-scram for SCRAM, in the JAAS
// configuration for PLAIN). The suite's cluster has no TLS or SASL listener,
// and changing it would break every other test. Without the jars or java the
// test is skipped (Unavailable); with -short too.
//
// The node is a process of the test's own, on ports of its own: it takes no
// lock on the shared cluster (KafkaCluster's faults do not touch it, and it
// disturbs no other test). It is killed when the test ends; if the test
// failed, the tail of its log is logged.
func StartSecureKafka(t testing.TB) SecureKafka {
	t.Helper()
	home, _ := Lookup("RELIABLE_KAFKA_HOME")
	libs, _ := filepath.Glob(filepath.Join(home, "libs-*", "kafka_2.13-*.jar"))
	java, jerr := exec.LookPath("java")
	if home == "" || len(libs) == 0 || jerr != nil {
		Unavailable(t, "no Kafka jars under RELIABLE_KAFKA_HOME=%q or no java", home)
	}
	if testing.Short() {
		t.Skip("integration test skipped in -short mode")
	}
	classpath := filepath.Join(filepath.Dir(libs[0]), "*")
	dir := t.TempDir()
	ca := NewTestCA(t)
	caFile := ca.WriteCAFile(t, dir)
	keystore := filepath.Join(dir, "server-keystore.pem")
	writeTestFile(t, keystore, append(append(append([]byte(nil), ca.ServerKeyPEM...), ca.ServerCertPEM...), ca.CertPEM...))
	ports := freePorts(t, 3)
	secure := fmt.Sprintf("127.0.0.1:%d", ports[0])
	plain := fmt.Sprintf("127.0.0.1:%d", ports[1])
	jaasPlain := fmt.Sprintf(`org.apache.kafka.common.security.plain.PlainLoginModule required user_%s="%s";`, SecureKafkaUser, SecureKafkaPassword)
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
	writeTestFile(t, propsFile, []byte(props))
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
	scram := fmt.Sprintf("[name=%s,password=%s]", SecureKafkaUser, SecureKafkaPassword)
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
		if reachable(secure) == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the secure node did not open its port within 90s")
		}
		time.Sleep(200 * time.Millisecond)
	}
	return SecureKafka{Secure: secure, Plain: plain, CA: ca, CAFile: caFile}
}

// writeTestFile writes b to path (mode 0600); an error fails t.
func writeTestFile(t testing.TB, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// freePorts returns n ports of 127.0.0.1 that were free a moment ago.
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	var ls []net.Listener
	var ports []int
	for range n {
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
