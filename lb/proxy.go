package lb

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Response headers the balancer sets.
const (
	// HeaderPanic is "true" on responses routed in panic mode.
	HeaderPanic = "X-Beacon-Lb-Panic"
	// HeaderMode is the mode of the table that routed the request when it
	// is not "normal" or "zone" (spillover, panic, warning).
	HeaderMode = "X-Beacon-Lb-Mode"
)

// Error codes of the JSON bodies the balancer answers with.
const (
	CodeNoRoute       = "no_route"
	CodeNotReady      = "not_ready"
	CodeNoInstance    = "no_healthy_instance"
	CodeUnreachable   = "upstream_unreachable"
	CodeTimeout       = "upstream_timeout"
	CodeShuttingDown  = "shutting_down"
	CodeBadBody       = "bad_request_body"
	CodeBodyTimeout   = "request_body_timeout"
	statusClientGone  = 499 // logged only: the client is not there to read it
	maxDrainOnRetry   = 64 << 10
	copyBufferSize    = 32 << 10
	upstreamHostDummy = "upstream.invalid"
)

// ErrorBody is the JSON body of the balancer's own error responses.
type ErrorBody struct {
	Error   string `json:"error"`
	Code    string `json:"code"`
	Service string `json:"service,omitempty"`
}

// errNoInstance ends a request whose every candidate has been tried.
var errNoInstance = errors.New("lb: no instance left to try")

// clientBodyError ends a request whose body the client did not send whole
// (malformed framing, a stall, the client gone): the client's fault, never
// the instance's, and no other instance would fare better.
type clientBodyError struct{ err error }

func (e clientBodyError) Error() string { return "lb: reading the request body: " + e.err.Error() }
func (e clientBodyError) Unwrap() error { return e.err }

// proxy routes requests through the tables with httputil.ReverseProxy: the
// handler chooses the service, Rewrite shapes the outgoing request, and the
// Transport (a retrier) picks instances and retries.
type proxy struct {
	b        *Balancer
	rp       *httputil.ReverseProxy
	upstream *upstream
}

type ctxKey struct{}

// reqState travels with a request through the ReverseProxy to the retrier.
type reqState struct {
	svc        *service
	table      *Table
	key        Key
	strip      string
	idempotent bool
	body       *replayBody
}

func newProxy(b *Balancer) *proxy {
	cfg := &b.cfg
	p := &proxy{b: b}
	p.upstream = newUpstream((&net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: 30 * time.Second, ControlContext: b.guard.control}).DialContext, cfg)
	p.rp = &httputil.ReverseProxy{
		Rewrite:      p.rewrite,
		Transport:    &retrier{p: p},
		ErrorHandler: p.errorHandler,
		BufferPool:   newBufferPool(),
		ErrorLog:     b.logger.StandardLogger(&hclog.StandardLoggerOptions{ForceLevel: hclog.Debug}),
	}
	return p
}

func (p *proxy) close() { p.upstream.close() }

// ServeHTTP routes one request.
func (p *proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if refuseLoop(w, r, p.b.cfg.MaxHops) {
		return
	}
	svc, strip := p.b.routeFor(r)
	if svc == nil {
		writeError(w, http.StatusNotFound, ErrorBody{
			Error: fmt.Sprintf("no service routes host %q or path %q", r.Host, r.URL.Path), Code: CodeNoRoute,
		})
		return
	}
	t := svc.table.Load()
	if t == nil {
		reg := svc.reg.Load()
		msg := fmt.Sprintf("the routing table of service %q is not loaded yet", svc.name)
		if reg.LastError != "" {
			msg += " (registry: " + reg.LastError + ")"
		}
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, ErrorBody{Error: msg, Code: CodeNotReady, Service: svc.name})
		return
	}
	if len(t.routed) == 0 {
		svc.unavailable.Add(1)
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, ErrorBody{Error: noInstanceMessage(t), Code: CodeNoInstance, Service: svc.name})
		return
	}
	switch t.mode {
	case ModePanic:
		w.Header().Set(HeaderPanic, "true")
		w.Header().Set(HeaderMode, t.mode)
	case ModeSpillover, ModeWarning:
		w.Header().Set(HeaderMode, t.mode)
	}
	st := &reqState{svc: svc, table: t, strip: strip, idempotent: idempotent(r)}
	if t.strategy == Hash {
		st.key = requestKey(r, t.hashKey)
	}
	if r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0 {
		st.body = &replayBody{src: boundBodyReads(w, r.Body, p.b.cfg.ReadHeaderTimeout), limit: p.b.cfg.RetryBufferBytes}
		r.Body = st.body
	}
	ctx := context.WithValue(r.Context(), ctxKey{}, st)
	if d := p.b.cfg.RequestTimeout; d > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d)
		defer cancel()
	}
	svc.budget.deposit()
	if isUpgrade(r) {
		p.rp.ServeHTTP(w, r.WithContext(ctx))
		return
	}
	p.forward(w, r.WithContext(ctx))
}

