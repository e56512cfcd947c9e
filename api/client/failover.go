package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strings"
	"sync/atomic"
	"time"
)

// The fail-over policy, the one every user of the client gets (the CLI,
// the load balancer's registry catalog, `beacon demo`, Watch):
//
//   - A call tries the agents in turn, starting with the one that answered
//     last, each at most once. With more than one agent, each attempt is
//     bounded by AttemptTimeout from connecting to the response headers (a
//     blocking query's attempt by its wait plus that), so an agent that
//     hangs (a paused process, a black-holed address) costs one attempt, not
//     the whole call. With one agent, Timeout alone bounds the call.
//   - A read moves to the next agent on a connection failure, an attempt
//     timeout, a 5xx or a 429 (an agent shutting down, cut off from its
//     leader, or holding too many blocking queries). A read answered by an
//     agent that knows no leader is returned, and the next call starts
//     with another agent.
//   - A blocking query blocks on the first agent only. When that attempt
//     fails (its agent died mid-wait, say), the next agents are asked
//     without waiting, as a plain read with a plain read's budget (Timeout
//     for the rest of the call, AttemptTimeout an attempt): the caller
//     learns at once that another agent answers, possibly with the index
//     it already had, as when a wait ends, and blocks there on its next
//     call. A retry that waited too would start late in the call and be
//     cut off by the first attempt's deadline, on a healthy agent.
//   - A write moves to the next agent only when that is safe: it was not
//     sent (the connection failed, or the agent never asked for the body:
//     with more than one agent, writes carry "Expect: 100-continue"), or
//     the agent answered 503 no_leader or not_leader, which it does before
//     applying anything. Otherwise (the write was sent and no answer came,
//     or the answer is unknown_outcome) the error is returned: the write
//     may have been applied.
//   - Any other answer (2xx, 4xx) ends the call. When every agent failed,
//     the error names each address tried and why (*AttemptsError).

// DefaultAttemptTimeout is AttemptTimeout's default.
const DefaultAttemptTimeout = 2 * time.Second

// ErrAttemptTimeout is the error of an attempt that got no response
// headers within the attempt timeout.
var ErrAttemptTimeout = errors.New("no response within the attempt timeout")

// errCallBound is the cause of a call's context when the call's own
// Timeout ran out (not the caller's deadline).
var errCallBound = errors.New("client: the call's timeout ran out")

// NewTransport returns the HTTP transport the client uses when it is given
// no HTTPClient: HTTPS with tc when tc is set, up to 64 idle connections per
// agent, and a "100 Continue" wait as long as attemptTimeout, so a write's
// body is not sent to an agent that does not answer.
func NewTransport(tc *tls.Config, attemptTimeout time.Duration) *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = 64
	t.TLSClientConfig = tc
	t.ExpectContinueTimeout = attemptTimeout + time.Second
	return t
}

// Attempt is one try of a call on one agent.
type Attempt struct {
	Agent string
	Err   error
}

// AttemptsError is returned when no agent answered a call: it lists every
// agent tried, in order. It unwraps to the attempts' errors, the last
// attempt's first, so errors.As finds the last answer (an *Error) first and
// errors.Is(err, ErrAttemptTimeout) tells whether any agent hung.
type AttemptsError struct {
	Attempts []Attempt
}

func (e *AttemptsError) Error() string {
	parts := make([]string, len(e.Attempts))
	for i, a := range e.Attempts {
		parts[i] = a.Agent + ": " + a.Err.Error()
	}
	return fmt.Sprintf("client: no agent answered (%d tried): %s", len(e.Attempts), strings.Join(parts, "; "))
}

// Unwrap returns the attempts' errors, the last attempt's first.
func (e *AttemptsError) Unwrap() []error {
	out := make([]error, len(e.Attempts))
	for i, a := range e.Attempts {
		out[len(out)-1-i] = a.Err
	}
	return out
}

// do runs one call with a JSON body and a JSON answer decoded into out,
// under the fail-over policy above.
func (c *Client) do(ctx context.Context, method, path string, q url.Values, body any, out any) (*QueryMeta, error) {
	var payload []byte
	if body != nil {
		var err error
		if payload, err = json.Marshal(body); err != nil {
			return nil, err
		}
	}
	return c.call(ctx, method, path, q, payload, "application/json", func(resp *http.Response, addr string) (*QueryMeta, error) {
		return decodeResponse(resp, out, addr)
	})
}

