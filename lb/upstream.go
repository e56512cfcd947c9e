package lb

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"sync"
	"time"
)

// upstream is the balancer's HTTP/1.1 client to the instances: a pool of
// keep-alive connections per instance address, each used by one request at
// a time, in the request's own goroutine. net/http's Transport runs a read
// and a write goroutine per connection and hands every request and response
// between them and the caller over channels; on the proxy's hot path (one
// small request, one small response) those hand-offs cost more than the
// proxying itself (docs/benchmarks.md). Here a request is written and its
// response read by the goroutine that serves it, and the connection goes back
// to the pool when the response body has been read to its end.
//
// What it does not do, it leaves to the caller: no HTTP/2 or TLS to the
// instances (the balancer speaks cleartext HTTP/1.1 to them), no proxy from
// the environment, no compression.
type upstream struct {
	dial              func(ctx context.Context, network, addr string) (net.Conn, error)
	idleTimeout       time.Duration
	respHeaderTimeout time.Duration
	maxIdlePerHost    int
	maxIdle           int
	maxResponseHeader int64

	mu     sync.Mutex
	idle   map[string][]*upConn // per address, most recently used last
	nidle  int
	sweep  *time.Timer
	closed bool
}

// upConn is one connection to an instance.
type upConn struct {
	u      *upstream
	addr   string
	nc     net.Conn
	lr     *limitReader
	br     *bufio.Reader
	bw     *bufio.Writer
	idleAt time.Time
	reused bool
	peek   *peeker // looks before each reuse whether the instance closed it
	wbuf   []byte  // a request's head and body, written at once (send)
	// rdl and wdl are the read and write deadlines set on nc (zero:
	// none), so that the fast path sets them only when they must change
	// (setting one costs a timer update; exchange).
	rdl, wdl time.Time
}

// setReadDeadline sets nc's read deadline to t and remembers it.
func (c *upConn) setReadDeadline(t time.Time) {
	if !t.Equal(c.rdl) {
		_ = c.nc.SetReadDeadline(t)
		c.rdl = t
	}
}

// setWriteDeadline sets nc's write deadline to t and remembers it.
func (c *upConn) setWriteDeadline(t time.Time) {
	if !t.Equal(c.wdl) {
		_ = c.nc.SetWriteDeadline(t)
		c.wdl = t
	}
}

// maxSentAtOnce bounds the requests send copies into one buffer to write
// them in one system call; a longer one goes through the buffered writer.
const maxSentAtOnce = 16 << 10

// send writes a request's head and body. When they fit in one write it
// writes them and waits for the answer in one step (peeker.sendThenWait);
// whatever was not written then goes out through the buffered writer, under
// the write deadline.
func (c *upConn) send(head, body []byte, deadline time.Time) error {
	req := head
	if len(body) > 0 {
		if len(head)+len(body) > maxSentAtOnce {
			req = nil
		} else {
			c.wbuf = append(append(c.wbuf[:0], head...), body...)
			req = c.wbuf
		}
	}
	n := 0
	if req != nil {
		var err error
		if n, err = c.peek.sendThenWait(req); err != nil {
			return err
		}
		if n == len(req) {
			return nil
		}
	}
	c.setWriteDeadline(deadline)
	if req != nil {
		_, _ = c.bw.Write(req[n:])
	} else {
		_, _ = c.bw.Write(head)
		_, _ = c.bw.Write(body)
	}
	return c.bw.Flush()
}

// limitReader bounds what the response headers may take, like Transport's
// MaxResponseHeaderBytes.
type limitReader struct {
	r io.Reader
	n int64
}

func (l *limitReader) Read(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, errHeaderTooLarge
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	return n, err
}

var errHeaderTooLarge = errors.New("lb: the instance's response headers are too large")

// aLongTimeAgo is a deadline in the past: it interrupts blocked reads and
// writes at once.
var aLongTimeAgo = time.Unix(1, 0)

const (
	upstreamBufSize          = 4 << 10
	defaultMaxResponseHeader = 1 << 20
)