func noInstanceMessage(t *Table) string {
	return fmt.Sprintf("no instance of service %q can take traffic: %d registered, %d available (not draining or in maintenance), %d passing",
		t.service, len(t.entries), t.available, t.passing)
}

// idempotent reports whether r may be sent twice: an idempotent method, or
// a request that carries an idempotency key.
func idempotent(r *http.Request) bool {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		return true
	}
	return r.Header.Get("Idempotency-Key") != "" || r.Header.Get("X-Idempotency-Key") != ""
}

// requestKey extracts the hash key of r.
func requestKey(r *http.Request, k HashKey) Key {
	switch k.Source {
	case "header":
		if v := r.Header.Get(k.Name); v != "" {
			return KeyOf(v)
		}
	case "cookie":
		if c, err := r.Cookie(k.Name); err == nil && c.Value != "" {
			return KeyOf(c.Value)
		}
	default:
		host, _, err := net.SplitHostPort(r.RemoteAddr)
		if err != nil {
			host = r.RemoteAddr
		}
		if host != "" {
			return KeyOf(host)
		}
	}
	return Key{}
}

// rewrite shapes the outgoing request: the instance is chosen later, by the
// retrier, so the URL's host is a placeholder here.
func (p *proxy) rewrite(pr *httputil.ProxyRequest) {
	st := pr.In.Context().Value(ctxKey{}).(*reqState)
	pr.Out.URL.Scheme = "http"
	pr.Out.URL.Host = upstreamHostDummy
	if st.strip != "" {
		pr.Out.URL.Path = stripPrefix(pr.In.URL.Path, st.strip)
		if pr.In.URL.RawPath != "" {
			pr.Out.URL.RawPath = stripPrefix(pr.In.URL.RawPath, st.strip)
		}
	}
	setForwarded(pr.In, pr.Out.Header, st.strip)
	if p.b.cfg.PassHost {
		pr.Out.Host = pr.In.Host
	} else {
		pr.Out.Host = ""
	}
}

// setForwarded sets the headers that tell the instance where the request
// came from, as httputil.ProxyRequest.SetXForwarded does, and the hop count
// and stripped prefix. The values share one backing array: one allocation
// instead of one per header on the proxy's hot path. The keys are already
// canonical.
func setForwarded(in *http.Request, h http.Header, strip string) {
	vals := new([5]string)
	set := func(i int, k, v string) {
		vals[i] = v
		h[k] = vals[i : i+1 : i+1]
	}
	if clientIP, _, err := net.SplitHostPort(in.RemoteAddr); err == nil {
		if prior := h["X-Forwarded-For"]; len(prior) > 0 {
			clientIP = strings.Join(prior, ", ") + ", " + clientIP
		}
		set(0, "X-Forwarded-For", clientIP)
	} else {
		delete(h, "X-Forwarded-For")
	}
	set(1, "X-Forwarded-Host", in.Host)
	if in.TLS == nil {
		set(2, "X-Forwarded-Proto", "http")
	} else {
		set(2, "X-Forwarded-Proto", "https")
	}
	set(3, HeaderHops, strconv.Itoa(hops(in)+1))
	if strip != "" {
		set(4, "X-Forwarded-Prefix", strip)
	}
}

func stripPrefix(path, prefix string) string {
	rest := strings.TrimPrefix(path, prefix)
	if rest == "" || rest[0] != '/' {
		rest = "/" + rest
	}
	return rest
}

