package lb

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

// netHTTPPathOnly makes startBalancer serve through net/http alone
// (Config.DisableFastPath); TestNetHTTPPath sets it.
var netHTTPPathOnly bool

// TestNetHTTPPath runs the proxy's tests again with the fast path off: the
// path every handed-off connection takes must keep working on its own.
func TestNetHTTPPath(t *testing.T) {
	netHTTPPathOnly = true
	defer func() { netHTTPPathOnly = false }()
	for name, test := range map[string]func(*testing.T){
		"Strategies":       TestStrategiesDistributeOverRealBackends,
		"Routing":          TestRoutingByHostPathAndDeclaredPrefix,
		"NoPassing":        TestNoPassingInstanceIsA503WithAClearBody,
		"BackendKilled":    TestBackendKilledMidTrafficCostsIdempotentRequestsNothing,
		"Retries":          TestRetries,
		"Draining":         TestDrainingInstanceFinishesInFlightRequestsAndGetsNoNewOnes,
		"Panic":            TestPanicModeIsVisibleInResponses,
		"Shutdown":         TestShutdownLetsRequestsInFlightFinish,
		"Ejected500":       TestAnInstanceAnswering500IsEjectedButNotRetried,
		"Forwarded":        TestForwardedRequestLosesHopHeadersAndGetsForwardingHeaders,
		"Bodies":           TestBodiesPassBothWaysWhateverTheirFraming,
		"Trailers":         TestTrailersAndStreamsPassThrough,
		"Truncated":        TestATruncatedResponseIsCutNotCompleted,
		"UpstreamTimeouts": TestUpstreamTimeoutsAndOversizedHeaders,
		"StaleConns":       TestConnectionsTheInstanceClosedAreNotUsedToLoseRequests,
		"Outliers":         TestOutlierEjection,
		"Loop508":          TestRoutingLoopBetweenBalancersEndsIn508,
	} {
		t.Run(name, test)
	}
}

// rawBackend is an instance that answers with scripted bytes, chosen by the
// last element of the request's path, and records each request it read
// (as net/http parses it) before answering.
type rawBackend struct {
	ln   net.Listener
	seen chan seenRequest
	wg   sync.WaitGroup
	mu   sync.Mutex
	cs   map[net.Conn]bool
}

type seenRequest struct {
	Method, URI, Host string
	Header            http.Header
	Body              string
	ContentLength     int64
	TransferEncoding  []string
}

var rawAnswers = map[string]string{
	"cl":       "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nX-A: 1\r\nX-A: 2\r\n\r\nhello",
	"reason":   "HTTP/1.1 404 Nope Not Here\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nno",
	"chunked":  "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
	"trailers": "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTrailer: X-Sum\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-Sum: 42\r\n\r\n",
	"close":    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nuntil the end",
	"ccl":      "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
	"empty":    "HTTP/1.1 204 No Content\r\nX-B: 1\r\n\r\n",
	"notmod":   "HTTP/1.1 304 Not Modified\r\nEtag: \"x\"\r\n\r\n",
	"early":    "HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok",
	"bighead":  "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Big: " + strings.Repeat("b", 6000) + "\r\nContent-Length: 2\r\n\r\nok",
	"hop":      "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nProxy-Authenticate: Basic\r\nContent-Length: 2\r\n\r\nok",
	"conntok":  "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: X-Hop\r\nX-Hop: 1\r\nContent-Length: 2\r\n\r\nok",
	"notype":   "HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\n<html>hi</html>",
	"sse":      "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: 9\r\n\r\ndata: x\n\n",
	"http10":   "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok",
	"fail":     "HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\nContent-Length: 4\r\n\r\nfail",
	"date":     "HTTP/1.1 200 OK\r\nDate: Mon, 02 Jan 2006 15:04:05 GMT\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok",
	"lower":    "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\nx-lower: 1\r\n\r\nok",
	"switch":   "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: Upgrade\r\n\r\n",
	// Bodies longer than the instance connection's buffer: the rest read
	// through the buffer (mid) or in copy buffers (big).
	"mid": "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5000\r\n\r\n" + strings.Repeat("m", 5000),
	"big": "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100000\r\n\r\n" + strings.Repeat("0123456789", 10_000),
}

