package api

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/beaconhq/beacon/connlimit"
)

// fastServer serves the API's listener itself: it reads each request head
// without consuming it and, when the request is a plain read, or a write
// under /v1/services/ with a small body of known length, that it can hand
// to the API's handler exactly as net/http would (fastConn.request), builds
// the http.Request, runs the same handler (middleware, authorization,
// metrics and all) with a ResponseWriter that keeps the answer, and writes
// it in one write, on the connection's own goroutine. net/http's server
// costs a read more than that per request (its background read, which
// wakes a goroutine and moves the deadline twice), a context per request
// and its response machinery: about a third of the CPU of a discovery read
// (docs/benchmarks.md). Anything else (TLS, HTTP/1.0, other methods or
// routes, a chunked or larger body, Expect, upgrades, blocking queries, which park, the snapshot,
// which streams, odd targets or headers) hands the whole connection, with
// the bytes already read, to the net/http server that served every
// request before, and it keeps the connection from then on.
// docs/api.md ("The request path") lists the cases.
type fastServer struct {
	s    *Server
	ln   net.Listener
	hand *connlimit.Handoff // s.srv's listener: the connections handed over

	// served counts requests the fast path answered, handedOff the
	// connections given to net/http (tests read them).
	served    atomic.Int64
	handedOff atomic.Int64
	looped    atomic.Int64 // requests the raw loop took (fastraw.go)

	conns connlimit.Set[*fastConn]
}

const (
	// fastReadBufSize is a connection's read buffer, net/http's size too; a
	// head longer than it goes to net/http (which takes up to 64 KB).
	fastReadBufSize = 4 << 10
	// fastBodyMax is the most of an answer kept before it is sent: a
	// longer one goes out in chunks as the handler writes it.
	fastBodyMax = 64 << 10
	// fastKeepBuf is the largest answer buffer a connection keeps for its
	// next request: an idle connection holds at most this besides its read
	// buffer.
	fastKeepBuf = 16 << 10
	// fastMaxBody bounds a request body the fast path takes (besides
	// MaxBodyBytes): net/http reads and drops at most this much of a body a
	// handler left unread, and closes the connection past it.
	fastMaxBody = 256 << 10
	// fastMaxHeaderLines: a head with more header lines goes to net/http
	// (which refuses more than 500 with 431).
	fastMaxHeaderLines = 100
)

func newFastServer(s *Server, ln net.Listener) *fastServer {
	return &fastServer{s: s, ln: ln, hand: connlimit.NewHandoff(ln.Addr())}
}

// serve accepts connections until shutdown; s.srv serves the handed-off
// ones meanwhile. It returns http.ErrServerClosed after shutdown.
func (f *fastServer) serve() error {
	return connlimit.ServeHandingOff(f.ln, f.s.srv, f.hand, f.conns.Closing, func(nc net.Conn) {
		c := f.newConn(nc)
		if c == nil {
			nc.Close()
			return
		}
		go c.serve()
	})
}

func (f *fastServer) newConn(nc net.Conn) *fastConn {
	c := &fastConn{f: f, nc: nc, remoteAddr: nc.RemoteAddr().String(), idle: true}
	c.raw.Init(nc, c)
	if !f.conns.Add(c) {
		return nil
	}
	return c
}

func (f *fastServer) forget(c *fastConn) { f.conns.Remove(c) }

// shutdown stops accepting, closes idle connections and lets requests in
// flight finish (each connection closes after its current answer), until
// ctx ends; then it closes the rest. net/http's server is shut down by the
// caller.
func (f *fastServer) shutdown(ctx context.Context) error {
	f.conns.SetClosing()
	_ = f.ln.Close()
	// As net/http's Shutdown: past ctx the connections are closed, and a
	// handler that has not returned is not waited for.
	return f.conns.Shutdown(ctx, 20*time.Millisecond,
		func(c *fastConn) { c.closeIf(false) }, func(c *fastConn) { c.closeIf(true) })
}

// closeIf closes c if it is idle, or busy or not (all).
func (c *fastConn) closeIf(all bool) {
	c.mu.Lock()
	shut := (all || c.idle) && !c.closed
	if shut {
		c.closed = true
	}
	c.mu.Unlock()
	// Closed outside the lock: Close waits for the raw loop's wait to
	// end, and the loop may be taking the lock (setActive, Hijack).
	if shut {
		c.nc.Close()
	}
}

