package api

import (
	"errors"
	"net"
	"syscall"
	"time"

	"github.com/beaconhq/beacon/connlimit"
)

// rawLoop serves a connection's requests inside one wait on the socket
// (connlimit/raw.go says why: no read that finds nothing after each
// answer, a third of a discovery read's system calls). It serves what the
// fast path answers without waiting on the client: a request whose head,
// and body if any, are read. Anything else (a body still on its way, a
// hand-off to net/http) leaves the loop with the bytes read so far in the
// connection's reader, and serve's ordinary path takes it from there. A
// handler that takes the connection (Hijack: a blocking query that parks)
// ends the loop at once; the connection's new owner may wait for the loop
// to return before it reads. Linux only (connlimit.RawConn is nil
// elsewhere).
type rawLoop struct {
	rc       syscall.RawConn // nil: no raw loop for this connection
	step     func(fd uintptr) bool
	out      loopResult
	headWait bool // the read header deadline is set for the head being read
}

type loopResult int

const (
	loopClose    loopResult = iota // close the connection
	loopSlow                       // a request is buffered that the ordinary path serves
	loopAnswered                   // answer returned false: serve ends the connection as after any answer
)

// connReader is what the connection's bufio.Reader reads: the connection,
// or inside the raw loop the socket, without waiting.
type connReader struct {
	nc net.Conn
	fd int // the socket inside the raw loop; -1 otherwise
}

func (r *connReader) Read(p []byte) (int, error) {
	if r.fd >= 0 {
		return connlimit.ReadNow(r.fd, p)
	}
	return r.nc.Read(p)
}

func (c *fastConn) initRaw() {
	c.cr = connReader{nc: c.nc, fd: -1}
	if c.raw.rc = connlimit.RawConn(c.nc); c.raw.rc != nil {
		c.raw.step = func(fd uintptr) bool { return c.step(int(fd)) }
	}
}

// runRaw runs the raw loop until a request needs the ordinary path or the
// connection ends (an error, a timeout, shutdown, an answer after which it
// does not go on).
func (c *fastConn) runRaw() loopResult {
	c.raw.out, c.raw.headWait = loopClose, false
	err := c.raw.rc.Read(c.raw.step)
	c.cr.fd = -1
	if err != nil {
		return loopClose // the read deadline passed, or the connection was closed
	}
	return c.raw.out
}

// step is the raw loop's body, run by RawConn.Read with the socket: false
// waits for the socket to be readable (then step runs again), true ends
// the loop with raw.out. It must not close c.nc.
func (c *fastConn) step(fd int) bool {
	c.cr.fd = fd
	cfg := &c.f.s.cfg
	answered := false
	for {
		if c.br.Buffered() == 0 {
			if !answered {
				// Woken (or just started): read what is there.
				if _, err := c.br.Peek(1); err != nil && !errors.Is(err, connlimit.ErrWouldBlock) {
					return c.endLoop(loopClose)
				}
			}
			// After an answer no read is tried: a request sent since the
			// last read has made the socket ready, and the wait returns
			// at once.
			if c.br.Buffered() == 0 {
				return c.waitNext()
			}
		}
		answered = false
		if !c.setActive() {
			return c.endLoop(loopClose)
		}
		head, err := connlimit.PeekHead(c.br, nil)
		if errors.Is(err, connlimit.ErrWouldBlock) {
			// The rest of the head is due within the read header timeout
			// of its first bytes, as in serve.
			if !c.raw.headWait {
				c.raw.headWait = true
				c.setReadTimeout(cfg.ReadHeaderTimeout)
			}
			return false
		}
		c.raw.headWait = false
		if errors.Is(err, connlimit.ErrNotPlain) {
			return c.endLoop(loopSlow)
		}
		if err != nil {
			return c.endLoop(loopClose)
		}
		r, ok := c.request(head)
		if !ok || c.body.remain > int64(c.br.Buffered()-len(head)) {
			return c.endLoop(loopSlow) // net/http's, or its body is on its way
		}
		_, _ = c.br.Discard(len(head))
		c.f.looped.Add(1)
		if !c.answer(r) {
			return c.endLoop(loopAnswered)
		}
		answered = true
	}
}

func (c *fastConn) endLoop(r loopResult) bool {
	c.raw.out = r
	c.cr.fd = -1
	return true
}

// waitNext prepares the wait for the next request, as serve's idle wait
// does: the connection counts as idle (shutdown may close it) and the wait
// is bounded by the idle timeout.
func (c *fastConn) waitNext() bool {
	if !c.setIdle() {
		return c.endLoop(loopClose)
	}
	wait := c.f.s.cfg.IdleTimeout
	if wait <= 0 {
		wait = c.f.s.cfg.ReadHeaderTimeout
	}
	c.setReadTimeout(wait)
	return false
}

// setReadTimeout sets the read deadline d from now (none when d <= 0).
func (c *fastConn) setReadTimeout(d time.Duration) {
	if d > 0 {
		_ = c.nc.SetReadDeadline(monoNow().Add(d))
	} else {
		_ = c.nc.SetReadDeadline(time.Time{})
	}
}
