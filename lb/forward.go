package lb

import (
	"errors"
	"io"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
)

// forward proxies one request that is not a protocol upgrade: the work of
// httputil.ReverseProxy.ServeHTTP on the hot path, with fewer copies. The
// outgoing request is a shallow copy of r whose header map is built in one
// pass (hop-by-hop and client-set forwarding headers left out) and shaped by
// rewrite, as ReverseProxy would; the instance's answer is sent back with
// its header values shared, not copied. Upgrades (WebSocket, h2c) still go
// through the ReverseProxy (proxy.rp).
func (p *proxy) forward(w http.ResponseWriter, r *http.Request) {
	out := new(http.Request)
	*out = *r
	u := *r.URL
	u.RawQuery = cleanQueryParams(u.RawQuery)
	out.URL = &u
	out.Header = outboundHeader(r.Header)
	out.Close = false
	out.Trailer = nil
	if r.ContentLength == 0 {
		out.Body = nil
	}
	p.rewrite(&httputil.ProxyRequest{In: r, Out: out})
	if _, ok := out.Header["User-Agent"]; !ok {
		// Not Go's default User-Agent either.
		out.Header["User-Agent"] = emptyValue
	}
	rt := retrier{p: p}
	res, err := rt.RoundTrip(out)
	if err == nil && res.StatusCode == http.StatusSwitchingProtocols {
		res.Body.Close()
		err = errUnaskedUpgrade
	}
	if err != nil {
		p.errorHandler(w, out, err)
		return
	}
	removeHopHeaders(res.Header)
	h := w.Header()
	if _, ok := res.Header["Content-Type"]; !ok {
		// A proxy does not guess a type the instance did not give
		// (net/http's server would sniff one); the fast path does not
		// either.
		h["Content-Type"] = nil
	}
	for k, vv := range res.Header {
		if old, ok := h[k]; ok {
			h[k] = append(old, vv...)
		} else {
			h[k] = vv
		}
	}
	announced := len(res.Trailer)
	if announced > 0 {
		keys := make([]string, 0, announced)
		for k := range res.Trailer {
			keys = append(keys, k)
		}
		h.Add("Trailer", strings.Join(keys, ", "))
	}
	w.WriteHeader(res.StatusCode)
	if err := p.copyBody(w, res, flushEvery(res)); err != nil {
		res.Body.Close()
		// Part of the answer is sent: all that is left is to cut the
		// connection so that the client does not take it for whole.
		panic(http.ErrAbortHandler)
	}
	res.Body.Close()
	if len(res.Trailer) > 0 {
		// Force chunking: no Content-Length computed for a short body.
		_ = http.NewResponseController(w).Flush()
	}
	if len(res.Trailer) == announced {
		for k, vv := range res.Trailer {
			h[k] = append(h[k], vv...)
		}
		return
	}
	for k, vv := range res.Trailer {
		k = http.TrailerPrefix + k
		h[k] = append(h[k], vv...)
	}
}

var emptyValue = []string{""}

var errUnaskedUpgrade = errors.New("lb: the instance switched protocols unasked")

// isUpgrade reports a request for a protocol upgrade (WebSocket, h2c).
func isUpgrade(r *http.Request) bool {
	if _, ok := r.Header["Upgrade"]; !ok {
		return false
	}
	for _, v := range r.Header["Connection"] {
		for _, tok := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(tok), "upgrade") {
				return true
			}
		}
	}
	return false
}

// hopHeaders are the headers of one connection (RFC 9110 7.6.1), not
// forwarded; the forwarding headers a client set are not either (rewrite
// sets ours).
var hopHeaders = map[string]bool{
	"Connection": true, "Proxy-Connection": true, "Keep-Alive": true, "Proxy-Authenticate": true,
	"Proxy-Authorization": true, "Te": true, "Trailer": true, "Transfer-Encoding": true, "Upgrade": true,
}

var clientForwarding = map[string]bool{
	"Forwarded": true, "X-Forwarded-For": true, "X-Forwarded-Host": true, "X-Forwarded-Proto": true,
}

// outboundHeader copies in without hop-by-hop headers (those named in
// Connection too) and client-set forwarding headers, sharing the value
// slices. "Te: trailers" is kept, as ReverseProxy keeps it.
func outboundHeader(in http.Header) http.Header {
	conn := in["Connection"]
	out := make(http.Header, len(in)+4)
	for k, vv := range in {
		if hopHeaders[k] || clientForwarding[k] || (len(conn) > 0 && listed(conn, k)) {
			continue
		}
		out[k] = vv
	}
	for _, v := range in["Te"] {
		if tokenIn(v, "trailers") {
			out["Te"] = []string{"trailers"}
			break
		}
	}
	return out
}

// removeHopHeaders deletes from h the hop-by-hop headers and those named in
// its Connection header.
func removeHopHeaders(h http.Header) {
	for _, v := range h["Connection"] {
		for _, f := range strings.Split(v, ",") {
			if f = textprotoKey(f); f != "" {
				delete(h, f)
			}
		}
	}
	for k := range hopHeaders {
		delete(h, k)
	}
}

// listed reports whether header name k appears in the Connection values.
func listed(conn []string, k string) bool {
	for _, v := range conn {
		for _, f := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(f), k) {
				return true
			}
		}
	}
	return false
}

func tokenIn(v, token string) bool {
	for _, f := range strings.Split(v, ",") {
		if strings.EqualFold(strings.TrimSpace(f), token) {
			return true
		}
	}
	return false
}

func textprotoKey(s string) string {
	s = strings.TrimSpace(s)
	if s == "" {
		return ""
	}
	return http.CanonicalHeaderKey(s)
}

// cleanQueryParams drops a query that Go's parser would reject (a ';' or a
// bad escape), re-encoding what parses, as ReverseProxy does: the instance
// must not read the query differently from the balancer.
func cleanQueryParams(s string) string {
	reencode := func(s string) string {
		v, _ := url.ParseQuery(s)
		return v.Encode()
	}
	for i := 0; i < len(s); {
		switch s[i] {
		case ';':
			return reencode(s)
		case '%':
			if i+2 >= len(s) || !isHex(s[i+1]) || !isHex(s[i+2]) {
				return reencode(s)
			}
			i += 3
		default:
			i++
		}
	}
	return s
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// flushEvery reports whether each chunk of the body is flushed at once:
// server-sent events and bodies of unknown length (streams), as
// ReverseProxy does.
func flushEvery(res *http.Response) bool {
	if res.ContentLength == -1 {
		return true
	}
	ct := strings.TrimSpace(res.Header.Get("Content-Type"))
	return len(ct) >= len("text/event-stream") && strings.EqualFold(ct[:len("text/event-stream")], "text/event-stream")
}

// copyBody sends the response body to w.
func (p *proxy) copyBody(w http.ResponseWriter, res *http.Response, flush bool) error {
	bp := p.rp.BufferPool.(*bufferPool)
	bufp := bp.get()
	defer bp.put(bufp)
	buf := *bufp
	var rc *http.ResponseController
	if flush {
		rc = http.NewResponseController(w)
	}
	for {
		n, rerr := res.Body.Read(buf)
		if n > 0 {
			nw, werr := w.Write(buf[:n])
			if werr != nil {
				return werr
			}
			if nw != n {
				return io.ErrShortWrite
			}
			if rc != nil {
				if err := rc.Flush(); err != nil {
					return err
				}
			}
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			p.b.logger.Debug("read error during body copy", "error", rerr)
			return rerr
		}
	}
}
