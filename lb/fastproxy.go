package lb

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/beaconhq/beacon/connlimit"
)

// fastServe proxies one request of c whose head parsed (req): it routes it,
// sends it to an instance (retrying as the net/http path does) and writes
// the answer. It reports whether the connection may carry another request.
// A request the balancer would answer itself (no route, table not loaded,
// no instance, the hash strategy) goes to net/http before anything of it is
// consumed.
func (p *proxy) fastServe(c *fastConn, req *fastRequest) bool {
	svc, strip, t := p.fastRoute(req)
	if t == nil {
		c.handoff(c.s.hand)
		return false
	}
	return p.serveRouted(c, req, svc, strip, t)
}

// fastRoute finds the service of req and its table when the fast path
// proxies it; t is nil when net/http must take the request (no route,
// table not loaded, no instance, the hash strategy).
func (p *proxy) fastRoute(req *fastRequest) (svc *service, strip string, t *Table) {
	svc, strip = p.b.route(req.host, req.path)
	if svc == nil {
		return nil, "", nil
	}
	t = svc.table.Load()
	if t == nil || len(t.routed) == 0 || t.strategy == Hash {
		return nil, "", nil
	}
	return svc, strip, t
}

// serveRouted is fastServe once the request is known to be the fast
// path's (fastRoute).
func (p *proxy) serveRouted(c *fastConn, req *fastRequest, svc *service, strip string, t *Table) bool {
	cfg := &p.b.cfg
	c.s.served.Add(1)
	// The request is ours from here. The head's fields are strings already;
	// the forwarded lines are offsets into the head, which is copied before
	// the reader moves on.
	headLen := len(req.head)
	req.head = append(c.headCopy[:0], req.head...)
	c.headCopy = req.head
	_, _ = c.br.Discard(headLen)
	var body []byte
	if req.contentLength > 0 {
		bp := p.rp.BufferPool.(*bufferPool)
		bufp := bp.get()
		defer bp.put(bufp)
		if int(req.contentLength) <= cap(*bufp) {
			body = (*bufp)[:req.contentLength]
		} else {
			body = make([]byte, req.contentLength)
		}
		// Each read of the body is bounded by the read header timeout:
		// a slow but steady upload goes through, a stalled one is cut.
		for n := 0; n < len(body); {
			if c.br.Buffered() == 0 {
				c.beforeRead()
			}
			m, err := c.br.Read(body[n:])
			n += m
			if err != nil && n < len(body) {
				return p.fastBodyFailed(c, svc.name, t.mode, err)
			}
		}
	}
	c.ensureWriter()
	if c.bw.Buffered() > 0 {
		// Earlier answers of a pipelining client go out before this
		// request waits on an instance, as net/http sends each answer.
		if err := c.bw.Flush(); err != nil {
			return false
		}
	}
	var deadline time.Time
	if cfg.RequestTimeout > 0 {
		deadline = time.Now().Add(cfg.RequestTimeout)
	}
	svc.budget.deposit()
	st := &reqState{svc: svc, table: t, strip: strip, idempotent: req.idempotent}
	c.startWatch()
	keep, err := p.fastAttempts(c, req, st, body, deadline)
	c.ex = exchange{} // holds the instance connection and its answer: let go
	c.stopWatch()
	if c.watch.gone.Load() {
		p.b.logger.Debug("client went away", "service", svc.name, "status", statusClientGone)
		return false
	}
	if err != nil {
		status, eb, _ := p.classify(svc.name, nil, err)
		return c.writeError(status, eb, t.mode, req.close)
	}
	return keep && !req.close
}

// fastBodyFailed ends a request whose body the client did not send whole,
// before anything of it went to an instance: answered as the net/http path
// answers (classifyBody: 408 for a stall, nothing when the client left).
// The connection closes: what is left of the body cannot be told from a
// next request.
func (p *proxy) fastBodyFailed(c *fastConn, service, mode string, err error) bool {
	status, body, gone := p.classifyBody(service, err)
	if !gone {
		c.ensureWriter()
		c.writeError(status, body, mode, true)
	}
	return false
}

func (c *fastConn) ensureWriter() {
	if c.bw == nil {
		c.bw = bufio.NewWriterSize(c.nc, fastWriteBufSize)
	}
}

