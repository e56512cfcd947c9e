package lb

import (
	"net/http"

	"github.com/beaconhq/beacon/connlimit"
)

// The raw loop (connlimit.Loop) serves a client connection's requests, from
// its second on, inside one wait on the socket. It serves only what the
// fast path answers without waiting on the client: a request whose head
// and body are read and that the fast path routes. Anything else (a body
// still on its way, a hand-off to net/http) leaves the loop with the bytes
// read so far in the buffered reader, and serve's ordinary path takes it
// from there. The loop holds the connection's reads, so the client watch
// waits on a copy of the socket (runWatchDup).

// fastConn is the raw loop's connlimit.LoopServer.
var _ connlimit.LoopServer = (*fastConn)(nil)

// LoopIdle readies the wait for the next request, as serve's idle wait
// does: the answers still buffered go out, the connection counts as idle
// (Shutdown may close it) and the wait is bounded by the idle timeout.
func (c *fastConn) LoopIdle() bool {
	if !c.flushAnswers() || !c.setIdle() {
		return false
	}
	wait := c.s.b.cfg.IdleTimeout
	if wait == 0 {
		wait = c.s.b.cfg.ReadHeaderTimeout
	}
	c.setReadDeadline(wait)
	return true
}

func (c *fastConn) LoopActive() bool { return c.setActive() }

// LoopSkip drops the CR LF an old client sends after a POST's body, as
// serve does.
func (c *fastConn) LoopSkip() bool { return c.lastMethod == http.MethodPost && c.skipCRLF() }

// LoopHeadWait bounds the rest of a head by the read header timeout, as
// serve does, once the answers a pipelining client waits for are out.
func (c *fastConn) LoopHeadWait() bool {
	if !c.flushAnswers() {
		return false
	}
	c.setReadDeadline(c.s.b.cfg.ReadHeaderTimeout)
	return true
}

func (c *fastConn) LoopServe(head []byte) (connlimit.LoopEnd, bool) {
	req := &c.req
	if !req.parse(head, &c.s.b.cfg) || req.contentLength > int64(c.br.Buffered()-len(head)) {
		return connlimit.LoopSlow, false // net/http's, or its body is on its way
	}
	svc, strip, t := c.s.b.proxy.fastRoute(req)
	if t == nil {
		return connlimit.LoopSlow, false
	}
	c.lastMethod = req.method
	c.s.looped.Add(1)
	if !c.s.b.proxy.serveRouted(c, req, svc, strip, t) {
		return connlimit.LoopClose, false
	}
	return 0, true
}

// flushAnswers sends the answers a pipelining client has waiting.
func (c *fastConn) flushAnswers() bool {
	if c.bw != nil && c.bw.Buffered() > 0 {
		return c.bw.Flush() == nil
	}
	return true
}