// fastConn is one client connection served by the fast path.
type fastConn struct {
	f          *fastServer
	nc         net.Conn
	br         *bufio.Reader
	remoteAddr string
	ctx        context.Context // every request's: the server's base, cancelled when the connection ends
	template   *http.Request   // an empty request, copied for each request
	// header is every request's Header, reused (request): a handler must
	// not keep a request's Header past its return. The one that does, a
	// blocking query that parks, takes the connection (Hijack), whose
	// loop then ends: nothing reuses the header after it. host and target
	// are the last request's, reused when the next one sends the same.
	header       http.Header
	host, target string
	w            fastResponse   // reused by each request
	date         []byte         // the Date header's value, until dateUntil
	dateUntil    time.Time      // monoNow time at which the second of date ends
	writeBy      time.Time      // the write deadline set on nc
	body         fastBody       // the request's body, when it has one
	raw          connlimit.Loop // serves requests inside one wait on the socket (fastraw.go)

	// parsed is target parsed, when parsedOK: a request for the same
	// target as the last one gets a copy of it, not a new parse (a
	// discovery client asks for the same URL over and over). The copy is
	// the handler's; parsed itself is never handed out.
	parsed   url.URL
	parsedOK bool

	mu     sync.Mutex
	idle   bool // between requests: shutdown may close it
	closed bool
	// hijacked: a handler took the connection (Hijack); closed is set
	// too, so that shutdown leaves it alone.
	hijacked bool
}

func (c *fastConn) setActive() bool { return c.setIdleState(false) }
func (c *fastConn) setIdle() bool   { return c.setIdleState(true) }

// setIdleState marks the connection idle or busy; false once it is closed
// or the server is shutting down.
func (c *fastConn) setIdleState(idle bool) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.f.conns.Closing() {
		return false
	}
	c.idle = idle
	return true
}

func (c *fastConn) close() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.nc.Close()
}

func (c *fastConn) serve() {
	defer c.f.forget(c)
	if isTLS(c.nc) {
		// TLS stays with net/http, handshake and all.
		if !c.setActive() {
			c.close()
			return
		}
		c.handoff()
		return
	}
	ctx, cancel := context.WithCancel(c.f.s.base)
	defer cancel()
	ctx = context.WithValue(ctx, http.ServerContextKey, c.f.s.srv)
	c.ctx = context.WithValue(ctx, http.LocalAddrContextKey, c.nc.LocalAddr())
	c.template = &http.Request{}
	c.br = getReader(connReader{c})
	// Past serve the buffer is no one's: handoff has copied what was read
	// ahead, and a handler does not read a request's body after it
	// returns. Hijack gives it back itself (takeReader).
	defer func() {
		if c.br != nil {
			putReader(c.br)
			c.br = nil
		}
	}()
	cfg := &c.f.s.cfg
	for first := true; ; first = false {
		if !first && c.raw.On() && c.br.Buffered() == 0 {
			// Between requests: the raw loop serves the requests it can
			// and returns when one needs the path below.
			switch c.raw.Run(c.br) {
			case connlimit.LoopClose:
				c.close()
				return
			case connlimit.LoopAnswered:
				c.endAfterAnswer()
				return
			}
		}
		// A head is due within the read header timeout of the moment it
		// starts: the connection's opening for the first, its first byte
		// for a later one (as net/http has it).
		start := monoNow()
		headBy := start.Add(cfg.ReadHeaderTimeout)
		if c.br.Buffered() == 0 {
			if !c.setIdle() {
				c.close()
				return
			}
			// A connection's first head is due within the read header
			// timeout, a later one after up to the idle timeout, as
			// net/http has it.
			wait := cfg.IdleTimeout
			if first || wait <= 0 {
				wait = cfg.ReadHeaderTimeout
			}
			if wait > 0 {
				_ = c.nc.SetReadDeadline(start.Add(wait))
			} else {
				_ = c.nc.SetReadDeadline(time.Time{})
			}
			if _, err := c.br.Peek(1); err != nil {
				c.close()
				return
			}
			if !first {
				start = monoNow()
				headBy = start.Add(cfg.ReadHeaderTimeout)
			}
		}
		if !c.setActive() {
			c.close()
			return
		}
		head, err := connlimit.PeekHead(c.br, func() {
			if cfg.ReadHeaderTimeout > 0 {
				_ = c.nc.SetReadDeadline(headBy)
			} else {
				_ = c.nc.SetReadDeadline(time.Time{})
			}
		})
		if errors.Is(err, connlimit.ErrNotPlain) {
			c.handoff()
			return
		}
		if err != nil {
			// The client stopped half-way through a head, or took too
			// long: net/http answers nothing either.
			c.close()
			return
		}
		r, ok := c.request(head)
		if !ok {
			c.handoff()
			return
		}
		_, _ = c.br.Discard(len(head))
		if c.body.remain > 0 {
			// As net/http: the whole request, body included, is due
			// within the read timeout of its start.
			if cfg.ReadTimeout > 0 {
				_ = c.nc.SetReadDeadline(start.Add(cfg.ReadTimeout))
			} else {
				_ = c.nc.SetReadDeadline(time.Time{})
			}
		}
		if !c.answer(r) {
			c.endAfterAnswer()
			return
		}
	}
}