// fastAttempts tries the instances of st's table as retrier.RoundTrip does
// and writes the first answer that is kept. err: no answer was written, the
// caller answers with an error; otherwise keep says whether the client
// connection may be used again.
func (p *proxy) fastAttempts(c *fastConn, req *fastRequest, st *reqState, body []byte, deadline time.Time) (keep bool, err error) {
	cfg := &p.b.cfg
	t := st.table
	var triedBuf [4]int
	tried := triedBuf[:0]
	for attempt := 0; ; attempt++ {
		now := time.Now().UnixNano()
		i, e := t.pick(st.key, tried, now)
		if e == nil {
			return false, errNoInstance
		}
		tried = append(tried, i)
		head := c.outgoingHead(req, st.strip, e.target, cfg.PassHost, len(body))
		e.state.inflight.Add(1)
		e.state.requests.Add(1)
		start := time.Now()
		ex, err := p.upstream.exchange(&c.ex, e.target, head, body, req.method == http.MethodHead, deadline, false, c.setUpstream)
		if err != nil && retryStale(err, st.idempotent) && !expired(deadline) && !c.watch.gone.Load() {
			ex, err = p.upstream.exchange(&c.ex, e.target, head, body, req.method == http.MethodHead, deadline, true, c.setUpstream)
		}
		if errors.Is(err, errUnaskedUpgrade) {
			// As on net/http's path: the instance answered (101), the
			// request ends in 502 and is not retried.
			p.b.metrics.attempt(e.state, st.svc.name, e.ID, http.StatusSwitchingProtocols, nil, time.Since(start))
			e.state.inflight.Add(-1)
			c.setUpstream(nil)
			e.state.succeed(now, cfg)
			return false, err
		}
		status := 0
		if err == nil {
			status = ex.status
		}
		p.b.metrics.attempt(e.state, st.svc.name, e.ID, status, err, time.Since(start))
		more := attempt < cfg.MaxRetries && len(tried) < len(t.routed) && !expired(deadline)
		rt := retrier{p: p}
		if err != nil {
			c.setUpstream(nil)
			if rt.afterError(st, e, now, err, c.watch.gone.Load() || expired(deadline), more) {
				continue
			}
			return false, err
		}
		if rt.afterAnswer(st, e, now, ex.status, more) {
			ex.discard()
			c.setUpstream(nil)
			e.state.inflight.Add(-1)
			continue
		}
		keep = c.writeAnswer(ex, req, t.mode)
		c.setUpstream(nil)
		e.state.inflight.Add(-1)
		return keep, nil
	}
}

// retryStale reports whether err says the pooled connection was closed by
// the instance in a way that lets the request go again on a new one: not
// written at all, or written but idempotent.
func retryStale(err error, idempotent bool) bool {
	var stale errStaleConn
	return errors.As(err, &stale) && (idempotent || !stale.written)
}

func expired(deadline time.Time) bool {
	return !deadline.IsZero() && time.Now().After(deadline)
}

// outgoingHead builds the head sent to the instance at target: the request
// line with the prefix stripped, Host, the client's header lines as they
// came (hop-by-hop and client-set forwarding headers left out), then the
// forwarding headers, as proxy.forward and rewrite shape them.
func (c *fastConn) outgoingHead(req *fastRequest, strip, target string, passHost bool, bodyLen int) []byte {
	b := c.out[:0]
	b = append(b, req.method...)
	b = append(b, ' ')
	if strip != "" {
		b = append(b, stripPrefix(req.path, strip)...)
	} else {
		b = append(b, req.path...)
	}
	if req.hasQuery {
		b = append(b, '?')
		b = append(b, req.query...)
	}
	b = append(b, " HTTP/1.1\r\nHost: "...)
	if passHost {
		b = append(b, req.host...)
	} else {
		b = append(b, target...)
	}
	b = append(b, "\r\n"...)
	for _, l := range req.lines {
		if strip != "" && req.prefixSent && headerKind(req.head[l.from:l.from+bytes.IndexByte(req.head[l.from:l.to], ':')]) == hdrPrefix {
			continue // replaced by the stripped prefix
		}
		b = append(b, req.head[l.from:l.to]...)
	}
	if req.teTrailers {
		b = append(b, "Te: trailers\r\n"...)
	}
	if c.clientIP != "" {
		b = append(b, "X-Forwarded-For: "...)
		b = append(b, c.clientIP...)
		b = append(b, "\r\n"...)
	}
	b = append(b, "X-Forwarded-Host: "...)
	b = append(b, req.host...)
	b = append(b, "\r\nX-Forwarded-Proto: http\r\n"...)
	b = append(b, HeaderHops...)
	b = append(b, ": "...)
	b = strconv.AppendInt(b, int64(req.hops+1), 10)
	b = append(b, "\r\n"...)
	if strip != "" {
		b = append(b, "X-Forwarded-Prefix: "...)
		b = append(b, strip...)
		b = append(b, "\r\n"...)
	}
	if bodyLen > 0 || req.method == http.MethodPost || req.method == http.MethodPut || req.method == http.MethodPatch {
		b = append(b, "Content-Length: "...)
		b = strconv.AppendInt(b, int64(bodyLen), 10)
		b = append(b, "\r\n"...)
	}
	b = append(b, "\r\n"...)
	c.out = b
	return b
}