// errorHandler answers when no instance gave a response.
func (p *proxy) errorHandler(w http.ResponseWriter, r *http.Request, err error) {
	st, _ := r.Context().Value(ctxKey{}).(*reqState)
	service := ""
	if st != nil {
		service = st.svc.name
	}
	status, body, gone := p.classify(service, r.Context().Err(), err)
	if gone {
		// Returning would let net/http answer an implicit 200: the
		// connection is cut instead, as the fast path cuts it.
		panic(http.ErrAbortHandler)
	}
	if errors.As(err, new(clientBodyError)) {
		// What is left of the body cannot be told from a next request.
		w.Header().Set("Connection", "close")
	}
	writeError(w, status, body)
}

// classify turns the error that ended a request into the status and body of
// the answer; gone says that the client left and nothing is answered.
func (p *proxy) classify(service string, ctxErr, err error) (status int, body ErrorBody, gone bool) {
	body = ErrorBody{Service: service}
	status = http.StatusBadGateway
	var ne net.Error
	var cbe clientBodyError
	switch {
	case errors.As(err, &cbe):
		// Before the context: net/http cancels it on the read error.
		return p.classifyBody(service, cbe.err)
	case ctxErr != nil && errors.Is(ctxErr, context.Canceled):
		p.b.logger.Debug("client went away", "service", service, "status", statusClientGone)
		return 0, body, true
	case errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()):
		status, body.Code = http.StatusGatewayTimeout, CodeTimeout
		body.Error = fmt.Sprintf("no instance of service %q answered in time: %v", service, err)
	case errors.Is(err, errNoInstance):
		status, body.Code = http.StatusServiceUnavailable, CodeNoInstance
		body.Error = fmt.Sprintf("every instance of service %q tried has failed", service)
	default:
		body.Code = CodeUnreachable
		body.Error = fmt.Sprintf("no instance of service %q could be reached: %v", service, err)
	}
	p.b.logger.Debug("proxy error", "service", service, "status", status, "error", err)
	return status, body, false
}

// classifyBody turns the error of a read of the client's request body into
// the answer: 408 for a stall, nothing for a client that closed or reset
// its connection before the body's end, 400 for malformed framing
// (chunked encoding net/http's reader rejects).
func (p *proxy) classifyBody(service string, err error) (status int, body ErrorBody, gone bool) {
	body = ErrorBody{Service: service}
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		status, body.Code = http.StatusRequestTimeout, CodeBodyTimeout
		body.Error = fmt.Sprintf("the request body stalled: no byte for %v", p.b.cfg.ReadHeaderTimeout)
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.As(err, new(*net.OpError)):
		p.b.logger.Debug("client went away during its request body", "service", service, "status", statusClientGone, "error", err)
		return 0, body, true
	default:
		status, body.Code = http.StatusBadRequest, CodeBadBody
		body.Error = "malformed request body: " + err.Error()
	}
	p.b.logger.Debug("request body error", "service", service, "status", status, "error", err)
	return status, body, false
}