// endAfterAnswer ends the connection after an answer that does not let it
// go on.
func (c *fastConn) endAfterAnswer() {
	if c.hijacked {
		return // the connection is the handler's now
	}
	if c.body.remain > 0 {
		c.closeWriteAndWait()
	}
	c.close()
}

// epoch anchors monoNow.
var epoch = time.Now()

// monoNow is the time now for deadlines and durations, at one clock
// reading where time.Now takes two (the wall clock and the monotonic one):
// time.Now was ~3 % of a discovery read's CPU. Its wall clock part is
// epoch's plus the monotonic time since, so it is not for showing; a
// deadline (time.Until) and a difference of two such times use only the
// monotonic reading.
func monoNow() time.Time { return epoch.Add(time.Since(epoch)) }

// readers are connections' read buffers, reused: a connection that closes,
// is handed to net/http, or is hijacked (a blocking query, which parks: a
// burst of watchers connecting hijacks as many) leaves its buffer to the
// next.
var readers = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, fastReadBufSize) }}

func getReader(nc io.Reader) *bufio.Reader {
	br := readers.Get().(*bufio.Reader)
	br.Reset(nc)
	return br
}

func putReader(br *bufio.Reader) {
	br.Reset(nil)
	readers.Put(br)
}

// handoff gives the connection, and what was read of it, to net/http.
func (c *fastConn) handoff() {
	_ = c.nc.SetDeadline(time.Time{})
	conn := c.nc
	if c.br != nil && c.br.Buffered() > 0 {
		b, _ := c.br.Peek(c.br.Buffered())
		conn = &prefixConn{Conn: c.nc, pending: bytes.Clone(b)}
	}
	c.f.handedOff.Add(1)
	if !c.f.hand.Give(conn) {
		c.close()
	}
}

// isTLS reports whether c, under its wrappers, is a TLS connection.
func isTLS(c net.Conn) bool { return tlsConnOf(c) != nil }

// fastRoute reports whether a GET of path may take the fast path: the
// API's reads, not the snapshot (it streams an archive of any size).
func fastRoute(path []byte) bool {
	return bytes.HasPrefix(path, []byte("/v1/")) && !bytes.HasPrefix(path, []byte("/v1/snapshot"))
}