// exchange is one request sent on a connection to addr whose answer's head
// has been read: either parsed by the fast path (head set) or, when it is
// anything but a plain answer with a known length, by net/http (res set).
type exchange struct {
	c      *upConn
	status int
	head   []byte // the answer's head in c.br, not consumed yet
	length int64  // body length when head is set
	keep   bool   // the connection may carry another request
	res    *http.Response
}

// exchange sends head and body to addr on a pooled connection (a new one
// when fresh) and reads the answer's head, within the response header
// timeout and the request's deadline. use is told the connection, so
// that the caller can cut it (client gone, shutdown).
// ex is filled in and returned (the caller's, reused from request to
// request).
func (u *upstream) exchange(ex *exchange, addr string, head, body []byte, isHead bool, deadline time.Time, fresh bool, use func(net.Conn)) (*exchange, error) {
	dctx, cancel := dialContext(deadline)
	c, err := u.get(dctx, addr, fresh)
	cancel()
	if err != nil {
		return nil, err
	}
	use(c.nc)
	fail := func(err error) (*exchange, error) {
		c.nc.Close()
		return nil, err
	}
	// The answer's head is due within the response header timeout. On a
	// busy connection the deadline is not moved for every request: one set
	// up to a quarter of the timeout later than needed stays while it is
	// at least the timeout away (so a head may take up to 1.25x the
	// timeout). The request's own deadline is always exact. It is set
	// before the request goes out: sendThenWait waits under it.
	now := time.Now()
	rd := now.Add(u.respHeaderTimeout)
	switch {
	case !deadline.IsZero() && deadline.Before(rd):
		c.setReadDeadline(deadline)
	case c.rdl.IsZero() || c.rdl.Before(rd) || c.rdl.After(rd.Add(u.respHeaderTimeout/4)):
		c.setReadDeadline(rd.Add(u.respHeaderTimeout / 4))
	}
	if err := c.send(head, body, deadline); err != nil {
		if c.reused {
			err = errStaleConn{err: err}
		}
		return fail(err)
	}
	c.lr.n = u.maxResponseHeader
	*ex = exchange{c: c}
	ok, err := ex.parseHead(isHead)
	if err != nil {
		if c.reused && c.br.Buffered() == 0 && isConnGone(err) {
			err = errStaleConn{err: err, written: true}
		}
		return fail(err)
	}
	if !ok {
		// Not a plain answer: net/http's reader takes it from the start.
		var res *http.Response
		for {
			res, err = http.ReadResponse(c.br, &http.Request{Method: methodOf(isHead)})
			if err != nil {
				if errors.Is(err, errHeaderTooLarge) {
					err = fmt.Errorf("lb: response headers larger than %d bytes", u.maxResponseHeader)
				}
				return fail(err)
			}
			if res.StatusCode >= 200 || res.StatusCode == http.StatusSwitchingProtocols {
				break
			}
		}
		if res.StatusCode == http.StatusSwitchingProtocols {
			return fail(errUnaskedUpgrade)
		}
		ex.res, ex.status, ex.keep = res, res.StatusCode, !res.Close
	}
	c.lr.n = math.MaxInt64
	if ex.res == nil && c.br.Buffered() >= len(ex.head)+int(ex.length) {
		// The whole answer is read already: no read is left to bound, and
		// the header deadline may stay for the next request.
		return ex, nil
	}
	// The body is bounded by the request's deadline only, as on net/http's
	// path.
	c.setReadDeadline(deadline)
	return ex, nil
}