func writeError(w http.ResponseWriter, status int, body ErrorBody) {
	b, _ := json.Marshal(body)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

// retrier is the ReverseProxy's Transport: it picks an instance from the
// request's table, sends the request there, records the outcome (in flight,
// failures, ejection) and tries another instance when that is safe.
type retrier struct{ p *proxy }

func (rt *retrier) RoundTrip(req *http.Request) (*http.Response, error) {
	st, ok := req.Context().Value(ctxKey{}).(*reqState)
	if !ok {
		return nil, errors.New("lb: request without routing state")
	}
	cfg := &rt.p.b.cfg
	t := st.table
	var triedBuf [4]int
	tried := triedBuf[:0]
	for attempt := 0; ; attempt++ {
		now := time.Now().UnixNano()
		i, e := t.pick(st.key, tried, now)
		if e == nil {
			return nil, errNoInstance
		}
		tried = append(tried, i)
		out := *req
		u := *req.URL
		u.Host = e.target
		out.URL = &u
		if st.body != nil {
			out.Body = st.body.attempt()
		}
		e.state.inflight.Add(1)
		e.state.requests.Add(1)
		start := time.Now()
		resp, err := rt.p.upstream.roundTrip(&out, false)
		if err != nil && st.body.clientErr() != nil {
			// The client's body failed, not the instance: nothing is
			// counted against it (no attempt, failure or ejection), and
			// the request ends.
			e.state.inflight.Add(-1)
			return nil, clientBodyError{st.body.clientErr()}
		}
		if stale := (errStaleConn{}); errors.As(err, &stale) && req.Context().Err() == nil &&
			(st.idempotent || !stale.written) && st.body.replayable() {
			// The instance had closed the pooled connection: not its
			// fault, and the request goes again on a new one.
			if st.body != nil {
				out.Body = st.body.attempt()
			}
			resp, err = rt.p.upstream.roundTrip(&out, true)
		}
		status := 0
		if err == nil {
			status = resp.StatusCode
		}
		rt.p.b.metrics.attempt(e.state, st.svc.name, e.ID, status, err, time.Since(start))
		more := attempt < cfg.MaxRetries && len(tried) < len(t.routed) && req.Context().Err() == nil
		if err != nil {
			if rt.afterError(st, e, now, err, req.Context().Err() != nil, more) {
				continue
			}
			return nil, err
		}
		if rt.afterAnswer(st, e, now, resp.StatusCode, more) {
			_, _ = io.CopyN(io.Discard, resp.Body, maxDrainOnRetry)
			resp.Body.Close()
			e.state.inflight.Add(-1)
			continue
		}
		resp.Body = countBody(resp.Body, e.state)
		return resp, nil
	}
}

// afterError settles an attempt on e that got no answer and reports whether
// to try another instance. ended: the request itself ended (client gone,
// request timeout), which is not the instance's fault and ends the request.
func (rt *retrier) afterError(st *reqState, e *entry, now int64, err error, ended, more bool) bool {
	e.state.inflight.Add(-1)
	if ended {
		return false
	}
	rt.failed(st, e, now)
	return more && rt.canRetryError(st, err) && rt.budget(st)
}

// afterAnswer counts e's answer with status for outlier detection and
// reports whether to drop it and try another instance (a retry status, an
// idempotent request whose body can be sent again, budget left).
func (rt *retrier) afterAnswer(st *reqState, e *entry, now int64, status int, more bool) bool {
	cfg := &rt.p.b.cfg
	if cfg.outlierStatus(status) {
		rt.failed(st, e, now)
	} else {
		e.state.succeed(now, cfg)
	}
	return slices.Contains(cfg.RetryStatuses, status) && more && st.idempotent && st.body.replayable() && rt.budget(st)
}

func (rt *retrier) failed(st *reqState, e *entry, now int64) {
	cfg := &rt.p.b.cfg
	if d := e.state.fail(now, cfg, func() bool { return st.table.canEject(cfg, now) }); d > 0 {
		rt.p.b.logger.Warn("instance ejected after consecutive failures", "service", st.svc.name, "instance", e.ID, "for", d)
		rt.p.b.metrics.ejected(st.svc.name, e.ID)
	}
}

// canRetryError: a request that surely did not reach the instance (the
// connection could not be made and nothing of the body was read) may go
// elsewhere whatever its method; one that may have reached it only if it is
// idempotent and its body can be sent again.
func (rt *retrier) canRetryError(st *reqState, err error) bool {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" && st.body.untouched() {
		return true
	}
	return st.idempotent && st.body.replayable()
}

func (rt *retrier) budget(st *reqState) bool {
	if st.svc.budget.withdraw(time.Now().UnixNano()) {
		st.svc.retries.Add(1)
		return true
	}
	st.svc.budgetOut.Add(1)
	return false
}

// replayBody wraps a request body so that it can be sent again: it keeps
// what it reads up to a limit. Its Close does nothing (the server closes
// the real body when the handler returns). The mutex is per request, never
// shared.
type replayBody struct {
	mu       sync.Mutex
	src      io.ReadCloser
	limit    int
	buf      []byte
	read     int64
	eof      bool
	overflow bool
	srcErr   error // the error reading src gave, if any: the client's
}