// call runs one call under the fail-over policy above: payload (with
// contentType) is the body, and handle reads the answer of the agent that
// answered (closing its body) into the call's result. An *Error from handle
// is the agent's answer, which the policy may fail over from.
func (c *Client) call(ctx context.Context, method, path string, q url.Values, payload []byte, contentType string,
	handle func(resp *http.Response, addr string) (*QueryMeta, error)) (*QueryMeta, error) {
	parent := ctx
	var wait time.Duration
	if q.Get("index") != "" {
		wait = 10 * time.Minute // the agent's longest wait
		if w := q.Get("wait"); w != "" {
			wait, _ = time.ParseDuration(w)
		}
		wait += wait / 16 // the agent adds jitter up to wait/16
	}
	ctx, cancel := context.WithTimeoutCause(parent, c.timeout+wait, errCallBound)
	defer cancel()
	attemptTimeout := c.attempt
	if work, ok := ctx.Value(workKey{}).(time.Duration); ok {
		// The agent asks others before it answers, each for at most
		// work: its answer may take that long on top of the attempt.
		attemptTimeout += work
	}
	if ctx.Value(longCallKey{}) != nil || len(c.bases) == 1 {
		// With one agent there is no other to try: the call's bound is
		// the attempt's.
		attemptTimeout = c.timeout
	}
	a := attempt{c: c, method: method, path: path, query: q.Encode(), payload: payload, contentType: contentType, handle: handle,
		write: method != http.MethodGet, expect: payload != nil && len(c.bases) > 1 && method != http.MethodGet,
		timeout: attemptTimeout + wait}
	n := len(c.bases)
	start := int(c.cur.Load()) % n
	var tried []Attempt
	for k := 0; k < n; k++ {
		i := (start + k) % n
		if k == 1 && wait > 0 {
			// The blocking attempt failed: ask the others without waiting.
			plain := maps.Clone(q)
			plain.Del("index")
			plain.Del("wait")
			a.query, a.timeout = plain.Encode(), attemptTimeout
			var cancelPlain context.CancelFunc
			ctx, cancelPlain = context.WithTimeoutCause(parent, c.timeout, errCallBound)
			defer cancelPlain() // once: k is 1 once
		}
		meta, next, err := a.try(ctx, c.bases[i])
		if !next {
			if err == nil && meta != nil && !meta.KnownLeader && !a.write && n > 1 {
				// Its answer is all we have now; ask another agent next time.
				c.cur.CompareAndSwap(int32(i), int32((i+1)%n))
			} else if k > 0 {
				c.cur.CompareAndSwap(int32(start), int32(i))
			}
			var ae *Error
			if err != nil && (len(tried) > 0 || !errors.As(err, &ae)) {
				// Name the agents tried, unless one agent answered alone.
				return meta, &AttemptsError{Attempts: append(tried, Attempt{Agent: c.bases[i].Host, Err: err})}
			}
			return meta, err
		}
		tried = append(tried, Attempt{Agent: c.bases[i].Host, Err: err})
		c.cur.CompareAndSwap(int32(i), int32((i+1)%n))
		if ctx.Err() != nil {
			break
		}
	}
	return nil, noAgentAnswered(tried)
}

// noAgentAnswered is the error of a call no agent answered: an
// *UnreachableError when none could be reached at all, else an
// *AttemptsError.
func noAgentAnswered(tried []Attempt) error {
	ue := &UnreachableError{}
	for _, a := range tried {
		var ae *Error
		if errors.As(a.Err, &ae) {
			return &AttemptsError{Attempts: tried}
		}
		ue.Addrs, ue.Errs = append(ue.Addrs, a.Agent), append(ue.Errs, a.Err)
	}
	return ue
}

type longCallKey struct{}

// longCall marks ctx's call as one whose agent legitimately works for a
// while before it answers (joining peers, leaving, saving or restoring a
// snapshot): its attempts are bounded by Timeout, not AttemptTimeout.
func longCall(ctx context.Context) context.Context {
	return context.WithValue(ctx, longCallKey{}, true)
}

type workKey struct{}