// request builds the http.Request net/http would build for head, when the
// fast path takes it: a GET in HTTP/1.1 of an API read (fastRoute), or a
// PUT or DELETE under /v1/services/ (fastMethod), whose target is
// plain (connlimit.PlainPath, PlainQuery) and asks no blocking query
// (index: those park, which takes the connection out of net/http), with
// exactly one plain Host, no body on a GET and otherwise at most one
// Content-Length of at most MaxBodyBytes and fastMaxBody, no Transfer-Encoding, Expect,
// Upgrade or HTTP2-Settings, a Connection header of close or keep-alive
// only, and every header line well formed. Anything else is for net/http,
// which parses, refuses or serves it as it always did.
func (c *fastConn) request(head []byte) (*http.Request, bool) {
	eol := bytes.Index(head, crlfBytes)
	line := head[:eol]
	method, rest, ok := fastMethod(line)
	if !ok {
		return nil, false
	}
	sp := bytes.IndexByte(rest, ' ')
	if sp < 0 || string(rest[sp+1:]) != "HTTP/1.1" {
		return nil, false
	}
	target := rest[:sp]
	path, query, hasQuery := bytes.Cut(target, []byte{'?'})
	if !fastRoute(path) || bytes.Contains(path, []byte("//")) || !connlimit.PlainPath(path) {
		return nil, false
	}
	if method != http.MethodGet && !bytes.HasPrefix(path, []byte("/v1/services/")) {
		return nil, false
	}
	if hasQuery && !connlimit.PlainQuery(query) {
		return nil, false
	}
	// A blocking query parks (park.go), taking the connection (Hijack);
	// one that cannot park (it asks to close its connection) would wait
	// in its handler, where net/http, not the fast path, notices a client
	// that goes away: that one goes to net/http.
	blocking := hasQuery && hasQueryKey(query, "index")
	if blocking && method != http.MethodGet {
		return nil, false
	}
	// The connection's header map, emptied: its value slices, and the
	// strings in them when the client sends the same value again, serve
	// again (most clients send the same header request after request).
	h := c.header
	if h == nil {
		h = make(http.Header, 8)
		c.header = h
	}
	for k, vs := range h {
		h[k] = vs[:0]
	}
	var host []byte
	hosts, lines, lengths, closing := 0, 0, 0, false
	var length int64
	for pos := eol + 2; pos < len(head)-2; {
		if lines++; lines > fastMaxHeaderLines {
			return nil, false
		}
		name, value, next, ok := connlimit.NextHeader(head, pos)
		if !ok {
			return nil, false
		}
		pos = next
		key := headerKey(name)
		switch key {
		case "Host":
			hosts++
			host = value
			continue // net/http moves it to Request.Host
		case "Content-Length":
			// One length, in digits, of a body the handlers read whole
			// (readBody's limit): a longer one, which they refuse unread,
			// goes to net/http with everything else.
			n, ok := connlimit.Digits(value, 18)
			if lengths++; lengths > 1 || !ok || n > min(c.f.s.cfg.MaxBodyBytes, fastMaxBody) || (n > 0 && method == http.MethodGet) {
				return nil, false
			}
			length = n
		case "Transfer-Encoding", "Expect", "Upgrade", "Http2-Settings":
			return nil, false
		case "Connection":
			cl, ok := connlimit.ConnectionClose(value)
			if !ok {
				return nil, false
			}
			closing = closing || cl
		}
		vs := h[key]
		prev := ""
		if len(vs) < cap(vs) {
			prev = vs[:len(vs)+1][len(vs)]
		}
		h[key] = append(vs, reuseString(value, prev))
	}
	for k, vs := range h {
		if len(vs) == 0 {
			delete(h, k) // sent by the previous request only (or added by its handler)
		}
	}
	if hosts != 1 || !connlimit.PlainHost(host) || (blocking && closing) {
		return nil, false
	}
	c.host = reuseString(host, c.host)
	u, ok := c.parseTarget(target)
	if !ok {
		return nil, false
	}
	// As net/http's reader: HTTP/1.0's Pragma: no-cache means Cache-Control: no-cache.
	if pragma, ok := h["Pragma"]; ok && len(pragma) > 0 && pragma[0] == "no-cache" {
		if _, ok := h["Cache-Control"]; !ok {
			h["Cache-Control"] = []string{"no-cache"}
		}
	}
	// The request's context is one the middleware fills in rather than
	// wrapping the request again (requestContext).
	r := c.template.WithContext(&requestContext{Context: c.ctx})
	r.Method, r.URL, r.Proto, r.ProtoMajor, r.ProtoMinor = method, u, "HTTP/1.1", 1, 1
	r.Header, r.Body, r.Host, r.RemoteAddr = h, http.NoBody, c.host, c.remoteAddr
	r.RequestURI, r.Close, r.ContentLength = c.target, closing, length
	c.body = fastBody{br: c.br, remain: length}
	if length > 0 {
		r.Body = &c.body
	}
	return r, true
}