func newUpstream(dial func(ctx context.Context, network, addr string) (net.Conn, error), cfg *Config) *upstream {
	return &upstream{
		dial:              dial,
		idleTimeout:       cfg.UpstreamIdleTimeout,
		respHeaderTimeout: cfg.ResponseHeaderTimeout,
		maxIdlePerHost:    512,
		maxIdle:           4096,
		maxResponseHeader: defaultMaxResponseHeader,
		idle:              map[string][]*upConn{},
	}
}

// get returns an idle connection to addr, or dials a new one (always when
// fresh).
func (u *upstream) get(ctx context.Context, addr string, fresh bool) (*upConn, error) {
	now := time.Now()
	for !fresh {
		u.mu.Lock()
		list := u.idle[addr]
		if len(list) == 0 {
			u.mu.Unlock()
			break
		}
		c := list[len(list)-1]
		list[len(list)-1] = nil
		u.idle[addr] = list[:len(list)-1]
		u.nidle--
		u.mu.Unlock()
		idle := now.Sub(c.idleAt)
		if u.idleTimeout > 0 && idle > u.idleTimeout {
			c.nc.Close()
			continue
		}
		// Look before sending on a pooled connection: the instance may
		// have closed it (its keep-alive timeout), and bytes it sent
		// unasked after its last answer must not be read as the answer to
		// this request, perhaps another client's (http.Transport and
		// nginx watch idle connections for the same reason). One
		// non-blocking peek per reuse.
		if !c.peek.connAlive() {
			c.nc.Close()
			continue
		}
		c.reused = true
		return c, nil
	}
	nc, err := u.dial(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	c := &upConn{u: u, addr: addr, nc: nc, lr: &limitReader{r: nc, n: math.MaxInt64}, peek: newPeeker(nc)}
	c.br = bufio.NewReaderSize(c.lr, upstreamBufSize)
	c.bw = bufio.NewWriterSize(nc, upstreamBufSize)
	return c, nil
}

// put returns c to the idle pool (or closes it when the pool is full).
func (u *upstream) put(c *upConn) {
	c.idleAt = time.Now()
	u.mu.Lock()
	if u.closed || u.nidle >= u.maxIdle || len(u.idle[c.addr]) >= u.maxIdlePerHost {
		u.mu.Unlock()
		c.nc.Close()
		return
	}
	u.idle[c.addr] = append(u.idle[c.addr], c)
	u.nidle++
	if u.sweep == nil && u.idleTimeout > 0 {
		u.sweep = time.AfterFunc(u.idleTimeout, u.closeStale)
	}
	u.mu.Unlock()
}

// closeStale closes the connections idle for longer than idleTimeout.
func (u *upstream) closeStale() {
	cutoff := time.Now().Add(-u.idleTimeout)
	var stale []*upConn
	u.mu.Lock()
	for addr, list := range u.idle {
		keep := list[:0]
		for _, c := range list {
			if c.idleAt.Before(cutoff) {
				stale = append(stale, c)
			} else {
				keep = append(keep, c)
			}
		}
		clear(list[len(keep):])
		if len(keep) == 0 {
			delete(u.idle, addr)
		} else {
			u.idle[addr] = keep
		}
	}
	u.nidle -= len(stale)
	u.sweep = nil
	if u.nidle > 0 && !u.closed {
		u.sweep = time.AfterFunc(u.idleTimeout/2, u.closeStale)
	}
	u.mu.Unlock()
	for _, c := range stale {
		c.nc.Close()
	}
}

// close closes every idle connection; connections in use close when their
// request ends.
func (u *upstream) close() {
	u.mu.Lock()
	u.closed = true
	if u.sweep != nil {
		u.sweep.Stop()
		u.sweep = nil
	}
	idle := u.idle
	u.idle = map[string][]*upConn{}
	u.nidle = 0
	u.mu.Unlock()
	for _, list := range idle {
		for _, c := range list {
			c.nc.Close()
		}
	}
}

// errStaleConn is a pooled connection that the instance closed before it
// answered anything: the request may be sent again on a new connection.
type errStaleConn struct {
	err     error
	written bool // the request was written (the instance may have read it)
}

func (e errStaleConn) Error() string {
	return "lb: connection closed by the instance: " + e.err.Error()
}
func (e errStaleConn) Unwrap() error { return e.err }

// roundTrip sends req to req.URL.Host and reads the response headers. The
// response body, read to its end, gives the connection back to the pool;
// closed early, it closes the connection. An errStaleConn says that a
// connection from the pool had been closed by the instance: the caller may
// send the request again, on a new connection (fresh).
func (u *upstream) roundTrip(req *http.Request, fresh bool) (*http.Response, error) {
	ctx := req.Context()
	c, err := u.get(ctx, req.URL.Host, fresh)
	if err != nil {
		return nil, err
	}
	// A request that ends (client gone, RequestTimeout) interrupts the
	// connection's reads and writes; such a connection is not reused.
	stop := context.AfterFunc(ctx, func() { _ = c.nc.SetDeadline(aLongTimeAgo) })
	fail := func(err error) (*http.Response, error) {
		stop()
		c.nc.Close()
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, fmt.Errorf("%w (%v)", ctxErr, err)
		}
		return nil, err
	}
	c.setWriteDeadline(time.Time{}) // one the fast path left
	if err := req.Write(c.bw); err != nil {
		return fail(err)
	}
	if err := c.bw.Flush(); err != nil {
		if c.reused {
			err = errStaleConn{err: err}
		}
		return fail(err)
	}
	if u.respHeaderTimeout > 0 {
		c.setReadDeadline(time.Now().Add(u.respHeaderTimeout))
	}
	var resp *http.Response
	for {
		c.lr.n = u.maxResponseHeader
		resp, err = http.ReadResponse(c.br, req)
		if err != nil {
			if c.reused && c.br.Buffered() == 0 && isConnGone(err) {
				err = errStaleConn{err: err, written: true}
			} else if errors.Is(err, errHeaderTooLarge) {
				err = fmt.Errorf("lb: response headers larger than %d bytes", u.maxResponseHeader)
			}
			return fail(err)
		}
		// Informational answers (100 Continue, 103 Early Hints) precede the
		// real one; 101 Switching Protocols is the real one.
		if resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols {
			break
		}
	}
	c.lr.n = math.MaxInt64
	if u.respHeaderTimeout > 0 {
		c.setReadDeadline(time.Time{})
		if ctx.Err() != nil {
			// The request ended while the deadline was reset: make sure
			// the connection stays interrupted.
			_ = c.nc.SetDeadline(aLongTimeAgo)
		}
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		// The connection now belongs to the upgraded protocol.
		stop()
		resp.Body = &upgradedConn{br: c.br, nc: c.nc}
		return resp, nil
	}
	resp.Body = &upBody{rc: resp.Body, c: c, stop: stop, keep: !resp.Close && !req.Close}
	return resp, nil
}

