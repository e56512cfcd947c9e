package lb

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/beaconhq/beacon/connlimit"
)

// fastServer serves the proxy listener itself: it reads each request's head
// without consuming it and, when the request is one the fast path knows
// how to proxy exactly (fastRequest), proxies it on the connection's own
// goroutine with no net/http server in between. Anything else (HTTP/1.0,
// h2c, upgrades, chunked or large bodies, Expect, odd targets or headers,
// the hash strategy, the balancer's own error answers) hands the whole
// connection, with the bytes already read, to the net/http server that
// served every request before, and it keeps the connection from then on.
// docs/lb.md ("The request path") lists the cases.
//
// A connection that opens with the HTTP/2 client preface (h2c with prior
// knowledge) goes to a second server, h2srv, that speaks only cleartext
// HTTP/2; srv speaks only HTTP/1. One server doing both would look for the
// preface itself on every connection handed to it and wait for the first
// 14 bytes to come before reading a request: a shorter request ("GET
// /\r\n\r\n") would be answered only after the read header timeout.
// connlimit.PeekPreface waits only while the bytes read are a prefix of
// the preface.
//
// With handAll (Config.DisableFastPath) every connection is handed to one
// of the two servers once its first bytes tell which.
type fastServer struct {
	b       *Balancer
	ln      net.Listener
	srv     *http.Server       // HTTP/1
	h2srv   *http.Server       // cleartext HTTP/2
	hand    *connlimit.Handoff // srv's listener: the connections the fast path hands over
	h2hand  *connlimit.Handoff // h2srv's listener: the connections that opened with the preface
	handAll bool               // no fast path: hand every connection over

	// served counts requests the fast path answered, handedOff the
	// connections given to net/http, looped the requests served in the
	// raw loop (tests read them).
	served     atomic.Int64
	handedOff  atomic.Int64
	looped     atomic.Int64 // of served, those answered inside the raw loop
	dupWaits   atomic.Int64 // client watches that waited on a copy of the socket (runWatchDup)
	dupSawNext atomic.Int64 // of those, the ones that saw the client's next request start

	conns    connlimit.Set[*fastConn]
	quit     chan struct{} // closed by Shutdown and Close: stops the scan
	quitOnce sync.Once
	scanning sync.WaitGroup
}

const (
	fastReadBufSize  = 8 << 10 // a request head longer than this goes to net/http
	fastWriteBufSize = 4 << 10
)

func newFastServer(b *Balancer, ln net.Listener, srv, h2srv *http.Server, handAll bool) *fastServer {
	return &fastServer{
		b: b, ln: ln, srv: srv, h2srv: h2srv, handAll: handAll,
		hand: connlimit.NewHandoff(ln.Addr()), h2hand: connlimit.NewHandoff(ln.Addr()),
		quit: make(chan struct{}),
	}
}

// serve accepts connections until Shutdown or Close; the net/http servers
// serve the handed-off ones meanwhile.
func (s *fastServer) serve() error {
	h2done := make(chan struct{})
	go func() {
		defer close(h2done)
		_ = s.h2srv.Serve(s.h2hand)
	}()
	s.scanning.Add(1)
	go s.scanWatches()
	defer func() {
		// However serve ends (Shutdown, Close, a listener error), the scan
		// and the HTTP/2 server's Serve end with it.
		s.stopScan()
		s.scanning.Wait()
		_ = s.h2hand.Close()
		<-h2done
	}()
	return connlimit.ServeHandingOff(s.ln, s.srv, s.hand, s.conns.Closing, func(nc net.Conn) {
		c := s.newConn(nc)
		if c == nil {
			nc.Close()
			return
		}
		go c.serve()
	})
}

// scanWatches starts the client watch of requests that run long
// (clientWatch), until the server closes.
func (s *fastServer) scanWatches() {
	defer s.scanning.Done()
	t := time.NewTicker(watchScan)
	defer t.Stop()
	for {
		select {
		case <-s.quit:
			return
		case now := <-t.C:
			s.conns.Each(func(c *fastConn) { c.maybeWatch(now.UnixNano()) })
		}
	}
}

func (s *fastServer) newConn(nc net.Conn) *fastConn {
	c := &fastConn{s: s, nc: nc, idle: true}
	if ip, _, err := net.SplitHostPort(nc.RemoteAddr().String()); err == nil {
		c.clientIP = ip
	}
	c.remoteAddr = nc.RemoteAddr().String()
	c.raw.Init(nc, c)
	if !s.conns.Add(c) {
		return nil
	}
	return c
}