var crlfBytes = []byte("\r\n")

// parseTarget returns the request target as a URL of its own, parsing it
// only when it differs from the last request's (parsed).
func (c *fastConn) parseTarget(target []byte) (*url.URL, bool) {
	u := new(url.URL)
	if c.parsedOK && string(target) == c.target {
		*u = c.parsed
		return u, true
	}
	c.target = string(target)
	p, err := url.ParseRequestURI(c.target)
	if err != nil {
		c.parsedOK = false
		return nil, false
	}
	c.parsed, c.parsedOK = *p, true
	*u = *p
	return u, true
}

// fastMethod splits a request line into its method, when the fast path
// takes it, and the rest. GET serves reads; PUT and DELETE only under
// /v1/services/ (registrations, deregistrations, maintenance: handlers
// that read a body whole through readBody). Not POST: no route under
// /v1/services/ takes one, and net/http skips a stray CRLF after a POST's
// body, which a connection handed over after one could not.
func fastMethod(line []byte) (string, []byte, bool) {
	for _, m := range [...]string{http.MethodGet, http.MethodPut, http.MethodDelete} {
		if len(line) > len(m) && string(line[:len(m)]) == m && line[len(m)] == ' ' {
			return m, line[len(m)+1:], true
		}
	}
	return "", nil, false
}

// fastBody is a request body of known length read off the connection's
// buffer. What the handler leaves unread is read and dropped before the
// answer goes out (drainBody), as net/http does for a small body, so that
// the next request on the connection starts where this one ends.
type fastBody struct {
	br     *bufio.Reader
	remain int64
	err    error
}

func (b *fastBody) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if b.remain <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > b.remain {
		p = p[:b.remain]
	}
	n, err := b.br.Read(p)
	b.remain -= int64(n)
	if err == io.EOF {
		err = io.ErrUnexpectedEOF // the client closed before the end of its body
	}
	if err != nil {
		b.err = err
	}
	return n, err
}

func (b *fastBody) Close() error { return nil }

// drainBody reads what the handler left of the request's body; false when
// it cannot (the client is too slow or gone): then the connection closes
// after this answer, as net/http's does.
func (c *fastConn) drainBody() bool {
	if c.body.err == io.ErrUnexpectedEOF {
		// The handler itself met the end of a body the client cut short:
		// for net/http that body was read to its end, and the answer
		// says nothing of closing (the next read finds it closed).
		return true
	}
	if c.body.err == nil && c.body.remain > 0 {
		_, _ = io.CopyN(io.Discard, &c.body, c.body.remain)
	}
	return c.body.err == nil
}

// closeWriteAndWait ends a connection whose client may still be sending
// (a body nobody read): it closes our side for writing and reads what
// comes for up to half a second, so that closing does not reset the
// connection and lose the answer on its way (net/http's closeWriteAndWait).
func (c *fastConn) closeWriteAndWait() {
	cw, ok := c.nc.(interface{ CloseWrite() error })
	if !ok || cw.CloseWrite() != nil {
		return
	}
	_ = c.nc.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	_, _ = io.Copy(io.Discard, c.nc)
}

// reuseString returns b as a string: prev when it holds the same bytes
// (no allocation), else a new string.
func reuseString(b []byte, prev string) string {
	if string(b) == prev {
		return prev
	}
	return string(b)
}

// hasQueryKey reports whether the raw query q has the parameter key, as
// url.ParseQuery would decode its names.
func hasQueryKey(q []byte, key string) bool {
	for len(q) > 0 {
		var part []byte
		part, q, _ = bytes.Cut(q, []byte{'&'})
		name, _, _ := bytes.Cut(part, []byte{'='})
		if string(name) == key {
			return true
		}
		if bytes.ContainsAny(name, "%+") {
			if n, err := url.QueryUnescape(string(name)); err != nil || n == key {
				return true // undecodable: ParseQuery would drop it, but let net/http's path judge
			}
		}
	}
	return false
}