// isConnGone reports an error of a connection the instance closed.
func isConnGone(err error) bool {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return true
	}
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "read" && !op.Timeout()
}

// upBody is a response body on a pooled connection.
type upBody struct {
	rc   io.ReadCloser
	c    *upConn
	stop func() bool
	keep bool
	done bool
}

func (b *upBody) Read(p []byte) (int, error) {
	if b.done {
		return 0, io.EOF
	}
	n, err := b.rc.Read(p)
	if err == io.EOF {
		b.release(true)
	}
	return n, err
}

func (b *upBody) Close() error {
	b.release(false)
	return nil
}

// release gives the connection back when the body was read to its end and
// the connection may carry another request; otherwise it closes it.
func (b *upBody) release(eof bool) {
	if b.done {
		return
	}
	b.done = true
	interrupted := !b.stop()
	if eof && b.keep && !interrupted && b.c.br.Buffered() == 0 {
		b.c.u.put(b.c)
		return
	}
	b.c.nc.Close()
}

// upgradedConn is the body of a 101 response: the connection itself, read
// through what was already buffered.
type upgradedConn struct {
	br *bufio.Reader
	nc net.Conn
}

func (u *upgradedConn) Read(p []byte) (int, error)  { return u.br.Read(p) }
func (u *upgradedConn) Write(p []byte) (int, error) { return u.nc.Write(p) }
func (u *upgradedConn) Close() error                { return u.nc.Close() }