func methodOf(isHead bool) string {
	if isHead {
		return http.MethodHead
	}
	return http.MethodGet
}

// dialContext bounds a dial by the request's deadline, if any (the dialer
// has its own timeout).
func dialContext(deadline time.Time) (context.Context, context.CancelFunc) {
	if deadline.IsZero() {
		return context.Background(), func() {}
	}
	return context.WithDeadline(context.Background(), deadline)
}

// parseHead reads the answer's head into the connection's buffer and, when
// it is an HTTP/1.1 answer of 200 to 599 whose body length is known (one
// Content-Length, or none needed: HEAD, 204, 304) with no Transfer-Encoding,
// Trailer or Connection options other than close and no streaming type, sets
// the exchange's fields and returns true. false (no error): net/http's
// reader must take it.
func (ex *exchange) parseHead(isHead bool) (bool, error) {
	br := ex.c.br
	head, err := connlimit.PeekHead(br, nil)
	if errors.Is(err, connlimit.ErrNotPlain) {
		return false, nil
	}
	if err != nil {
		if br.Buffered() > 0 && isConnGone(err) {
			err = io.ErrUnexpectedEOF
		}
		return false, err
	}
	eol := bytes.Index(head, crlf)
	line := head[:eol]
	if len(line) < 12 || string(line[:9]) != "HTTP/1.1 " || (len(line) > 12 && line[12] != ' ') || !connlimit.FieldValue(line) {
		return false, nil
	}
	code, ok := connlimit.Digits(line[9:12], 3)
	status := int(code)
	if !ok || status < 200 || status > 599 {
		return false, nil
	}
	length := int64(-1)
	keep := true
	for pos := eol + 2; pos < len(head)-2; {
		name, value, next, ok := connlimit.NextHeader(head, pos)
		if !ok {
			return false, nil
		}
		pos = next
		switch respHeaderKind(name) {
		case respContentLength:
			n, ok := connlimit.Digits(value, 15)
			if length >= 0 || !ok {
				return false, nil
			}
			length = n
		case respConnection:
			close, ok := connlimit.ConnectionClose(value)
			if !ok {
				return false, nil
			}
			keep = keep && !close
		case respRefuse:
			return false, nil
		case respContentType:
			if len(value) >= len("text/event-stream") && strings.EqualFold(string(value[:len("text/event-stream")]), "text/event-stream") {
				return false, nil // flushed as it comes: net/http's path
			}
		}
	}
	if isHead || status == http.StatusNoContent || status == http.StatusNotModified {
		if status == http.StatusNoContent && length > 0 {
			return false, nil
		}
		ex.length = 0
	} else if length < 0 {
		return false, nil // read until close: net/http's path
	} else {
		ex.length = length
	}
	ex.head, ex.status, ex.keep = head, status, keep
	return true, nil
}

const (
	respPass = iota
	respContentLength
	respConnection
	respContentType
	respDrop   // hop-by-hop: not passed to the client
	respDate   // passed; noted so that none is added
	respRefuse // Transfer-Encoding, Trailer, Upgrade: net/http's path
)

func respHeaderKind(name []byte) int {
	var buf [20]byte
	lower := lowerName(name, &buf)
	if lower == nil {
		return respPass
	}
	switch string(lower) {
	case "content-length":
		return respContentLength
	case "connection":
		return respConnection
	case "content-type":
		return respContentType
	case "date":
		return respDate
	case "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization", "te":
		return respDrop
	case "transfer-encoding", "trailer", "upgrade":
		return respRefuse
	}
	return respPass
}

// discard reads the answer's body (up to maxDrainOnRetry) so that its
// connection can be used again, or closes the connection.
func (ex *exchange) discard() {
	if ex.res != nil {
		_, _ = io.CopyN(io.Discard, ex.res.Body, maxDrainOnRetry)
		ex.res.Body.Close()
		ex.c.nc.Close()
		return
	}
	if ex.length > maxDrainOnRetry {
		ex.c.nc.Close()
		return
	}
	_, _ = ex.c.br.Discard(len(ex.head))
	if _, err := ex.c.br.Discard(int(ex.length)); err != nil {
		ex.c.nc.Close()
		return
	}
	ex.release()
}

