package api

import (
	"time"

	"github.com/beaconhq/beacon/connlimit"
)

// The raw loop (connlimit.Loop, Linux only) serves a connection's requests,
// from its second on, inside one wait on the socket: no read that finds
// nothing after each answer, a third of a discovery read's system calls.
// It serves what the fast path answers without waiting on the client: a
// request whose head, and body if any, are read. Anything else (a body
// still on its way, a hand-off to net/http) leaves the loop with the bytes
// read so far in the connection's reader, and serve's ordinary path takes
// it from there. A handler that takes the connection (Hijack: a blocking
// query that parks) ends the loop at once; the connection's new owner may
// wait for the loop to return before it reads. Closing a connection whose
// handler runs in the loop waits for the handler (the loop holds the
// socket until then): Shutdown cancels every handler's context first
// (Server.Shutdown's s.cancel), so none runs on for long.

// connReader is what the connection's bufio.Reader reads: the connection,
// or inside the raw loop the socket, without waiting.
type connReader struct{ c *fastConn }

func (r connReader) Read(p []byte) (int, error) { return r.c.raw.Read(r.c.nc, p) }

// fastConn is the raw loop's connlimit.LoopServer.
var _ connlimit.LoopServer = (*fastConn)(nil)

func (c *fastConn) LoopIdle() bool {
	if !c.setIdle() {
		return false
	}
	wait := c.f.s.cfg.IdleTimeout
	if wait <= 0 {
		wait = c.f.s.cfg.ReadHeaderTimeout
	}
	c.setReadTimeout(wait)
	return true
}

func (c *fastConn) LoopActive() bool { return c.setActive() }

// LoopSkip skips nothing: a head that does not start at once goes to
// net/http, as in serve.
func (c *fastConn) LoopSkip() bool { return false }

func (c *fastConn) LoopHeadWait() bool {
	c.setReadTimeout(c.f.s.cfg.ReadHeaderTimeout)
	return true
}

func (c *fastConn) LoopServe(head []byte) (connlimit.LoopEnd, bool) {
	r, ok := c.request(head)
	if !ok || c.body.remain > int64(c.br.Buffered()-len(head)) {
		return connlimit.LoopSlow, false // net/http's, or its body is on its way
	}
	_, _ = c.br.Discard(len(head))
	c.f.looped.Add(1)
	if !c.answer(r) {
		return connlimit.LoopAnswered, false
	}
	return 0, true
}

// setReadTimeout sets the read deadline d from now (none when d <= 0).
func (c *fastConn) setReadTimeout(d time.Duration) {
	if d > 0 {
		_ = c.nc.SetReadDeadline(monoNow().Add(d))
	} else {
		_ = c.nc.SetReadDeadline(time.Time{})
	}
}