func startRawBackend(t *testing.T) *rawBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &rawBackend{ln: ln, seen: make(chan seenRequest, 16), cs: map[net.Conn]bool{}}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b.mu.Lock()
			b.cs[c] = true
			b.mu.Unlock()
			b.wg.Add(1)
			go b.serve(c)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		b.mu.Lock()
		for c := range b.cs {
			c.Close()
		}
		b.mu.Unlock()
		b.wg.Wait()
	})
	return b
}

func (b *rawBackend) serve(c net.Conn) {
	defer b.wg.Done()
	defer c.Close()
	br := bufio.NewReader(c)
	for {
		_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
		r, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			return
		}
		b.seen <- seenRequest{Method: r.Method, URI: r.RequestURI, Host: r.Host, Header: r.Header, Body: string(body),
			ContentLength: r.ContentLength, TransferEncoding: r.TransferEncoding}
		kind := r.URL.Path[strings.LastIndexByte(r.URL.Path, '/')+1:]
		answer, ok := rawAnswers[kind]
		if !ok {
			answer = rawAnswers["cl"]
		}
		if r.Method == http.MethodHead {
			answer = answer[:strings.Index(answer, "\r\n\r\n")+4]
		}
		if _, err := io.WriteString(c, answer); err != nil {
			return
		}
		if kind == "close" || kind == "ccl" || kind == "http10" || kind == "switch" {
			return
		}
	}
}

func (b *rawBackend) backend() Backend {
	return Backend{ID: "raw-1", Address: "127.0.0.1", Port: b.ln.Addr().(*net.TCPAddr).Port, Weight: 1, Status: Passing}
}

// next returns the request the backend recorded for the last exchange, or
// nil when none reached it (the balancer answered itself).
func (b *rawBackend) next() *seenRequest {
	select {
	case s := <-b.seen:
		return &s
	default:
		return nil
	}
}

// rawExchange sends raw on a new connection to addr and reads one answer.
func rawExchange(t *testing.T, addr, raw, method string) (*http.Response, string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	var resp *http.Response
	for resp == nil || resp.StatusCode < 200 {
		// 100 Continue answers an Expect before the real answer.
		if resp, err = http.ReadResponse(br, &http.Request{Method: method}); err != nil {
			t.Fatalf("%q: %v", raw, err)
		}
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%q: body: %v", raw, err)
	}
	return resp, string(body)
}

