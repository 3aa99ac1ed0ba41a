package main

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/IBM/sarama"
)

// cutDialer dials a child's Kafka connections and can cut them all at once.
// A TCP proxy cannot stand in front of Kafka brokers without rewriting their
// advertised listeners (clients connect to the addresses the metadata
// names), so the cut happens at the client's end instead: sarama dials
// through this dialer (Net.Proxy), and Cut resets every connection it made
// (RST) and fails new dials for a while, which the client sees exactly as a
// network cut.
type cutDialer struct {
	dialer net.Dialer

	mu          sync.Mutex
	conns       map[*cutConn]struct{}
	refuseUntil time.Time
}

var errRefused = errors.New("soak: connection refused (connection cut in progress)")

func newCutDialer() *cutDialer {
	return &cutDialer{dialer: net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second},
		conns: map[*cutConn]struct{}{}}
}

// tune installs d in a sarama config; it is the kafka.Config.Tune hook.
func (d *cutDialer) tune(c *sarama.Config) {
	d.dialer.Timeout = c.Net.DialTimeout
	c.Net.Proxy.Enable = true
	c.Net.Proxy.Dialer = d
}

// Dial implements golang.org/x/net/proxy.Dialer, which sarama uses.
func (d *cutDialer) Dial(network, addr string) (net.Conn, error) {
	d.mu.Lock()
	refuse := time.Now().Before(d.refuseUntil)
	d.mu.Unlock()
	if refuse {
		return nil, &net.OpError{Op: "dial", Net: network, Err: errRefused}
	}
	c, err := d.dialer.DialContext(context.Background(), network, addr)
	if err != nil {
		return nil, err
	}
	cc := &cutConn{Conn: c, d: d}
	d.mu.Lock()
	d.conns[cc] = struct{}{}
	d.mu.Unlock()
	return cc, nil
}

// Cut resets every open connection and fails dials for refuse; it returns
// how many connections it reset.
func (d *cutDialer) Cut(refuse time.Duration) int {
	d.mu.Lock()
	d.refuseUntil = time.Now().Add(refuse)
	conns := make([]*cutConn, 0, len(d.conns))
	for c := range d.conns {
		conns = append(conns, c)
	}
	d.mu.Unlock()
	for _, c := range conns {
		reset(c.Conn)
	}
	return len(conns)
}

type cutConn struct {
	net.Conn
	d    *cutDialer
	once sync.Once
}

func (c *cutConn) Close() error {
	c.once.Do(func() {
		c.d.mu.Lock()
		delete(c.d.conns, c)
		c.d.mu.Unlock()
	})
	return c.Conn.Close()
}

// watchCuts resets the child's Kafka connections each time the control
// file's BrokerCuts count grows past what it was when the child started.
func watchCuts(ctx context.Context, ctl *controlWatcher, d *cutDialer, log *slog.Logger) {
	seen := ctl.Load().BrokerCuts
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if n := ctl.Load().BrokerCuts; n > seen {
			seen = n
			log.Warn("connection cut: reset every Kafka connection", slog.Int("connections", d.Cut(cutRefusal)),
				slog.Duration("refusing_for", cutRefusal))
		}
	}
}
