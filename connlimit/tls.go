package connlimit

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"time"
)

// ErrPlainHTTP is the handshake error of a client that sent a plain HTTP
// request to a TLS listener (TLSListener): it was answered and closed.
var ErrPlainHTTP = errors.New("connlimit: client sent an HTTP request to an HTTPS server")

// TLSListener serves TLS over a Listener's counted connections: the cap
// applies beneath TLS, and what Accept returns is the *tls.Conn itself, so
// that net/http knows the connection for what it is (it performs the
// handshake on the connection's goroutine, under its timeout, fills
// Request.TLS, and a server building URLs of its own origin sees https).
// A connection over the cap is closed before the handshake (nothing can be
// said to a TLS client before it).
type TLSListener struct {
	*Listener
	cfg       *tls.Config
	plainHTTP []byte
}

// WrapTLS returns ln with at most max open connections per client IP (as
// Wrap), serving TLS with cfg. A client that sends a plain HTTP request
// instead of a TLS handshake is answered plainHTTP (a whole HTTP/1.x
// response, which should say "Connection: close") and closed, its
// handshake failing with ErrPlainHTTP; a nil plainHTTP closes it without a
// word.
func WrapTLS(ln net.Listener, max int, cfg *tls.Config, plainHTTP []byte) *TLSListener {
	l := Wrap(ln, max)
	l.closeOnly = true
	return &TLSListener{Listener: l, cfg: cfg, plainHTTP: plainHTTP}
}

// Accept waits for a connection under the cap and returns it as a TLS
// server connection, its handshake not yet done.
func (l *TLSListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return tls.Server(&plainGuard{Conn: c, answer: l.plainHTTP}, l.cfg), nil
}

// plainGuard is the connection beneath a TLS server connection: it looks
// at the first byte the client sends. A TLS handshake starts with a record
// type byte (22); a letter starts a plain-text protocol, an HTTP request
// line (GET, PUT, ...) here, which is answered in plain HTTP rather than
// with a TLS alert the client could not read.
type plainGuard struct {
	net.Conn
	answer []byte
	seen   bool // the first bytes were looked at (the reading goroutine's)
}

func (g *plainGuard) Read(p []byte) (int, error) {
	n, err := g.Conn.Read(p)
	if g.seen || n == 0 {
		return n, err
	}
	g.seen = true
	if p[0] < 'A' || p[0] > 'Z' || g.answer == nil {
		return n, err
	}
	g.refuse()
	return 0, ErrPlainHTTP
}

// refuse writes the answer, then reads what the client still sends until
// it closes (it does, after a "Connection: close" answer) or a second has
// passed: closing a connection with unread bytes would reset it, and the
// client might lose the answer.
func (g *plainGuard) refuse() {
	_ = g.Conn.SetWriteDeadline(time.Now().Add(time.Second))
	if _, err := g.Conn.Write(g.answer); err != nil {
		return
	}
	if cw, ok := tcpConn(g.Conn).(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	_ = g.Conn.SetReadDeadline(time.Now().Add(time.Second))
	_, _ = io.Copy(io.Discard, io.LimitReader(g.Conn, 256<<10))
}

// NetConn returns the connection beneath.
func (g *plainGuard) NetConn() net.Conn { return g.Conn }

// tcpConn returns the connection beneath c's wrappers.
func tcpConn(c net.Conn) net.Conn {
	for range 8 {
		u, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			return c
		}
		c = u.NetConn()
	}
	return c
}