// TestFastPathAnswersAsNetHTTPDoes sends the same raw requests through a
// balancer with the fast path and one without, to an instance answering
// with scripted bytes: the instance must see the same request and the
// client the same answer (status, headers but Date's value, body,
// trailers, framing). The cases the fast path takes must be taken by it.
func TestFastPathAnswersAsNetHTTPDoes(t *testing.T) {
	be := startRawBackend(t)
	cat := newMemCatalog()
	idx := cat.Set("web", be.backend())
	mut := func(c *Config) { c.MaxRetries = 0 }
	fastB, fastURL := startBalancer(t, cat, func(c *Config) { mut(c); c.DisableFastPath = false })
	slowB, slowURL := startBalancer(t, cat, func(c *Config) { mut(c); c.DisableFastPath = true })
	waitTable(t, fastB, "web", idx)
	waitTable(t, slowB, "web", idx)
	fastAddr, slowAddr := strings.TrimPrefix(fastURL, "http://"), strings.TrimPrefix(slowURL, "http://")

	const host = "Host: shop.example\r\n"
	get := func(path, headers string) string { return "GET " + path + " HTTP/1.1\r\n" + host + headers + "\r\n" }
	type tc struct {
		name, raw, method string
		fast              bool
	}
	var cases []tc
	for kind := range rawAnswers {
		cases = append(cases, tc{"answer " + kind, get("/web/k/"+kind, ""), "GET", true})
	}
	cases = append(cases, []tc{
		{"query", get("/web/k/cl?a=1&b=%20x&c", ""), "GET", true},
		{"query with semicolon", get("/web/k/cl?a=1;b=2", ""), "GET", false},
		{"head", "HEAD /web/k/cl HTTP/1.1\r\n" + host + "\r\n", "HEAD", true},
		{"post", "POST /web/k/cl HTTP/1.1\r\n" + host + "Content-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello", "POST", true},
		{"post without body", "POST /web/k/cl HTTP/1.1\r\n" + host + "\r\n", "POST", true},
		{"put empty", "PUT /web/k/cl HTTP/1.1\r\n" + host + "Content-Length: 0\r\n\r\n", "PUT", true},
		{"delete", "DELETE /web/k/cl HTTP/1.1\r\n" + host + "\r\n", "DELETE", true},
		{"patch", "PATCH /web/k/cl HTTP/1.1\r\n" + host + "Content-Length: 3\r\n\r\nabc", "PATCH", true},
		{"options", "OPTIONS /web/k/cl HTTP/1.1\r\n" + host + "\r\n", "OPTIONS", true},
		{"hop and forwarding headers", get("/web/k/cl", "Connection: keep-alive\r\nKeep-Alive: 300\r\nProxy-Authorization: x\r\n"+
			"Te: trailers, deflate\r\nX-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Host: evil\r\nX-Forwarded-Proto: https\r\n"+
			"Forwarded: for=6.6.6.6\r\nX-Beacon-Lb-Hops: 2\r\nUser-Agent: t/1\r\nX-App: 1\r\nX-App: 2\r\nidempotency-key: k1\r\n"), "GET", true},
		{"te without trailers", get("/web/k/cl", "TE: gzip\r\n"), "GET", true},
		{"client prefix header replaced", get("/web/k/cl", "X-Forwarded-Prefix: /evil\r\n"), "GET", true},
		{"connection close", get("/web/k/cl", "Connection: close\r\n"), "GET", true},
		{"lower-case names", "GET /web/k/cl HTTP/1.1\r\nhost: shop.example\r\nx-lower: 1\r\n\r\n", "GET", true},
		{"odd values", get("/web/k/cl", "X-T: caf\xc3\xa9\t!  \r\nX-Empty:\r\n"), "GET", true},
		{"sub-delims in path", get("/web/k/a(b)!$*+,;=:@~/cl", ""), "GET", true},
		{"host with port", "GET /web/k/cl HTTP/1.1\r\nHost: shop.example:8080\r\n\r\n", "GET", true},
		{"escaped path", get("/web/k/a%2Fb/cl", ""), "GET", false},
		{"double slash", get("/web//k/cl", ""), "GET", false},
		{"http/1.0", "GET /web/k/cl HTTP/1.0\r\n" + host + "\r\n", "GET", false},
		{"chunked body", "POST /web/k/cl HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", "POST", false},
		{"expect", "PUT /web/k/cl HTTP/1.1\r\n" + host + "Expect: 100-continue\r\nContent-Length: 2\r\n\r\nok", "PUT", false},
		{"connection names a header", get("/web/k/cl", "Connection: X-Secret\r\nX-Secret: s\r\n"), "GET", false},
		{"obs-fold", get("/web/k/cl", "X-Fold: a\r\n b\r\n"), "GET", false},
		{"two hosts", get("/web/k/cl", "Host: other.example\r\n"), "GET", false},
		{"two lengths", "POST /web/k/cl HTTP/1.1\r\n" + host + "Content-Length: 2\r\nContent-Length: 3\r\n\r\nabc", "POST", false},
		{"no host", "GET /web/k/cl HTTP/1.1\r\n\r\n", "GET", false},
		{"bare LF", "GET /web/k/cl HTTP/1.1\n" + host + "\n", "GET", false},
		{"space before colon", get("/web/k/cl", "X-Bad : 1\r\n"), "GET", false},
		{"unknown route", get("/nope/x", ""), "GET", false},
		{"routing loop", get("/web/k/cl", "X-Beacon-Lb-Hops: 100\r\n"), "GET", false},
		{"body over the retry buffer", "POST /web/k/cl HTTP/1.1\r\n" + host + "Content-Length: 70000\r\n\r\n" + strings.Repeat("z", 70000), "POST", false},
		{"head over the buffer", get("/web/k/cl", "X-Long: "+strings.Repeat("l", 9000)+"\r\n"), "GET", false},
		{"websocket", get("/web/k/cl", "Connection: Upgrade\r\nUpgrade: websocket\r\n"), "GET", false},
		{"unknown method", "BREW /web/k/cl HTTP/1.1\r\n" + host + "\r\n", "BREW", false},
		{"absolute form", "GET http://shop.example/web/k/cl HTTP/1.1\r\n" + host + "\r\n", "GET", false},
	}...)
	fs := fastB.fast.Load()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			served, handed := fs.served.Load(), fs.handedOff.Load()
			fr, fbody := rawExchange(t, fastAddr, c.raw, c.method)
			fseen := be.next()
			tookFast := fs.served.Load() > served && fs.handedOff.Load() == handed
			sr, sbody := rawExchange(t, slowAddr, c.raw, c.method)
			sseen := be.next()
			if tookFast != c.fast {
				t.Errorf("fast path taken: %v, want %v", tookFast, c.fast)
			}
			if fr.StatusCode != sr.StatusCode || fbody != sbody {
				t.Errorf("fast: %d %q\nnet/http: %d %q", fr.StatusCode, fbody, sr.StatusCode, sbody)
			}
			if fr.ContentLength != sr.ContentLength && !(fr.StatusCode == 200 && fr.ContentLength >= 0 && sr.ContentLength < 0) {
				// net/http may chunk what the fast path sends with its
				// length (an instance's close-delimited body never).
				t.Errorf("length: fast %d, net/http %d", fr.ContentLength, sr.ContentLength)
			}
			if fr.Close != sr.Close {
				t.Errorf("close: fast %v, net/http %v", fr.Close, sr.Close)
			}
			if (fr.Header.Get("Date") == "") != (sr.Header.Get("Date") == "") {
				t.Errorf("Date: fast %q, net/http %q", fr.Header.Get("Date"), sr.Header.Get("Date"))
			}
			if fr.Header.Get("Date") != "" && strings.Contains(c.name, "date") && fr.Header.Get("Date") != sr.Header.Get("Date") {
				t.Errorf("the instance's Date: fast %q, net/http %q", fr.Header.Get("Date"), sr.Header.Get("Date"))
			}
			for _, h := range []http.Header{fr.Header, sr.Header} {
				h.Del("Date")
				if h.Get("Content-Length") != "" && fr.ContentLength >= 0 && sr.ContentLength < 0 {
					h.Del("Content-Length")
				}
			}
			if !reflect.DeepEqual(fr.Header, sr.Header) {
				t.Errorf("headers:\nfast     %v\nnet/http %v", fr.Header, sr.Header)
			}
			if !reflect.DeepEqual(fr.Trailer, sr.Trailer) {
				t.Errorf("trailers: fast %v, net/http %v", fr.Trailer, sr.Trailer)
			}
			if (fseen == nil) != (sseen == nil) {
				t.Fatalf("reached the instance: fast %v, net/http %v", fseen != nil, sseen != nil)
			}
			if fseen != nil && !reflect.DeepEqual(*fseen, *sseen) {
				t.Errorf("the instance saw:\nfast     %+v\nnet/http %+v", *fseen, *sseen)
			}
		})
	}
}