func (s *fastServer) forget(c *fastConn) { s.conns.Remove(c) }

// Shutdown stops accepting, closes idle connections, lets requests in
// flight finish (each connection closes after its current answer) and
// shuts the net/http server down the same way, until ctx ends.
func (s *fastServer) Shutdown(ctx context.Context) error {
	s.conns.SetClosing()
	defer s.stopScan()
	_ = s.ln.Close()
	herr := make(chan error, 2)
	go func() { herr <- s.srv.Shutdown(ctx) }()
	go func() { herr <- s.h2srv.Shutdown(ctx) }()
	if err := s.conns.Shutdown(ctx, 50*time.Millisecond, (*fastConn).closeIfIdle, (*fastConn).closeHard); err != nil {
		// The connections are closed: their I/O fails and they end.
		s.conns.Wait()
		<-herr
		<-herr
		return err
	}
	return errors.Join(<-herr, <-herr)
}

// Close closes the listener and every connection at once.
func (s *fastServer) Close() error {
	s.conns.SetClosing()
	defer s.stopScan()
	err := s.ln.Close()
	s.conns.Each((*fastConn).closeHard)
	_ = s.srv.Close()
	_ = s.h2srv.Close()
	return err
}

func (s *fastServer) stopScan() { s.quitOnce.Do(func() { close(s.quit) }) }

// closeHard closes c and its instance connection at once, busy or not.
func (c *fastConn) closeHard() {
	c.mu.Lock()
	c.closed = true
	if c.up != nil {
		c.up.Close()
	}
	c.mu.Unlock()
	c.nc.Close()
}

// fastConn is one client connection served by the fast path.
type fastConn struct {
	s          *fastServer
	nc         net.Conn
	br         *bufio.Reader
	bw         *bufio.Writer
	clientIP   string
	remoteAddr string
	out        []byte // the outgoing request head, reused
	headCopy   []byte // the request head being proxied, reused
	handedOff  bool   // net/http has the connection now
	lastMethod string
	req        fastRequest // the request being served, reused
	ex         exchange    // its exchange with an instance, reused
	cr         clientReader
	watch      clientWatch
	raw        connlimit.Loop // serves requests inside one wait on the socket (fastraw.go)

	mu     sync.Mutex
	idle   bool // between requests: Shutdown may close it
	closed bool
	up     net.Conn // the instance connection in use, if any
}

// setActive marks the connection busy with a request; false when the
// server is shutting down (the connection is closed then).
func (c *fastConn) setActive() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.s.conns.Closing() {
		return false
	}
	c.idle = false
	return true
}

func (c *fastConn) setIdle() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.s.conns.Closing() {
		return false
	}
	c.idle = true
	return true
}

// setUpstream records the connection to an instance the request is
// using (nil: none), so that Close and a client's leaving can cut it.
func (c *fastConn) setUpstream(nc net.Conn) {
	c.mu.Lock()
	c.up = nc
	if nc != nil && (c.closed || c.watch.gone.Load()) {
		nc.Close()
	}
	c.mu.Unlock()
}

func (c *fastConn) closeIfIdle() {
	c.mu.Lock()
	idle := c.idle && !c.closed
	if idle {
		c.closed = true
	}
	c.mu.Unlock()
	// Closed outside the lock: Close waits for the raw loop's wait to
	// end, and the loop may be taking the lock (setActive).
	if idle {
		c.nc.Close()
	}
}

func (c *fastConn) close() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.nc.Close()
}

