package main

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/reliable-go/reliable/internal/testenv"
)

// The secure node's SCRAM and PLAIN user.
const (
	scramUser     = "alice"
	scramPassword = "alice-s3cret-pw"
)

// secureNode is a single-node Kafka with a SASL_SSL listener.
type secureNode struct {
	secure, plain string // SASL_SSL and PLAINTEXT listener addresses
	caFile        string
}

// startSecureNode starts a single-node KRaft Kafka from the test cluster's
// jars, with a SASL_SSL listener (PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512)
// whose certificate a CA generated here signed, as the Kafka adapter's
// TestTLSAndSASL does (that helper lives in the adapter's test package; a
// shared one in internal/testenv would replace both copies). The node is
// killed when the test ends.
func startSecureNode(t *testing.T) secureNode {
	t.Helper()
	home, _ := testenv.Lookup("RELIABLE_KAFKA_HOME")
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
	ca := newTestCA(t)
	caFile := filepath.Join(dir, "ca.pem")
	keystore := filepath.Join(dir, "server-keystore.pem")
	writeFile(t, caFile, ca.certPEM)
	writeFile(t, keystore, append(append(ca.serverKeyPEM, ca.serverCertPEM...), ca.certPEM...))
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
	writeFile(t, propsFile, []byte(props))
	// Kafka 4.x logs through log4j2, 3.9 through reload4j.
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

// testCA is a CA generated for one test and a server certificate it signed
// for 127.0.0.1 and localhost.
type testCA struct {
	certPEM, serverCertPEM, serverKeyPEM []byte
	server                               tls.Certificate
}

func newTestCA(t *testing.T) testCA {
	t.Helper()
	caKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "reliablectl test CA"},
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
	c := testCA{
		certPEM:       pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		serverCertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srvDER}),
		serverKeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8}),
	}
	c.server, err = tls.X509KeyPair(c.serverCertPEM, c.serverKeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func freePorts(t *testing.T, n int) []int {
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