// headerKey is name in canonical form, as net/http's reader keys it,
// without an allocation for the names clients send most.
func headerKey(name []byte) string {
	switch string(name) {
	case "Host", "host":
		return "Host"
	case "User-Agent", "user-agent":
		return "User-Agent"
	case "Accept", "accept":
		return "Accept"
	case "Accept-Encoding", "accept-encoding":
		return "Accept-Encoding"
	case "Connection", "connection":
		return "Connection"
	case "Authorization", "authorization":
		return "Authorization"
	case "X-Beacon-Token", "x-beacon-token":
		return "X-Beacon-Token"
	case "X-Consul-Token", "x-consul-token":
		return "X-Consul-Token"
	case "Content-Length", "content-length":
		return "Content-Length"
	case "Content-Type", "content-type":
		return "Content-Type"
	}
	return textproto.CanonicalMIMEHeaderKey(string(name))
}

// answer runs the API's handler for r and writes its answer. It reports
// whether the connection serves another request.
func (c *fastConn) answer(r *http.Request) (keep bool) {
	w := &c.w
	w.reset(c, r.Close)
	defer func() {
		if v := recover(); v != nil {
			if v != http.ErrAbortHandler {
				c.f.s.logger.Error("panic serving a request", "remote", c.remoteAddr, "path", r.URL.Path,
					"panic", fmt.Sprint(v), "stack", string(debug.Stack()))
			}
			keep = false
		}
		w.release()
	}()
	c.f.s.handler.ServeHTTP(w, r)
	c.f.served.Add(1)
	return w.finish()
}

func hasToken(vs []string, token string) bool {
	for _, v := range vs {
		for f := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(f), token) {
				return true
			}
		}
	}
	return false
}

// write sends b, within the server's write timeout (moved only when less
// than half of it is left: moving a deadline costs).
func (c *fastConn) write(b []byte) error {
	if wt := c.f.s.srv.WriteTimeout; wt > 0 {
		if now := monoNow(); c.writeBy.Sub(now) < wt/2 {
			c.writeBy = now.Add(wt)
			_ = c.nc.SetWriteDeadline(c.writeBy)
		}
	}
	_, err := c.nc.Write(b)
	return err
}

// bufPool holds the answer buffers of connections between requests: an
// idle connection holds none (net/http's holds its 4 KiB write buffer).
var bufPool = sync.Pool{New: func() any { return new([]byte) }}

// getBuf returns an empty buffer and the holder to give it back in.
func getBuf() (*[]byte, []byte) {
	p := bufPool.Get().(*[]byte)
	return p, (*p)[:0]
}

// putBuf gives b back in its holder p (a large one is dropped).
func putBuf(p *[]byte, b []byte) {
	if p != nil && cap(b) <= fastKeepBuf {
		*p = b
		bufPool.Put(p)
	}
}

// fastResponse is the fast path's ResponseWriter: it keeps the answer (up
// to fastBodyMax, then sends it in chunks) and writes it with its length.
type fastResponse struct {
	c      *fastConn
	header http.Header
	status int
	body   []byte // from bufPool, in bodyP
	out    []byte // what is written, from bufPool, in outP
	// bodyP and outP hold body and out in the pool (a holder of its own
	// per Put would cost an allocation).
	bodyP, outP *[]byte
	// reqClose: the request asked to close the connection.
	reqClose bool
	// chunked: the head went out and the body goes in chunks; headKeep:
	// that head let the connection stay open.
	chunked, headKeep bool
	// bodyLost: the request's body could not be read to its end, so the
	// connection cannot serve another request.
	bodyLost bool
	// hijacked: the handler took the connection (Hijack).
	hijacked bool
	err      error
}

func (w *fastResponse) reset(c *fastConn, reqClose bool) {
	if w.header == nil {
		w.header = make(http.Header, 8)
	}
	clear(w.header)
	w.c, w.status, w.reqClose, w.chunked, w.headKeep, w.bodyLost, w.hijacked, w.err = c, 0, reqClose, false, false, false, false, nil
	w.bodyP, w.body = getBuf()
	w.outP, w.out = getBuf()
}

// release gives the buffers back to the pool.
func (w *fastResponse) release() {
	putBuf(w.bodyP, w.body)
	putBuf(w.outP, w.out)
	w.bodyP, w.body, w.outP, w.out = nil, nil, nil, nil
}