// withWork marks ctx's call as one whose agent asks others before it
// answers, waiting at most work for them (GET /v1/cluster/servers): each
// attempt's bound grows by work, so a healthy agent that waits out a
// paused peer answers within it, while an agent that does not answer at
// all still costs a bounded wait.
func withWork(ctx context.Context, work time.Duration) context.Context {
	return context.WithValue(ctx, workKey{}, work)
}

// attempt is one call's request, tried on one agent after another.
type attempt struct {
	c                   *Client
	method, path, query string
	payload             []byte
	contentType         string
	handle              func(resp *http.Response, addr string) (*QueryMeta, error)
	write, expect       bool
	timeout             time.Duration
}

// try sends the request to base. next reports whether the policy lets the
// call move on to another agent.
func (a *attempt) try(ctx context.Context, base *url.URL) (meta *QueryMeta, next bool, err error) {
	u := *base
	// a.path is escaped already (url.PathEscape of each name in it): set as
	// u.Path, its '%' would be escaped again, and the agent would read
	// "my%20node" for the node "my node".
	raw := strings.TrimSuffix(base.EscapedPath(), "/") + a.path
	p, err := url.PathUnescape(raw)
	if err != nil {
		return nil, false, err
	}
	u.Path, u.RawPath = p, raw
	u.RawQuery = a.query
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	var timedOut atomic.Bool
	timer := time.AfterFunc(a.timeout, func() { timedOut.Store(true); cancel() })
	// sent becomes true once any of the request may have reached the agent
	// in a form it can act on: the body for requests that have one, the
	// headers for those that do not.
	var sent atomic.Bool
	var rd io.ReadCloser
	if a.payload != nil {
		rd = &sentReader{r: bytes.NewReader(a.payload), sent: &sent}
	}
	req, err := http.NewRequestWithContext(actx, a.method, u.String(), rd)
	if err != nil {
		timer.Stop()
		return nil, false, err
	}
	if a.payload != nil {
		req.ContentLength = int64(len(a.payload))
		req.GetBody = func() (io.ReadCloser, error) {
			return &sentReader{r: bytes.NewReader(a.payload), sent: &sent}, nil
		}
		req.Header.Set("Content-Type", a.contentType)
		if a.expect {
			req.Header.Set("Expect", "100-continue")
		}
	} else {
		req = req.WithContext(httptrace.WithClientTrace(actx, &httptrace.ClientTrace{
			WroteHeaders: func() { sent.Store(true) },
		}))
	}
	if a.c.token != "" {
		req.Header.Set("Authorization", "Bearer "+a.c.token)
	}
	start := time.Now()
	resp, err := a.c.hc.Do(req)
	timer.Stop()
	if err != nil {
		switch {
		case ctx.Err() != nil && !timedOut.Load() && context.Cause(ctx) != errCallBound:
			return nil, false, err // the caller's deadline or cancellation
		case ctx.Err() != nil:
			// The call's own bound ran out with the attempt's (with one
			// agent they are as long): no answer in time, whichever timer
			// fired first, and no time left for another agent.
			return nil, false, fmt.Errorf("%w (%s)", ErrAttemptTimeout, time.Since(start).Round(time.Second))
		case timedOut.Load():
			err = fmt.Errorf("%w (%s)", ErrAttemptTimeout, a.timeout)
		}
		if a.write && sent.Load() {
			return nil, false, fmt.Errorf("%w; the write was sent, so it may have been applied: not retried on another agent", err)
		}
		return nil, true, err
	}
	meta, err = a.handle(resp, base.Host)
	if meta != nil {
		meta.Agent = base.Host
	}
	var ae *Error
	if err != nil && errors.As(err, &ae) && ctx.Err() == nil {
		if a.write {
			next = ae.Status == http.StatusServiceUnavailable && (ae.Code == "no_leader" || ae.Code == "not_leader")
		} else {
			next = ae.Status >= 500 || ae.Status == http.StatusTooManyRequests
		}
	}
	return meta, next, err
}

// sentReader notes when the transport starts reading a request's body.
type sentReader struct {
	r    io.Reader
	sent *atomic.Bool
}

func (s *sentReader) Read(p []byte) (int, error) {
	s.sent.Store(true)
	return s.r.Read(p)
}

func (s *sentReader) Close() error { return nil }