func (c *fastConn) serve() {
	defer c.s.forget(c)
	defer func() {
		if v := recover(); v != nil {
			c.s.b.logger.Error("panic serving a connection", "client", c.remoteAddr, "panic", v)
			c.close()
		}
	}()
	c.cr = clientReader{c: c}
	c.br = bufio.NewReaderSize(&c.cr, fastReadBufSize)
	cfg := &c.s.b.cfg
	for first := true; ; first = false {
		if !first && c.raw.On() && c.br.Buffered() == 0 && c.cr.pending == nil {
			// Between requests: the raw loop serves the requests it can
			// and returns when one needs the path below.
			if c.raw.Run(c.br) == connlimit.LoopClose {
				c.close()
				return
			}
		}
		for c.br.Buffered() == 0 || c.lastMethod == http.MethodPost && c.skipCRLF() {
			if c.bw != nil && c.bw.Buffered() > 0 {
				if err := c.bw.Flush(); err != nil {
					c.close()
					return
				}
			}
			if !c.setIdle() {
				c.close()
				return
			}
			// A new connection's first head is due within the read
			// header timeout, a later one after up to the idle timeout,
			// as net/http has it.
			wait := cfg.IdleTimeout
			if first || wait == 0 {
				wait = cfg.ReadHeaderTimeout
			}
			c.setReadDeadline(wait)
			if _, err := c.br.Peek(1); err != nil {
				c.close()
				return
			}
		}
		if !c.setActive() {
			c.close()
			return
		}
		if first {
			// h2c or HTTP/1? Decided from the bytes come so far, waiting
			// (under the first head's deadline) only while they are the
			// start of the HTTP/2 preface.
			h2, err := connlimit.PeekPreface(c.br)
			if err != nil {
				c.close()
				return
			}
			if h2 {
				c.handoff(c.s.h2hand)
				return
			}
			if c.s.handAll {
				c.handoff(c.s.hand)
				return
			}
		}
		head, err := connlimit.PeekHead(c.br, c.beforeRead)
		if errors.Is(err, connlimit.ErrNotPlain) {
			c.handoff(c.s.hand)
			return
		}
		if err != nil {
			// The client stopped half-way through a head, or took too
			// long: net/http would answer nothing either.
			c.close()
			return
		}
		req := &c.req
		if !req.parse(head, cfg) {
			c.handoff(c.s.hand)
			return
		}
		c.lastMethod = req.method
		if !c.s.b.proxy.fastServe(c, req) {
			if !c.handedOff {
				c.close()
			}
			return
		}
	}
}

// skipCRLF drops the CR and LF bytes buffered before a head, which old
// clients send after a POST's body (net/http skips them too). It reports
// whether nothing is left buffered.
func (c *fastConn) skipCRLF() bool {
	peek, _ := c.br.Peek(min(4, c.br.Buffered()))
	n := 0
	for n < len(peek) && (peek[n] == '\r' || peek[n] == '\n') {
		n++
	}
	_, _ = c.br.Discard(n)
	return n > 0 && c.br.Buffered() == 0
}

// beforeRead runs before a read of the client that may wait: the answers
// already written go out first (a pipelining client waits for them), and
// the read is bounded by the read header timeout.
func (c *fastConn) beforeRead() {
	if c.bw != nil && c.bw.Buffered() > 0 {
		_ = c.bw.Flush()
	}
	c.setReadDeadline(c.s.b.cfg.ReadHeaderTimeout)
}

func (c *fastConn) setReadDeadline(d time.Duration) { connlimit.SetReadTimeout(c.nc, d) }

// handoff gives the connection, and what was read of it, to the net/http
// server accepting on h (c.s.hand: HTTP/1, c.s.h2hand: HTTP/2).
func (c *fastConn) handoff(h *connlimit.Handoff) {
	if c.bw != nil && c.bw.Buffered() > 0 {
		if err := c.bw.Flush(); err != nil {
			c.close()
			return
		}
	}
	_ = c.nc.SetDeadline(time.Time{})
	c.handedOff = true
	c.s.handedOff.Add(1)
	pc := &prefixConn{Conn: c.nc, br: c.br}
	if c.cr.pending != nil {
		// Cannot happen: the watch ends with the exchange, and its byte
		// is read back before the next head.
		c.close()
		return
	}
	if !h.Give(pc) {
		c.close()
	}
}

// prefixConn is a handed-off connection: reads drain what the fast path
// had buffered, then go to the connection.
type prefixConn struct {
	net.Conn
	mu sync.Mutex
	br *bufio.Reader
}

// CloseWrite sends the FIN net/http's server sends before closing a
// connection whose request it did not read whole.
func (p *prefixConn) CloseWrite() error {
	if cw, ok := p.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

func (p *prefixConn) Read(b []byte) (int, error) {
	p.mu.Lock()
	br := p.br
	if br != nil && br.Buffered() == 0 {
		p.br, br = nil, nil
	}
	p.mu.Unlock()
	if br != nil {
		return br.Read(b)
	}
	return p.Conn.Read(b)
}