func (b *replayBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, err := b.src.Read(p)
	b.read += int64(n)
	if err != nil && err != io.EOF && b.srcErr == nil {
		b.srcErr = err
	}
	if !b.overflow {
		if len(b.buf)+n > b.limit {
			b.overflow, b.buf = true, nil
		} else {
			b.buf = append(b.buf, p[:n]...)
		}
	}
	if err == io.EOF {
		b.eof = true
	}
	return n, err
}

func (b *replayBody) Close() error { return nil }

// untouched reports whether nothing was read yet (true for no body).
func (b *replayBody) untouched() bool {
	if b == nil {
		return true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.read == 0
}

// clientErr returns the error reading the client's body gave, if any.
func (b *replayBody) clientErr() error {
	if b == nil {
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.srcErr
}

// replayable reports whether the body can be sent again in full.
func (b *replayBody) replayable() bool {
	if b == nil {
		return true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.srcErr == nil && (b.read == 0 || (b.eof && !b.overflow))
}

// boundBodyReads bounds each read of a request body on the net/http path
// by d (Config.ReadHeaderTimeout), as the fast path bounds its reads: a
// slow, steady upload passes, a stalled one fails with a timeout.
// net/http's server offers only ReadTimeout, which would bound the whole
// request. d 0: no bound.
func boundBodyReads(w http.ResponseWriter, body io.ReadCloser, d time.Duration) io.ReadCloser {
	if d <= 0 {
		return body
	}
	return &boundedBody{ReadCloser: body, rc: http.NewResponseController(w), d: d}
}

type boundedBody struct {
	io.ReadCloser
	rc *http.ResponseController
	d  time.Duration
}

func (b *boundedBody) Read(p []byte) (int, error) {
	_ = b.rc.SetReadDeadline(time.Now().Add(b.d))
	n, err := b.ReadCloser.Read(p)
	switch {
	case err == io.EOF:
		// The connection is net/http's again (its read in the background
		// notices a client that leaves): no deadline.
		_ = b.rc.SetReadDeadline(time.Time{})
	case err != nil:
		// What net/http reads of the body before answering (it discards
		// the rest) must fail at once, not wait for the client.
		_ = b.rc.SetReadDeadline(aLongTimeAgo)
	}
	return n, err
}

// attempt returns the body to send with the next attempt.
func (b *replayBody) attempt() io.ReadCloser {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.read == 0 {
		return b
	}
	return io.NopCloser(bytes.NewReader(b.buf))
}

// countBody keeps a request counted in flight until its response body is
// closed. A 101 Switching Protocols body is the upgraded connection and
// must stay writable.
func countBody(rc io.ReadCloser, st *instanceState) io.ReadCloser {
	c := countedBody{rc: rc, st: st, done: new(atomic.Bool)}
	if rw, ok := rc.(io.ReadWriteCloser); ok {
		return &countedConn{countedBody: c, w: rw}
	}
	return &c
}

type countedBody struct {
	rc   io.ReadCloser
	st   *instanceState
	done *atomic.Bool
}

func (c *countedBody) Read(p []byte) (int, error) { return c.rc.Read(p) }

func (c *countedBody) Close() error {
	if c.done.CompareAndSwap(false, true) {
		c.st.inflight.Add(-1)
	}
	return c.rc.Close()
}

type countedConn struct {
	countedBody
	w io.Writer
}

func (c *countedConn) Write(p []byte) (int, error) { return c.w.Write(p) }

// bufferPool recycles the proxy's copy buffers.
type bufferPool struct{ pool sync.Pool }

func newBufferPool() *bufferPool {
	return &bufferPool{pool: sync.Pool{New: func() any { b := make([]byte, copyBufferSize); return &b }}}
}

func (p *bufferPool) Get() []byte { return *(p.pool.Get().(*[]byte)) }

func (p *bufferPool) Put(b []byte) {
	if cap(b) == copyBufferSize {
		b = b[:copyBufferSize]
		p.pool.Put(&b)
	}
}

// get and put are Get and Put without the allocation of a slice header.
func (p *bufferPool) get() *[]byte  { return p.pool.Get().(*[]byte) }
func (p *bufferPool) put(b *[]byte) { p.pool.Put(b) }
