package testenv

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"os"
	"strconv"
	"testing"
	"time"
)

// TLSProxy with a NewTestCA certificate: a client that trusts the CA reaches
// the plain TCP target through it (bytes both ways, for localhost and
// 127.0.0.1), one that does not gets a certificate error, and the test's end
// closes the connections it still holds open.
func TestTLSProxyWithTestCA(t *testing.T) {
	echo, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()

	var open *tls.Conn
	t.Run("proxy", func(t *testing.T) {
		ca := NewTestCA(t)
		port := strconv.Itoa(TLSProxy(t, echo.Addr().String(), ca.ServerTLS()))
		for _, host := range []string{"localhost", "127.0.0.1"} {
			c, err := tls.Dial("tcp", net.JoinHostPort(host, port), &tls.Config{RootCAs: ca.Pool, MinVersion: tls.VersionTLS12})
			if err != nil {
				t.Fatalf("dial %s with the CA: %v", host, err)
			}
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := c.Write([]byte("ping " + host + "\n")); err != nil {
				t.Fatal(err)
			}
			line, err := bufio.NewReader(c).ReadString('\n')
			if err != nil || line != "ping "+host+"\n" {
				t.Fatalf("echo through the proxy: %q, %v", line, err)
			}
			open = c // left open: the test's end must close it
		}
		_, err := tls.Dial("tcp", "127.0.0.1:"+port, &tls.Config{MinVersion: tls.VersionTLS12})
		var uerr x509.UnknownAuthorityError
		if !errors.As(err, &uerr) {
			t.Fatalf("dial without the CA: %v, want an unknown authority error", err)
		}
	})
	_ = open.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := open.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("a connection outlived the test that opened the proxy (%v)", err)
	}
}
