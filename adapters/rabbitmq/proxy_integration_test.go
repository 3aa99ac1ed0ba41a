package rabbitmq

import (
	"bufio"
	"encoding/binary"
	"io"
	"net"
	"sync"
	"testing"
)

// amqpProxy forwards TCP connections to the broker. It can simulate a
// resource alarm: inject connection.blocked frames into the
// broker-to-client stream and stop forwarding what the client sends, as a
// blocked broker stops reading.
type amqpProxy struct {
	t      testing.TB
	ln     net.Listener
	target string

	mu     sync.Mutex
	conns  []*proxyConn
	paused bool
	resume chan struct{} // closed when forwarding resumes
}

type proxyConn struct {
	client, server net.Conn
	writeMu        sync.Mutex // whole frames to the client, so injected ones land between them
}

// newProxy listens on 127.0.0.1. (For a TLS endpoint, see testenv.TLSProxy.)
func newProxy(t testing.TB, target string) *amqpProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &amqpProxy{t: t, ln: ln, target: target, resume: make(chan struct{})}
	close(p.resume)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *amqpProxy) port() int { return p.ln.Addr().(*net.TCPAddr).Port }

func (p *amqpProxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = c.Close()
			continue
		}
		pc := &proxyConn{client: c, server: s}
		p.mu.Lock()
		p.conns = append(p.conns, pc)
		p.mu.Unlock()
		go p.upstream(pc)
		go p.downstream(pc)
	}
}

// upstream copies client to broker, holding data back while paused.
func (p *amqpProxy) upstream(pc *proxyConn) {
	defer pc.server.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := pc.client.Read(buf)
		if n > 0 {
			p.mu.Lock()
			resume := p.resume
			p.mu.Unlock()
			<-resume
			if _, werr := pc.server.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// downstream copies broker to client frame by frame.
func (p *amqpProxy) downstream(pc *proxyConn) {
	defer pc.client.Close()
	r := bufio.NewReader(pc.server)
	header := make([]byte, 7)
	for {
		if _, err := io.ReadFull(r, header); err != nil {
			return
		}
		size := binary.BigEndian.Uint32(header[3:])
		frame := make([]byte, 7+int(size)+1)
		copy(frame, header)
		if _, err := io.ReadFull(r, frame[7:]); err != nil {
			return
		}
		pc.writeMu.Lock()
		_, err := pc.client.Write(frame)
		pc.writeMu.Unlock()
		if err != nil {
			return
		}
	}
}

// methodFrame encodes a connection-level (channel 0) method without
// content.
func methodFrame(class, method uint16, args []byte) []byte {
	payload := binary.BigEndian.AppendUint16(nil, class)
	payload = binary.BigEndian.AppendUint16(payload, method)
	payload = append(payload, args...)
	f := []byte{1, 0, 0}
	f = binary.BigEndian.AppendUint32(f, uint32(len(payload)))
	f = append(f, payload...)
	return append(f, 0xCE)
}

// inject sends frame to every client, between two broker frames.
func (p *amqpProxy) inject(frame []byte) {
	p.mu.Lock()
	conns := append([]*proxyConn(nil), p.conns...)
	p.mu.Unlock()
	for _, pc := range conns {
		pc.writeMu.Lock()
		_, _ = pc.client.Write(frame)
		pc.writeMu.Unlock()
	}
}

// block stops forwarding client data and, when notify is set, tells the
// clients with connection.blocked, as RabbitMQ does on a memory or disk
// alarm. Without notify it is a silent stall (a blackhole).
func (p *amqpProxy) block(notify bool, reason string) {
	p.mu.Lock()
	if !p.paused {
		p.paused = true
		p.resume = make(chan struct{})
	}
	p.mu.Unlock()
	if notify {
		p.inject(methodFrame(10, 60, append([]byte{byte(len(reason))}, reason...)))
	}
}

// unblock resumes forwarding and sends connection.unblocked.
func (p *amqpProxy) unblock() {
	p.mu.Lock()
	if p.paused {
		p.paused = false
		close(p.resume)
	}
	p.mu.Unlock()
	p.inject(methodFrame(10, 61, nil))
}

func (p *amqpProxy) close() {
	_ = p.ln.Close()
	p.unblock()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, pc := range p.conns {
		_ = pc.client.Close()
		_ = pc.server.Close()
	}
}