// TestFastPathPipelinesAndHandsOffMidConnection: requests sent back to back
// on one connection are answered in order, and a request the fast path
// does not take, after some it did, is answered by net/http on the same
// connection.
func TestFastPathPipelinesAndHandsOffMidConnection(t *testing.T) {
	be := startRawBackend(t)
	cat := newMemCatalog()
	idx := cat.Set("web", be.backend())
	b, url := startBalancer(t, cat, nil)
	waitTable(t, b, "web", idx)
	c, err := net.DialTimeout("tcp", strings.TrimPrefix(url, "http://"), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	const host = "Host: x\r\n"
	var raw bytes.Buffer
	for i := range 3 {
		fmt.Fprintf(&raw, "GET /web/%d/cl HTTP/1.1\r\n%s\r\n", i, host)
	}
	raw.WriteString("POST /web/3/cl HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
	raw.WriteString("GET /web/4/cl HTTP/1.1\r\n" + host + "\r\n")
	if _, err := c.Write(raw.Bytes()); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	for i := range 5 {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("answer %d: %v", i, err)
		}
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || string(body) != "hello" {
			t.Fatalf("answer %d: %d %q", i, resp.StatusCode, body)
		}
		seen := <-be.seen
		if want := fmt.Sprintf("/web/%d/cl", i); seen.URI != strings.TrimPrefix(want, "/web") {
			t.Fatalf("answer %d was for %s", i, seen.URI)
		}
		if i == 3 && seen.Body != "abc" {
			t.Fatalf("chunked body arrived as %q", seen.Body)
		}
	}
	fs := b.fast.Load()
	if fs.served.Load() != 3 || fs.handedOff.Load() != 1 {
		t.Fatalf("fast path served %d, handed off %d: want 3 and 1", fs.served.Load(), fs.handedOff.Load())
	}
}

// TestFastPathBoundsSlowClients: a client that sends half a head is cut
// off after the read header timeout, and an idle keep-alive connection
// after the idle timeout.
func TestFastPathBoundsSlowClients(t *testing.T) {
	be := startRawBackend(t)
	cat := newMemCatalog()
	idx := cat.Set("web", be.backend())
	b, url := startBalancer(t, cat, func(c *Config) {
		c.ReadHeaderTimeout, c.IdleTimeout = 300*time.Millisecond, 600*time.Millisecond
	})
	waitTable(t, b, "web", idx)
	addr := strings.TrimPrefix(url, "http://")
	for _, raw := range []string{"GET /web/cl HTTP/1.1\r\nHost: x\r\n", "GET /web/cl HTTP/1.1\r\nHost: x\r\n\r\n"} {
		c, err := net.DialTimeout("tcp", addr, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(30 * time.Second))
		if _, err := io.WriteString(c, raw); err != nil {
			t.Fatal(err)
		}
		// Read until the balancer closes: an answer first when the head
		// was whole, then EOF; the deadline above bounds the wait.
		got, err := io.ReadAll(c)
		c.Close()
		if err != nil {
			t.Fatalf("%q: the balancer did not close the connection: %v", raw, err)
		}
		whole := strings.HasSuffix(raw, "\r\n\r\n")
		if whole != strings.HasPrefix(string(got), "HTTP/1.1 200") {
			t.Fatalf("%q: got %q", raw, got)
		}
	}
}

// TestFastServerEndsWhenItsListenerFails: a listener that fails (closed
// under the server, not by Shutdown) ends Serve with its error and leaves
// no goroutine behind (goleak, TestMain).
func TestFastServerEndsWhenItsListenerFails(t *testing.T) {
	cat := newMemCatalog()
	cfg := DefaultConfig()
	cfg.AllowLoopback = true
	b, err := New(cfg, cat)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = b.Shutdown(ctx)
	}()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- b.Serve(ln) }()
	for deadline := time.Now().Add(10 * time.Second); b.fast.Load() == nil; time.Sleep(time.Millisecond) {
		select {
		case err := <-done:
			t.Fatalf("Serve returned early: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("Serve did not start the fast path within 10 s")
		}
	}
	ln.Close()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("Serve returned nil for a listener closed under it")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return within 10 s of its listener closing")
	}
}