// release puts the connection back in the pool when it may carry another
// request, or closes it.
func (ex *exchange) release() {
	if ex.keep && ex.c.br.Buffered() == 0 {
		// The deadlines stay: the next exchange or roundTrip sets what it
		// needs, and the peek before reuse does not look at them.
		ex.c.u.put(ex.c)
		return
	}
	ex.c.nc.Close()
}

// writeAnswer sends the instance's answer to the client. It reports whether
// the client connection may carry another request.
func (c *fastConn) writeAnswer(ex *exchange, req *fastRequest, mode string) bool {
	if ex.res != nil {
		return c.writeResponse(ex, req, mode)
	}
	closing := req.close || c.s.conns.Closing()
	bw := c.bw
	head := ex.head
	eol := bytes.Index(head, crlf)
	bw.Write(head[:eol+2])
	hasDate := false
	for pos := eol + 2; pos < len(head)-2; {
		end := pos + bytes.Index(head[pos:], crlf)
		line := head[pos : end+2]
		pos = end + 2
		switch respHeaderKind(line[:bytes.IndexByte(line, ':')]) {
		case respDrop, respConnection:
			continue
		case respDate:
			hasDate = true
		}
		bw.Write(line)
	}
	if !hasDate {
		writeDate(bw)
	}
	writeModeHeaders(bw, mode)
	if closing {
		bw.WriteString("Connection: close\r\n")
	}
	bw.WriteString("\r\n")
	_, _ = ex.c.br.Discard(len(head))
	if ex.length > 0 {
		if err := c.copyBody(ex.c.br, ex.length); err != nil {
			// Part of the answer is sent: cut both connections so that
			// the client does not take it for whole.
			ex.c.nc.Close()
			return false
		}
	}
	ex.release()
	if closing || c.br.Buffered() == 0 {
		if err := bw.Flush(); err != nil {
			return false
		}
	}
	return !closing
}

// copyBody copies the answer's body, n bytes, from br to c's writer. It is
// io.CopyN without its LimitReader (an allocation per answer): what br holds
// already is copied from its buffer into the writer's; a rest of up to a
// buffer is read through br, a longer one in reads of the proxy's copy
// buffers (as io.CopyN's path, bufio.Writer.ReadFrom, did, without its
// allocation).
func (c *fastConn) copyBody(br *bufio.Reader, n int64) error {
	bw := c.bw
	for n > 0 {
		if br.Buffered() == 0 {
			if n > int64(br.Size()) {
				return c.copyLong(br, n)
			}
			if _, err := br.Peek(1); err != nil {
				return noEOF(err)
			}
		}
		b, _ := br.Peek(int(min(n, int64(br.Buffered()))))
		if _, err := bw.Write(b); err != nil {
			return err
		}
		_, _ = br.Discard(len(b))
		n -= int64(len(b))
	}
	return nil
}

// copyLong copies n bytes from br, whose buffer is empty, to c's writer in
// reads of a pooled copy buffer.
func (c *fastConn) copyLong(br *bufio.Reader, n int64) error {
	bp := c.s.b.proxy.rp.BufferPool.(*bufferPool)
	bufp := bp.get()
	defer bp.put(bufp)
	buf := *bufp
	for n > 0 {
		m, err := br.Read(buf[:min(n, int64(len(buf)))])
		if m > 0 {
			if _, werr := c.bw.Write(buf[:m]); werr != nil {
				return werr
			}
			n -= int64(m)
		}
		if err != nil && n > 0 {
			return noEOF(err)
		}
	}
	return nil
}

