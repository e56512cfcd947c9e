package connlimit

import (
	"net"
	"sync"
)

// Handoff is a listener whose connections are handed to it: a server that
// takes a connection out of an http.Server (the API's parked blocking
// queries, the balancer's fast path) gives it back with Give, and a second
// http.Server serving the Handoff reads the client's next request from it.
type Handoff struct {
	addr net.Addr
	ch   chan net.Conn
	once sync.Once
	done chan struct{}
}

// NewHandoff returns a Handoff that reports addr as its address.
func NewHandoff(addr net.Addr) *Handoff {
	return &Handoff{addr: addr, ch: make(chan net.Conn), done: make(chan struct{})}
}

// Give hands c to the server accepting on h; false once h is closed (the
// caller then closes c).
func (h *Handoff) Give(c net.Conn) bool {
	select {
	case h.ch <- c:
		return true
	case <-h.done:
		return false
	}
}

// Accept returns the next connection given, or net.ErrClosed once h is
// closed.
func (h *Handoff) Accept() (net.Conn, error) {
	select {
	case c := <-h.ch:
		return c, nil
	case <-h.done:
		return nil, net.ErrClosed
	}
}

// Close makes Accept and Give return at once, now and later.
func (h *Handoff) Close() error {
	h.once.Do(func() { close(h.done) })
	return nil
}

// Addr returns the address given to NewHandoff.
func (h *Handoff) Addr() net.Addr { return h.addr }
