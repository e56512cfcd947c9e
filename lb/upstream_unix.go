//go:build unix

package lb

import (
	"net"
	"os"
	"syscall"
)

// peeker does the balancer's raw I/O on a connection to an instance: it
// looks, without blocking, whether the instance has closed an idle
// connection (or sent something unasked on it), and it sends a request and
// waits for its answer in one step (sendThenWait). It is made once per
// connection: the raw connection and the functions Control and Read run are
// kept, so that neither allocates.
type peeker struct {
	rc    syscall.RawConn // nil: not a socket, nothing to look at
	fn    func(fd uintptr)
	alive bool
	buf   [1]byte

	send  func(fd uintptr) bool
	out   []byte // what sendThenWait writes
	sent  bool   // send wrote (or tried): its next call ends the wait
	wrote int
	werr  error
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
	p.send = func(fd uintptr) bool {
		if p.sent {
			return true // woken: the answer (or a close) is there to read
		}
		p.sent = true
		for {
			n, err := syscall.Write(int(fd), p.out)
			if err == syscall.EINTR {
				continue
			}
			if n > 0 {
				p.wrote = n
			}
			if err != nil && err != syscall.EAGAIN {
				p.werr = os.NewSyscallError("write", err)
			}
			// Wait only when the whole request went out; otherwise the
			// caller writes the rest the ordinary way.
			return err != nil || p.wrote < len(p.out)
		}
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

// sendThenWait writes req and, when it all went out at once, waits until
// the connection is readable (the answer's first bytes, the instance's
// close), or the read deadline passes, or the connection is closed. It
// returns how much of req was written; the caller writes any rest itself
// and reads the answer the ordinary way, and a wait that ended in a
// deadline or a close shows as that read's error.
//
// Why in one step: Go's read first tries the socket and only then waits,
// so reading an answer not there yet costs a read that finds nothing.
// Waiting first is safe only when no readiness can be missed: the poller
// forgets an earlier one when a read or wait starts. Here the write
// happens inside the wait's own call, after that point, and the instance's
// answer cannot come before the request; so the edge that the answer
// raises is seen, and the read that follows finds the answer. This saves
// one system call per proxied request.
func (p *peeker) sendThenWait(req []byte) (int, error) {
	if p.rc == nil {
		return 0, nil
	}
	p.out, p.sent, p.wrote, p.werr = req, false, 0, nil
	// An error of the wait (deadline, close) is left for the read to find.
	_ = p.rc.Read(p.send)
	p.out = nil
	return p.wrote, p.werr
}