// TestFastPathRequestsOnOneConnectionShareNothing: the fast path keeps its
// request and exchange records on the client connection and reuses them
// (and the strings of a path or host that did not change) from one request
// to the next. Requests of every shape sent one after another on one
// connection must reach the instance, and their answers the client, as
// each does alone on a new connection.
func TestFastPathRequestsOnOneConnectionShareNothing(t *testing.T) {
	be := startRawBackend(t)
	cat := newMemCatalog()
	idx := cat.Set("web", be.backend())
	b, url := startBalancer(t, cat, func(c *Config) { c.MaxRetries = 0 })
	waitTable(t, b, "web", idx)
	addr := strings.TrimPrefix(url, "http://")
	reqs := []struct{ raw, method string }{
		{"GET /web/k/cl?a=1 HTTP/1.1\r\nHost: a.example\r\nX-Beacon-Lb-Hops: 2\r\nTe: trailers\r\nX-Forwarded-Prefix: /p\r\nIdempotency-Key: k\r\nUser-Agent: u/1\r\n\r\n", "GET"},
		{"GET /web/k/big HTTP/1.1\r\nHost: b.example:8080\r\n\r\n", "GET"},
		{"POST /web/k/mid HTTP/1.1\r\nHost: b.example:8080\r\nContent-Length: 3\r\n\r\nabc", "POST"},
		{"POST /web/k/mid HTTP/1.1\r\nHost: b.example:8080\r\n\r\n", "POST"},
		{"GET /web/k/reason? HTTP/1.1\r\nHost: b.example:8080\r\n\r\n", "GET"},
		{"HEAD /web/k/big HTTP/1.1\r\nHost: b.example:8080\r\n\r\n", "HEAD"},
		{"GET /web/k/cl?a=1 HTTP/1.1\r\nHost: a.example\r\n\r\n", "GET"},
		{"GET /web/k/cl HTTP/1.1\r\nHost: a.example\r\n\r\n", "GET"},
		{"DELETE /web/other/empty HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n", "DELETE"},
	}
	type result struct {
		status        int
		header        http.Header
		body          string
		close         bool
		seen          *seenRequest
		contentLength int64
	}
	record := func(resp *http.Response, body string) result {
		resp.Header.Del("Date")
		return result{resp.StatusCode, resp.Header, body, resp.Close, be.next(), resp.ContentLength}
	}
	var alone []result
	for _, r := range reqs {
		alone = append(alone, record(rawExchange(t, addr, r.raw, r.method)))
	}

	fs := b.fast.Load()
	served := fs.served.Load()
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(c)
	for i, r := range reqs {
		if _, err := io.WriteString(c, r.raw); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		resp, err := http.ReadResponse(br, &http.Request{Method: r.method})
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("request %d: body: %v", i, err)
		}
		got := record(resp, string(body))
		if got.seen == nil || alone[i].seen == nil {
			t.Fatalf("request %d did not reach the instance (on one connection: %v, alone: %v)", i, got.seen != nil, alone[i].seen != nil)
		}
		if !reflect.DeepEqual(got, alone[i]) {
			t.Errorf("request %d %q:\non one connection %+v\n%+v\nalone             %+v\n%+v", i, r.raw, got, *got.seen, alone[i], *alone[i].seen)
		}
	}
	if n := fs.served.Load() - served; n != int64(len(reqs)) {
		t.Fatalf("the fast path served %d of the %d requests", n, len(reqs))
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("after Connection: close, read %v, want EOF", err)
	}
}
