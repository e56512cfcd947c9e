package lb

import (
	"bufio"
	"bytes"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/beaconhq/beacon/connlimit"
)

// FuzzFastRequestParse: a head the fast path accepts must be one net/http
// reads the same way (method, path, query, host, length, close, hops), and
// the head the fast path sends for it must carry the headers net/http's
// path would send (outboundHeader) plus the forwarding ones.
func FuzzFastRequestParse(f *testing.F) {
	for _, seed := range []string{
		"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST /x?y=1 HTTP/1.1\r\nHost: a:1\r\nContent-Length: 3\r\nConnection: close\r\n\r\n",
		"GET /web/k/cl HTTP/1.1\r\nHost: s\r\nConnection: keep-alive\r\nKeep-Alive: 300\r\nTe: trailers, deflate\r\nX-Forwarded-For: 6.6.6.6\r\nX-Beacon-Lb-Hops: +2\r\nUser-Agent: t\r\nX-App: 1\r\nx-app: 2\r\n\r\n",
		"HEAD /a(b)!$*+,;=:@~ HTTP/1.1\r\nhost: h\r\nX-T: caf\xc3\xa9\t!  \r\nX-Empty:\r\nIdempotency-Key: k\r\n\r\n",
		"GET /a HTTP/1.1\r\nHost: h\r\nX-Beacon-Lb-Hops: x\r\nX-Beacon-Lb-Hops: 4\r\nX-Forwarded-Prefix: /p\r\n\r\n",
		"POST /a HTTP/1.1\r\nHost: h\r\nUser-Agent:\r\nUser-Agent: b\r\nIdempotency-Key:\r\nidempotency-key: k\r\nX-Idempotency-Key: j\r\n\r\n",
	} {
		f.Add([]byte(seed))
	}
	cfg := DefaultConfig()
	f.Fuzz(func(t *testing.T, data []byte) {
		head, err := connlimit.PeekHead(bufio.NewReaderSize(bytes.NewReader(data), fastReadBufSize), nil)
		if err != nil {
			return
		}
		var req fastRequest
		if !req.parse(head, &cfg) {
			return
		}
		r, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(head)))
		if err != nil {
			t.Fatalf("fast path took %q, net/http refuses it: %v", head, err)
		}
		if r.Method != req.method || r.URL.Path != req.path || r.URL.RawQuery != req.query || r.Host != req.host ||
			r.ContentLength != req.contentLength || len(r.TransferEncoding) != 0 || r.Close != req.close || hops(r) != req.hops ||
			idempotent(r) != req.idempotent {
			t.Fatalf("%q: net/http reads %s %q ? %q host %q length %d close %v hops %d idempotent %v; fast path %+v",
				head, r.Method, r.URL.Path, r.URL.RawQuery, r.Host, r.ContentLength, r.Close, hops(r), idempotent(r), req)
		}
		if q := cleanQueryParams(r.URL.RawQuery); q != req.query {
			t.Fatalf("%q: net/http's path sends query %q, the fast path %q", head, q, req.query)
		}
		target := req.path
		if req.hasQuery {
			target += "?" + req.query
		}
		if u := r.URL.RequestURI(); u != target {
			t.Fatalf("%q: net/http's path sends %q", head, u)
		}
		c := &fastConn{clientIP: "192.0.2.1"}
		body := strings.Repeat("b", int(req.contentLength))
		out := c.outgoingHead(&req, "", "10.0.0.1:80", true, len(body))
		sent, err := http.ReadRequest(bufio.NewReader(strings.NewReader(string(out) + body)))
		if err != nil {
			t.Fatalf("the head sent for %q does not parse: %v\n%s", head, err, out)
		}
		want := outboundHeader(r.Header)
		// Request.Write sends the first User-Agent, if not empty.
		if ua := r.Header.Get("User-Agent"); ua != "" {
			want["User-Agent"] = []string{ua}
		} else {
			delete(want, "User-Agent")
		}
		got := sent.Header.Clone()
		for _, k := range []string{"X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", HeaderHops, "Content-Length"} {
			delete(got, k)
			delete(want, k)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%q: headers sent\n%v\nnet/http's path\n%v", head, got, want)
		}
		if sent.Host != r.Host || sent.Method != r.Method || sent.RequestURI != r.URL.RequestURI() || sent.ContentLength != int64(len(body)) ||
			sent.Header.Get("X-Forwarded-For") != "192.0.2.1" || sent.Header.Get(HeaderHops) != strconv.Itoa(hops(r)+1) {
			t.Fatalf("%q: sent %s %s host %q length %d, headers %v", head, sent.Method, sent.RequestURI, sent.Host, sent.ContentLength, sent.Header)
		}
	})
}

// FuzzFastResponseHead: an answer head the fast path passes on as it is
// must be one net/http reads the same way: status, length, keep-alive, no
// transfer coding, no trailers.
func FuzzFastResponseHead(f *testing.F) {
	for _, a := range rawAnswers {
		f.Add([]byte(a), false)
	}
	f.Add([]byte("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"), true)
	f.Add([]byte("HTTP/1.1 204\r\nConnection: close\r\n\r\n"), false)
	f.Fuzz(func(t *testing.T, data []byte, isHead bool) {
		ex := &exchange{c: &upConn{br: bufio.NewReaderSize(bytes.NewReader(data), upstreamBufSize)}}
		ok, err := ex.parseHead(isHead)
		if err != nil || !ok {
			return
		}
		method := http.MethodGet
		if isHead {
			method = http.MethodHead
		}
		res, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(data)), &http.Request{Method: method})
		if err != nil {
			t.Fatalf("fast path took %q, net/http refuses it: %v", ex.head, err)
		}
		length := res.ContentLength
		if isHead || res.StatusCode == http.StatusNoContent || res.StatusCode == http.StatusNotModified {
			length = 0
		}
		if res.StatusCode != ex.status || length != ex.length || res.Close == ex.keep || len(res.TransferEncoding) != 0 || len(res.Trailer) != 0 {
			t.Fatalf("%q: net/http reads %d length %d close %v te %v trailer %v; fast path %d length %d keep %v",
				ex.head, res.StatusCode, length, res.Close, res.TransferEncoding, res.Trailer, ex.status, ex.length, ex.keep)
		}
	})
}
