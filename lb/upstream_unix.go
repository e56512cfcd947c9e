//go:build unix

package lb

import (
	"net"
	"syscall"
)

// peeker looks, without blocking, whether the instance has closed an idle
// connection (or sent something unasked on it): either makes it unusable.
// It is made once per connection: the raw connection and the function
// Control runs are kept, so that the look, done on every reuse of a pooled
// connection, allocates nothing.
type peeker struct {
	rc    syscall.RawConn // nil: not a socket, nothing to look at
	fn    func(fd uintptr)
	alive bool
	buf   [1]byte
}

func newPeeker(nc net.Conn) *peeker {
	p := &peeker{}
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return p
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return p
	}
	p.rc = rc
	// Only EAGAIN is the healthy idle connection: no error is either the
	// peer's FIN or data nobody asked for.
	p.fn = func(fd uintptr) {
		_, _, err := syscall.Recvfrom(int(fd), p.buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		p.alive = err == syscall.EAGAIN || err == syscall.EWOULDBLOCK
	}
	return p
}

// connAlive reports whether the connection may carry a request.
func (p *peeker) connAlive() bool {
	if p.rc == nil {
		return true
	}
	p.alive = false
	// Control, not Read: the peek never waits (MSG_DONTWAIT), so it needs
	// neither the poller's state nor a deadline check.
	err := p.rc.Control(p.fn)
	return err == nil && p.alive
}