// keep reports whether the connection may serve another request after
// this answer: not when the client or the handler said close, nor while
// the server shuts down.
func (w *fastResponse) keep() bool {
	return !w.reqClose && !w.bodyLost && !w.c.f.conns.Closing() && !hasToken(w.header["Connection"], "close")
}

// drain reads what the handler left of the request's body before the
// answer's head goes out, when the connection is to serve another request
// (as net/http, which does not wait for a body it will not read when it
// closes anyway).
func (w *fastResponse) drain() {
	if w.keep() {
		w.bodyLost = !w.c.drainBody()
	}
}

func (w *fastResponse) Header() http.Header { return w.header }

// errHijackLate refuses a Hijack after the answer began.
var errHijackLate = errors.New("api: hijack after the answer began")

// Hijack gives the connection to the handler, as net/http's does: the park
// lot takes a blocking query's connection so (park.go). The connection's
// deadlines are cleared, the server forgets it (shutdown does not close
// it), and nothing is written on it once the handler returns. The reader
// holds what the client sent after this request (pipelined requests); it
// is the caller's, as is the small writer, which nothing here uses.
func (w *fastResponse) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if w.hijacked {
		return nil, nil, http.ErrHijacked
	}
	if w.status != 0 || len(w.body) > 0 || w.chunked || w.err != nil {
		return nil, nil, errHijackLate
	}
	c := w.c
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, nil, net.ErrClosed
	}
	c.closed, c.hijacked = true, true
	c.mu.Unlock()
	w.hijacked = true
	_ = c.nc.SetDeadline(time.Time{})
	return c.nc, bufio.NewReadWriter(c.takeReader(), bufio.NewWriterSize(c.nc, 512)), nil
}

// takeReader returns a reader of the connection for its new owner, holding
// (Buffered) what the connection's reader had read ahead, and gives the
// connection's 4 KB buffer back to the pool: a burst of blocking queries,
// each of which parks, leaves no buffer behind.
func (c *fastConn) takeReader() *bufio.Reader {
	n := c.br.Buffered()
	if n == 0 {
		putReader(c.br)
		c.br = nil
		return bufio.NewReaderSize(c.nc, 16)
	}
	ahead, _ := c.br.Peek(n)
	ahead = bytes.Clone(ahead)
	putReader(c.br)
	c.br = nil
	r := bufio.NewReaderSize(io.MultiReader(bytes.NewReader(ahead), c.nc), max(16, n))
	_, _ = r.Peek(n) // from ahead alone: one Read of a bytes.Reader
	return r
}

func (w *fastResponse) WriteHeader(code int) {
	if w.hijacked {
		return // net/http logs it and does nothing
	}
	if code < 100 || code > 999 {
		panic(fmt.Sprintf("invalid WriteHeader code %v", code)) // as net/http
	}
	if w.status == 0 && code >= 200 {
		w.status = code
	}
}

func (w *fastResponse) Write(b []byte) (int, error) {
	if w.hijacked {
		return 0, http.ErrHijacked
	}
	if w.status == 0 {
		w.status = http.StatusOK
	}
	if !bodyAllowed(w.status) {
		return 0, http.ErrBodyNotAllowed
	}
	if w.err != nil {
		return 0, w.err
	}
	if !w.chunked && len(w.body)+len(b) <= fastBodyMax {
		w.body = append(w.body, b...)
		return len(b), nil
	}
	if !w.chunked {
		// Too long to keep: the head goes now, the body in chunks.
		w.drain()
		w.chunked, w.headKeep = true, w.keep()
		sniff := w.body
		if len(sniff) == 0 {
			sniff = b
		}
		w.out = appendHead(w.out[:0], w.status, w.header, -1, sniff, w.headKeep, w.c.now())
		w.out = appendChunk(w.out, w.body)
		w.body = w.body[:0]
		if w.err = w.c.write(w.out); w.err != nil {
			return 0, w.err
		}
	}
	w.out = appendChunk(w.out[:0], b)
	if w.err = w.c.write(w.out); w.err != nil {
		return 0, w.err
	}
	return len(b), nil
}

func appendChunk(dst, b []byte) []byte {
	if len(b) == 0 {
		return dst
	}
	dst = strconv.AppendInt(dst, int64(len(b)), 16)
	dst = append(dst, "\r\n"...)
	dst = append(dst, b...)
	return append(dst, "\r\n"...)
}

