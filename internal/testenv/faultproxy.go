package testenv

import (
	"io"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"
)

// FaultProxy is a TCP proxy between a test's clients and PostgreSQL or
// Redis, so a test can make the store fail the way networks do: Down resets
// every connection and refuses new ones (a failover, a restart); Blackhole
// keeps connections open but delivers nothing (a partition, a hung server);
// Up heals. It plays the part of toxiproxy in a few lines.
type FaultProxy struct {
	upstream string
	ln       net.Listener

	mu    sync.Mutex
	mode  proxyMode
	conns map[net.Conn]struct{}
}

type proxyMode int

const (
	proxyUp proxyMode = iota
	proxyDown
	proxyHole
)

// NewFaultProxy listens on a free local port and forwards to upstream
// (host:port) until the test ends.
func NewFaultProxy(t testing.TB, upstream string) *FaultProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &FaultProxy{upstream: upstream, ln: ln, conns: map[net.Conn]struct{}{}}
	go p.serve()
	t.Cleanup(func() {
		_ = ln.Close()
		p.closeAll()
	})
	return p
}

// Addr is the host:port clients dial instead of the store.
func (p *FaultProxy) Addr() string { return p.ln.Addr().String() }

// Host and Port split Addr.
func (p *FaultProxy) Host() string { h, _, _ := net.SplitHostPort(p.Addr()); return h }

func (p *FaultProxy) Port() uint16 {
	_, port, _ := net.SplitHostPort(p.Addr())
	n, _ := strconv.Atoi(port)
	return uint16(n)
}

// Down resets every open connection and refuses new ones until Up.
func (p *FaultProxy) Down() { p.set(proxyDown); p.closeAll() }

// Blackhole keeps connections open and accepts new ones, but from now on
// forwards nothing in either direction, until Up.
func (p *FaultProxy) Blackhole() { p.set(proxyHole) }

// Up heals. Connections that lost bytes in a black hole are reset, as a
// client's keepalive would eventually find them dead.
func (p *FaultProxy) Up() {
	p.mu.Lock()
	wasHole := p.mode == proxyHole
	p.mode = proxyUp
	p.mu.Unlock()
	if wasHole {
		p.closeAll()
	}
}

func (p *FaultProxy) set(m proxyMode) {
	p.mu.Lock()
	p.mode = m
	p.mu.Unlock()
}

func (p *FaultProxy) current() proxyMode {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mode
}

func (p *FaultProxy) closeAll() {
	p.mu.Lock()
	conns := p.conns
	p.conns = map[net.Conn]struct{}{}
	p.mu.Unlock()
	for c := range conns {
		_ = c.Close()
	}
}

func (p *FaultProxy) track(c net.Conn) {
	p.mu.Lock()
	p.conns[c] = struct{}{}
	p.mu.Unlock()
}

func (p *FaultProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		switch p.current() {
		case proxyDown:
			_ = c.Close()
			continue
		case proxyHole:
			p.track(c)
			go func() { _, _ = io.Copy(io.Discard, c) }()
			continue
		}
		up, err := net.DialTimeout("tcp", p.upstream, 5*time.Second)
		if err != nil {
			_ = c.Close()
			continue
		}
		p.track(c)
		p.track(up)
		go p.pipe(up, c)
		go p.pipe(c, up)
	}
}

// pipe copies src to dst, dropping what it reads while the proxy is a black
// hole.
func (p *FaultProxy) pipe(dst, src net.Conn) {
	defer func() { _ = dst.Close(); _ = src.Close() }()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && p.current() == proxyUp {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
