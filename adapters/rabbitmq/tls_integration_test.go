package rabbitmq

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/internal/testenv"
)

// proxiedURL returns the test broker's URL rewritten to go through a proxy on
// port, with scheme and host replaced.
func proxiedURL(t testing.TB, scheme, host string, port int) (url, target string) {
	t.Helper()
	uri, err := amqp.ParseURI(amqpURL(t))
	if err != nil {
		t.Fatal(err)
	}
	target = net.JoinHostPort(uri.Host, strconv.Itoa(uri.Port))
	uri.Scheme, uri.Host, uri.Port = scheme, host, port
	return uri.String(), target
}

// TestAMQPSWithCustomCA: publishing and consuming over amqps:// to a server
// whose certificate a private CA signed, trusted through WithTLS. The TLS
// endpoint is an in-process TLS proxy in front of the shared broker, so the
// broker's configuration stays untouched while the client side is real
// AMQPS. Without the CA the constructor fails at once with the verification
// error, and no error carries the password.
func TestAMQPSWithCustomCA(t *testing.T) {
	ca := testenv.NewTestCA(t)
	_, target := proxiedURL(t, "amqp", "127.0.0.1", 0)
	url, _ := proxiedURL(t, "amqps", "localhost", testenv.TLSProxy(t, target, ca.ServerTLS()))
	clientTLS := WithTLS(&tls.Config{RootCAs: ca.Pool, MinVersion: tls.VersionTLS12})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	topic := uniqueName("tls")
	defer deleteTopic(t, Topology{}, topic, "g")
	if err := Declare(ctx, url, topic, []string{"g"}, clientTLS); err != nil {
		t.Fatalf("declare over TLS: %v", err)
	}
	pub, err := NewProducer(url, clientTLS)
	if err != nil {
		t.Fatalf("producer over TLS: %v", err)
	}
	defer pub.Close()
	sub, err := NewSubscriber(url, "g", clientTLS)
	if err != nil {
		t.Fatalf("subscriber over TLS: %v", err)
	}
	defer sub.Close()
	conn, _, err := sub.cm.connection(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st := conn.ConnectionState(); !st.HandshakeComplete || st.Version < tls.VersionTLS12 {
		t.Fatalf("connection is not TLS 1.2+: %+v", st)
	}
	deliveries, err := sub.Subscribe(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	msg := &reliable.Message{Topic: topic, Key: "k", Payload: []byte("over tls")}
	if err := pub.Publish(ctx, msg); err != nil {
		t.Fatal(err)
	}
	select {
	case d := <-deliveries:
		if d.Message.ID != msg.ID || string(d.Message.Payload) != "over tls" {
			t.Fatalf("got %v", d.Message)
		}
		_ = d.Ack(ctx)
	case <-ctx.Done():
		t.Fatal("no delivery over TLS")
	}

	// Without the CA (system roots only), the certificate does not verify.
	start := time.Now()
	_, err = NewPublisher(url)
	var verr *tls.CertificateVerificationError
	var uerr x509.UnknownAuthorityError
	if !errors.As(err, &verr) || !errors.As(err, &uerr) {
		t.Fatalf("without the CA: %v, want a certificate verification error", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatalf("verification failure took %s", time.Since(start))
	}
	uri, _ := amqp.ParseURI(url)
	if strings.Contains(err.Error(), ":"+uri.Password+"@") {
		t.Fatalf("error leaks the password: %v", err)
	}
	fmt.Fprintln(testWriter{t}, "without the CA:", err)
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}