// finish sends what is left of the answer. It reports whether the
// connection serves another request.
func (w *fastResponse) finish() bool {
	if w.err != nil || w.hijacked {
		return false
	}
	if w.chunked {
		return w.c.write(append(w.out[:0], "0\r\n\r\n"...)) == nil && w.headKeep && w.keep()
	}
	if w.status == 0 {
		w.status = http.StatusOK
	}
	w.drain()
	keep := w.keep()
	w.out = appendHead(w.out[:0], w.status, w.header, len(w.body), w.body, keep, w.c.now())
	if bodyAllowed(w.status) {
		w.out = append(w.out, w.body...)
	}
	return w.c.write(w.out) == nil && keep
}

// now returns the Date header's value, formatted once a second.
// Between seconds it reads only the monotonic clock (monoNow).
func (c *fastConn) now() []byte {
	m := monoNow()
	if c.date != nil && m.Before(c.dateUntil) {
		return c.date
	}
	now := time.Now()
	c.date = now.UTC().AppendFormat(c.date[:0], http.TimeFormat)
	// The next second starts at most this far from m (taken before now).
	c.dateUntil = m.Add(time.Second - time.Duration(now.Nanosecond()))
	return c.date
}

func bodyAllowed(code int) bool {
	return code != http.StatusNoContent && code != http.StatusNotModified && code >= 200
}

// headersSetByServer are the header fields appendHead writes itself (Date
// only when the handler set none).
var headersSetByServer = map[string]bool{"Content-Length": true, "Transfer-Encoding": true, "Date": true, "Connection": true}

// appendHead appends the status line and header of an answer as net/http
// writes them for a handler that wrote its whole body at once: Date
// (unless h has one), Content-Length (length < 0: chunked instead), a
// Content-Type sniffed from body when none is set (none on a 304),
// "Connection: close" when the connection is not kept, then h's fields in
// key order. Fields with invalid names are
// left out, and control characters in values (line breaks included)
// become spaces: a client would refuse the whole answer over one of them,
// and a line break would start a header of its own.
func appendHead(dst []byte, code int, h http.Header, length int, body []byte, keep bool, date []byte) []byte {
	dst = append(dst, "HTTP/1.1 "...)
	dst = strconv.AppendInt(dst, int64(code), 10)
	dst = append(dst, ' ')
	if text := http.StatusText(code); text != "" {
		dst = append(dst, text...)
	} else {
		dst = append(dst, "status code "...)
		dst = strconv.AppendInt(dst, int64(code), 10)
	}
	dst = append(dst, "\r\n"...)
	if bodyAllowed(code) {
		if _, ok := h["Content-Type"]; !ok && len(body) > 0 {
			dst = appendField(dst, "Content-Type", http.DetectContentType(body))
		}
		if length >= 0 {
			dst = append(dst, "Content-Length: "...)
			dst = strconv.AppendInt(dst, int64(length), 10)
			dst = append(dst, "\r\n"...)
		} else {
			dst = append(dst, "Transfer-Encoding: chunked\r\n"...)
		}
	}
	if _, ok := h["Date"]; !ok {
		dst = append(dst, "Date: "...)
		dst = append(dst, date...)
		dst = append(dst, "\r\n"...)
	}
	if !keep {
		dst = append(dst, "Connection: close\r\n"...)
	}
	var buf [16]string
	keys := buf[:0]
	for k := range h {
		if (!headersSetByServer[k] || k == "Date") && validFieldName(k) && (k != "Content-Type" || code != http.StatusNotModified) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		for _, v := range h[k] {
			dst = appendField(dst, k, v)
		}
	}
	return append(dst, "\r\n"...)
}

func appendField(dst []byte, k, v string) []byte {
	dst = append(dst, k...)
	dst = append(dst, ": "...)
	v = strings.TrimSpace(v)
	for i := 0; i < len(v); i++ {
		c := v[i]
		if (c < ' ' && c != '\t') || c == 0x7f {
			c = ' '
		}
		dst = append(dst, c)
	}
	return append(dst, "\r\n"...)
}

func validFieldName(k string) bool { return connlimit.IsToken([]byte(k)) }