// noEOF turns the EOF of a body cut short into ErrUnexpectedEOF.
func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// writeResponse sends an answer net/http's reader parsed: its own length
// when known, otherwise chunked, flushing each piece when the length is
// unknown or the type is a stream; trailers follow the last chunk.
func (c *fastConn) writeResponse(ex *exchange, req *fastRequest, mode string) bool {
	res := ex.res
	closing := req.close || c.s.conns.Closing()
	bw := c.bw
	removeHopHeaders(res.Header)
	noBody := req.method == http.MethodHead || res.StatusCode == http.StatusNoContent || res.StatusCode == http.StatusNotModified
	chunked := !noBody && (res.ContentLength < 0 || len(res.Trailer) > 0)
	if !noBody {
		res.Header.Del("Content-Length")
	}
	fmt.Fprintf(bw, "HTTP/1.1 %03d %s\r\n", res.StatusCode, http.StatusText(res.StatusCode))
	_ = res.Header.Write(bw)
	if res.Header.Get("Date") == "" {
		writeDate(bw)
	}
	writeModeHeaders(bw, mode)
	switch {
	case chunked:
		bw.WriteString("Transfer-Encoding: chunked\r\n")
		if len(res.Trailer) > 0 {
			keys := make([]string, 0, len(res.Trailer))
			for k := range res.Trailer {
				keys = append(keys, k)
			}
			slices.Sort(keys)
			bw.WriteString("Trailer: " + strings.Join(keys, ", ") + "\r\n")
		}
	case !noBody:
		bw.WriteString("Content-Length: " + strconv.FormatInt(res.ContentLength, 10) + "\r\n")
	}
	if closing {
		bw.WriteString("Connection: close\r\n")
	}
	bw.WriteString("\r\n")
	flush := flushEvery(res)
	abort := func() bool {
		res.Body.Close()
		ex.c.nc.Close()
		return false
	}
	if !noBody {
		bp := c.s.b.proxy.rp.BufferPool.(*bufferPool)
		bufp := bp.get()
		defer bp.put(bufp)
		buf := *bufp
		for {
			n, rerr := res.Body.Read(buf)
			if n > 0 {
				if chunked {
					bw.WriteString(strconv.FormatInt(int64(n), 16) + "\r\n")
				}
				bw.Write(buf[:n])
				if chunked {
					bw.WriteString("\r\n")
				}
				if flush {
					if err := bw.Flush(); err != nil {
						return abort()
					}
				}
			}
			if rerr == io.EOF {
				break
			}
			if rerr != nil {
				return abort()
			}
		}
		if chunked {
			bw.WriteString("0\r\n")
			_ = res.Trailer.Write(bw)
			bw.WriteString("\r\n")
		}
	}
	res.Body.Close()
	if ex.keep && !res.Close {
		// net/http's body reader consumed exactly the body.
		ex.release()
	} else {
		ex.c.nc.Close()
	}
	if err := bw.Flush(); err != nil {
		return false
	}
	return !closing
}

func writeModeHeaders(bw *bufio.Writer, mode string) {
	switch mode {
	case ModePanic:
		bw.WriteString(HeaderPanic + ": true\r\n" + HeaderMode + ": " + mode + "\r\n")
	case ModeSpillover, ModeWarning:
		bw.WriteString(HeaderMode + ": " + mode + "\r\n")
	}
}

// dateCache holds the Date header line of the current second.
var dateCache atomic.Pointer[dateLine]

type dateLine struct {
	sec  int64
	line []byte
}

func writeDate(bw *bufio.Writer) {
	now := time.Now()
	d := dateCache.Load()
	if d == nil || d.sec != now.Unix() {
		d = &dateLine{sec: now.Unix(), line: []byte("Date: " + now.UTC().Format(http.TimeFormat) + "\r\n")}
		dateCache.Store(d)
	}
	bw.Write(d.line)
}

// writeError answers with the balancer's JSON error body. It reports
// whether the connection may carry another request.
func (c *fastConn) writeError(status int, body ErrorBody, mode string, closing bool) bool {
	b, _ := json.Marshal(body)
	b = append(b, '\n')
	closing = closing || c.s.conns.Closing()
	bw := c.bw
	fmt.Fprintf(bw, "HTTP/1.1 %03d %s\r\nContent-Type: application/json\r\nCache-Control: no-store\r\nContent-Length: %d\r\n", status, http.StatusText(status), len(b))
	writeDate(bw)
	writeModeHeaders(bw, mode)
	if closing {
		bw.WriteString("Connection: close\r\n")
	}
	bw.WriteString("\r\n")
	bw.Write(b)
	if err := bw.Flush(); err != nil {
		return false
	}
	return !closing
}
