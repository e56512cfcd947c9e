package lb

import (
	"errors"
	"net/http"
	"os"
	"syscall"

	"github.com/beaconhq/beacon/connlimit"
)

// rawLoop serves a client connection's requests inside one wait on the
// socket (connlimit/raw.go says why). It serves only what the fast path
// answers without waiting on the client: a request whose head and body are
// read and that the fast path routes. Anything else (a body still on its
// way, a hand-off to net/http) leaves the loop with the bytes read so far
// in the buffered reader, and serve's ordinary path takes it from there.
// The loop holds the connection's reads, so the client watch waits on a
// copy of the socket (runWatchDup).
type rawLoop struct {
	rc       syscall.RawConn // nil: no raw loop for this connection
	step     func(fd uintptr) bool
	out      loopResult
	headWait bool // the read header deadline is set for the head being read
}

type loopResult int

const (
	loopClose loopResult = iota // close the connection
	loopSlow                    // a request is buffered that the ordinary path serves
)

func (l *rawLoop) ok() bool { return l.rc != nil }

func (c *fastConn) initRaw() {
	if c.raw.rc = connlimit.RawConn(c.nc); c.raw.rc != nil {
		c.raw.step = func(fd uintptr) bool { return c.step(int(fd)) }
	}
}

// runRaw runs the raw loop until a request needs the ordinary path or the
// connection is to be closed (an error, a timeout, Shutdown).
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
// the loop with raw.out. It must not close c.nc, nor read it but through
// connlimit.ReadNow.
func (c *fastConn) step(fd int) bool {
	c.cr.fd = fd
	cfg := &c.s.b.cfg
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
		if c.lastMethod == http.MethodPost && c.skipCRLF() {
			continue
		}
		if !c.setActive() {
			return c.endLoop(loopClose)
		}
		head, err := connlimit.PeekHead(c.br, nil)
		if errors.Is(err, connlimit.ErrWouldBlock) {
			// The rest of the head is due within the read header
			// timeout, from its first bytes on, as in serve.
			if !c.raw.headWait {
				c.raw.headWait = true
				if !c.flushAnswers() {
					return c.endLoop(loopClose)
				}
				c.setReadDeadline(cfg.ReadHeaderTimeout)
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
		req := &c.req
		if !req.parse(head, cfg) || req.contentLength > int64(c.br.Buffered()-len(head)) {
			return c.endLoop(loopSlow) // net/http's, or its body is on its way
		}
		svc, strip, t := c.s.b.proxy.fastRoute(req)
		if t == nil {
			return c.endLoop(loopSlow)
		}
		c.lastMethod = req.method
		c.s.looped.Add(1)
		if !c.s.b.proxy.serveRouted(c, req, svc, strip, t) {
			return c.endLoop(loopClose)
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
// does: the answers still buffered go out, the connection counts as idle
// (Shutdown may close it) and the wait is bounded by the idle timeout.
func (c *fastConn) waitNext() bool {
	if !c.flushAnswers() || !c.setIdle() {
		return c.endLoop(loopClose)
	}
	wait := c.s.b.cfg.IdleTimeout
	if wait == 0 {
		wait = c.s.b.cfg.ReadHeaderTimeout
	}
	c.setReadDeadline(wait)
	return false
}

// flushAnswers sends the answers a pipelining client has waiting.
func (c *fastConn) flushAnswers() bool {
	if c.bw != nil && c.bw.Buffered() > 0 {
		return c.bw.Flush() == nil
	}
	return true
}

// runWatchDup is runWatch for a connection in the raw loop, which holds
// the connection's read lock: it waits on a copy of the socket (dup) that
// it registers with the poller, and it peeks instead of reading, so the
// client's next bytes stay where the loop reads them. The copy is made
// only for a request that runs long (watchAfter); it costs a few system
// calls then.
func (c *fastConn) runWatchDup(done chan struct{}) {
	defer close(done)
	w := &c.watch
	w.mu.Lock()
	if w.state.Load() != watchRunning {
		w.mu.Unlock()
		return
	}
	f := c.dupSocket()
	if f == nil {
		w.mu.Unlock()
		return
	}
	w.file = f
	w.mu.Unlock()
	gone := false
	if rc, err := f.SyscallConn(); err == nil {
		var b [1]byte
		_ = rc.Read(func(fd uintptr) bool {
			for {
				n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
				switch err {
				case syscall.EINTR:
					continue
				case syscall.EAGAIN:
					return false
				}
				// EOF or an error: the client left. A byte: the client
				// is there and has sent its next request.
				gone = err != nil || n == 0
				return true
			}
		})
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.file = nil
	f.Close()
	if gone && w.state.Load() == watchRunning {
		w.gone.Store(true)
		c.mu.Lock()
		if c.up != nil {
			c.up.Close()
		}
		c.mu.Unlock()
	}
}

// dupSocket returns a copy of the connection's socket, non-blocking and
// registered with the poller like the original, or nil.
func (c *fastConn) dupSocket() *os.File {
	nfd := -1
	err := c.raw.rc.Control(func(fd uintptr) {
		r, _, e := syscall.Syscall(syscall.SYS_FCNTL, fd, syscall.F_DUPFD_CLOEXEC, 0)
		if e == 0 {
			nfd = int(r)
		}
	})
	if err != nil || nfd < 0 {
		return nil
	}
	return os.NewFile(uintptr(nfd), "client")
}
