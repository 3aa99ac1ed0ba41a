package main

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"
)

// proxy is a TCP proxy between the child processes and one service
// (PostgreSQL, RabbitMQ), so the campaign can cut their connections: Cut
// resets every open connection and refuses new ones for a while, like a
// network partition that heals. It is a few lines of io.Copy rather than
// toxiproxy, whose library form needs its HTTP API server and metrics; the
// one toxic needed here is "reset peer".
type proxy struct {
	name     string
	upstream string
	ln       net.Listener
	log      *slog.Logger

	mu          sync.Mutex
	conns       map[net.Conn]struct{}
	refuseUntil time.Time
	closed      bool
	wg          sync.WaitGroup
}

// newProxy listens on a free local port and forwards to upstream.
func newProxy(name, upstream string, log *slog.Logger) (*proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &proxy{name: name, upstream: upstream, ln: ln, log: log, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.serve()
	return p, nil
}

// Addr is the address children connect to instead of the service.
func (p *proxy) Addr() string { return p.ln.Addr().String() }

func (p *proxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			p.log.Warn("proxy accept", slog.String("proxy", p.name), slog.String("error", err.Error()))
			time.Sleep(10 * time.Millisecond)
			continue
		}
		p.mu.Lock()
		refuse := p.closed || time.Now().Before(p.refuseUntil)
		p.mu.Unlock()
		if refuse {
			reset(c)
			continue
		}
		p.wg.Add(1)
		go p.pipe(c)
	}
}

func (p *proxy) pipe(down net.Conn) {
	defer p.wg.Done()
	up, err := net.DialTimeout("tcp", p.upstream, 5*time.Second)
	if err != nil {
		reset(down)
		return
	}
	if !p.track(down, up) {
		reset(down)
		reset(up)
		return
	}
	done := make(chan struct{}, 2)
	cp := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		done <- struct{}{}
	}
	go cp(up, down)
	go cp(down, up)
	<-done // either side ended: end both
	_ = down.Close()
	_ = up.Close()
	<-done
	p.untrack(down, up)
}

func (p *proxy) track(cs ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || time.Now().Before(p.refuseUntil) {
		return false
	}
	for _, c := range cs {
		p.conns[c] = struct{}{}
	}
	return true
}

func (p *proxy) untrack(cs ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range cs {
		delete(p.conns, c)
	}
}

// Cut resets every connection through the proxy (both sides see a TCP RST)
// and refuses new connections for refuse. It returns how many client
// connections it cut.
func (p *proxy) Cut(refuse time.Duration) int {
	p.mu.Lock()
	p.refuseUntil = time.Now().Add(refuse)
	conns := make([]net.Conn, 0, len(p.conns))
	for c := range p.conns {
		conns = append(conns, c)
	}
	p.mu.Unlock()
	for _, c := range conns {
		reset(c)
	}
	return len(conns) / 2
}

// Close stops the proxy and resets what is still open.
func (p *proxy) Close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	_ = p.ln.Close()
	p.Cut(0)
	p.wg.Wait()
}

// reset closes c with an RST instead of a FIN, as a crashed peer or a
// middlebox dropping state would.
func reset(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}
