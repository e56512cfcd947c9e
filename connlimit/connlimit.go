// Package connlimit caps the connections one client IP address holds open on
// a listener, the way Consul's http_max_conns_per_client does: a client that
// opens one connection more than the cap has it answered with
// "429 Too Many Requests" (plain HTTP) or closed (TLS) at once, before any
// request is read, so one client cannot exhaust the server's memory or file
// descriptors with idle keep-alive connections.
//
// Handoff (handoff.go) is the other side of taking a connection out of an
// http.Server: a listener that gives it back to one.
//
// It depends on the standard library only, so both the API (api) and the
// load balancer (lb) use it.
package connlimit

import (
	"crypto/tls"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultMaxPerClient is the default cap (Consul's default is 200 too).
const DefaultMaxPerClient = 200

// Listener wraps a net.Listener and counts the open connections of each
// client IP address (an IPv6 client counts per /64, the block one host
// usually holds). Accept never returns a connection beyond the cap.
type Listener struct {
	net.Listener
	max int
	// closeOnly: the connections are TLS beneath (WrapTLS), so one over
	// the cap is closed without an answer.
	closeOnly bool

	mu    sync.Mutex
	conns map[netip.Addr]int

	rejected atomic.Uint64
}

// Wrap returns ln with at most max open connections per client IP; max <= 0
// returns a Listener that only counts.
func Wrap(ln net.Listener, max int) *Listener {
	return &Listener{Listener: ln, max: max, conns: map[netip.Addr]int{}}
}

// Rejected returns how many connections were refused so far.
func (l *Listener) Rejected() uint64 { return l.rejected.Load() }

// Open returns the open connections of the client at addr (tests, status).
func (l *Listener) Open(addr netip.Addr) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.conns[clientKey(addr)]
}

// Accept waits for a connection under the cap.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		key, ok := remoteKey(c)
		if !ok {
			return c, nil // not TCP (a pipe in tests): not counted
		}
		l.mu.Lock()
		if l.max > 0 && l.conns[key] >= l.max {
			l.mu.Unlock()
			l.rejected.Add(1)
			go refuse(c, l.max, l.closeOnly)
			continue
		}
		l.conns[key]++
		l.mu.Unlock()
		return &conn{Conn: c, release: func() { l.release(key) }}, nil
	}
}

func (l *Listener) release(key netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.conns[key] <= 1 {
		delete(l.conns, key)
		return
	}
	l.conns[key]--
}

// refuse answers a connection over the cap and closes it. On a TLS
// connection (closeOnly, or a listener beneath that gives *tls.Conn)
// nothing can be said before the handshake: it is closed.
func refuse(c net.Conn, max int, closeOnly bool) {
	defer c.Close()
	if _, isTLS := c.(*tls.Conn); isTLS || closeOnly {
		return
	}
	body := `{"error":"too many connections from this client (at most ` + strconv.Itoa(max) + `)","code":"too_many_connections"}` + "\n"
	_ = c.SetWriteDeadline(time.Now().Add(time.Second))
	_, _ = c.Write([]byte("HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: " +
		strconv.Itoa(len(body)) + "\r\n\r\n" + body))
}

// conn releases its slot once, at the first Close.
type conn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *conn) Close() error {
	c.once.Do(c.release)
	return c.Conn.Close()
}

// NetConn returns the wrapped connection (tls.Conn and http.Server look
// through wrappers this way).
func (c *conn) NetConn() net.Conn { return c.Conn }

func remoteKey(c net.Conn) (netip.Addr, bool) {
	addr := c.RemoteAddr()
	if tc, ok := c.(*tls.Conn); ok {
		addr = tc.NetConn().RemoteAddr()
	}
	ta, ok := addr.(*net.TCPAddr)
	if !ok {
		return netip.Addr{}, false
	}
	a, ok := netip.AddrFromSlice(ta.IP)
	if !ok {
		return netip.Addr{}, false
	}
	return clientKey(a), true
}

// clientKey is the address a client is counted under: IPv4 as is, IPv6 by
// its /64.
func clientKey(a netip.Addr) netip.Addr {
	a = a.Unmap().WithZone("")
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.Addr()
	}
	return a
}
