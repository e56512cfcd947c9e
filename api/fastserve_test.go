package api

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/beaconhq/beacon/api/apitest"
	"github.com/beaconhq/beacon/api/client"
	"github.com/beaconhq/beacon/connlimit"
)

// twinServers are two APIs over one catalog: one with the fast path, one
// serving everything through net/http (DisableFastPath). What the fast path
// answers must be what net/http's path answers.
func twinServers(t *testing.T, opts ...func(*Config)) (fast, slow *testServer) {
	t.Helper()
	cl := apitest.NewCluster(testLogger(t, "fsm"))
	fast = newTestServerOn(t, cl, nil, opts...)
	slow = newTestServerOn(t, cl, nil, append(slices.Clone(opts), func(c *Config) { c.DisableFastPath = true })...)
	return fast, slow
}

func (ts *testServer) fastStats() (served, handedOff int64) {
	ts.api.fastMu.Lock()
	f := ts.api.fast
	ts.api.fastMu.Unlock()
	if f == nil {
		ts.t.Fatal("the server runs no fast path")
	}
	return f.served.Load(), f.handedOff.Load()
}

// rawAnswer is one answer read off a connection.
type rawAnswer struct {
	status  int
	header  http.Header
	body    []byte
	close   bool
	chunked bool
	err     error
}

// send dials ts and writes raw ("HOST" replaced by ts's address) on the
// new connection, which has 30 s for the rest of the exchange.
func (ts *testServer) send(raw string) net.Conn {
	ts.t.Helper()
	addr := strings.TrimPrefix(ts.url, "http://")
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		ts.t.Fatal(err)
	}
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(conn, strings.ReplaceAll(raw, "HOST", addr)); err != nil {
		conn.Close()
		ts.t.Fatal(err)
	}
	return conn
}

// exchange sends raw on a new connection to ts and reads n answers (or
// what can be read: a closed connection ends the list with its error).
func (ts *testServer) exchange(raw string, methods ...string) []rawAnswer {
	ts.t.Helper()
	conn := ts.send(raw)
	defer conn.Close()
	br := bufio.NewReader(conn)
	var out []rawAnswer
	for _, m := range methods {
		resp, err := http.ReadResponse(br, &http.Request{Method: m})
		if err != nil {
			out = append(out, rawAnswer{err: err})
			return out
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		out = append(out, rawAnswer{status: resp.StatusCode, header: resp.Header, body: body, close: resp.Close,
			chunked: slices.Contains(resp.TransferEncoding, "chunked"), err: err})
	}
	return out
}

// sameAnswer fails the test unless a and b say the same: status, header
// fields (but Date, and the framing: Content-Length, Transfer-Encoding),
// body and whether the connection closes.
func sameAnswer(t *testing.T, what string, a, b rawAnswer) {
	t.Helper()
	if a.err != nil || b.err != nil {
		if (a.err == nil) != (b.err == nil) {
			t.Errorf("%s: fast path error %v, net/http path error %v", what, a.err, b.err)
		}
		return
	}
	strip := func(h http.Header) http.Header {
		h = h.Clone()
		for _, k := range []string{"Date", "Content-Length", "Transfer-Encoding"} {
			delete(h, k)
		}
		return h
	}
	if a.status != b.status || a.close != b.close || !reflect.DeepEqual(strip(a.header), strip(b.header)) || !bytes.Equal(a.body, b.body) {
		t.Errorf("%s: answers differ\nfast path: %d close=%v %v\n%s\nnet/http:  %d close=%v %v\n%s",
			what, a.status, a.close, a.header, a.body, b.status, b.close, b.header, b.body)
	}
}

// fastCase is a raw request ("HOST" stands for the server's address) and
// whether the fast path takes it.
type fastCase struct {
	name string
	raw  string
	fast bool
}

func get(target, headers string) string {
	return "GET " + target + " HTTP/1.1\r\nHost: HOST\r\n" + headers + "\r\n"
}

var fastCases = []fastCase{
	{"discovery", get("/v1/services/web/instances", ""), true},
	{"by tag", get("/v1/services/web/instances?tag=blue", ""), true},
	{"consistent", get("/v1/services/web/instances?consistent", ""), true},
	{"stale", get("/v1/services/web/instances?max_stale=5s", ""), true},
	{"filter", get("/v1/services/web/instances?filter=Meta.zone%20%3D%3D%20%22a%22", ""), true},
	{"bad filter", get("/v1/services/web/instances?filter=%3D%3D", ""), true},
	{"page", get("/v1/services/web/instances?limit=1", ""), true},
	{"unknown parameter", get("/v1/services/web/instances?bogus=1", ""), true},
	{"bad consistent", get("/v1/services/web/instances?consistent=maybe", ""), true},
	{"one instance", get("/v1/services/web/instances/web-1", ""), true},
	{"no such instance", get("/v1/services/web/instances/nope", ""), true},
	{"no such service", get("/v1/services/nope/instances", ""), true},
	{"services", get("/v1/services", ""), true},
	{"services by prefix", get("/v1/services?prefix=w", ""), true},
	{"checks", get("/v1/checks", ""), true},
	{"cluster status", get("/v1/cluster/status", ""), true},
	{"unknown route", get("/v1/nope", ""), true},
	{"trailing slash", get("/v1/services/web/instances/", ""), true},
	{"dot segment", get("/v1/services/./web/instances", ""), true},
	{"dot-dot segment", get("/v1/services/web/../web/instances", ""), true},
	{"odd path characters", get("/v1/services/w!b'(x)*/instances", ""), true},
	{"lower-case names", "GET /v1/services/web/instances HTTP/1.1\r\nhost: HOST\r\nuser-agent: t\r\naccept: */*\r\n\r\n", true},
	{"repeated header", get("/v1/services/web/instances", "Accept: a\r\nAccept: b\r\n"), true},
	{"connection close", get("/v1/services/web/instances", "Connection: close\r\n"), true},
	{"connection keep-alive", get("/v1/services/web/instances", "Connection: keep-alive\r\n"), true},
	{"content-length 0", get("/v1/services/web/instances", "Content-Length: 0\r\n"), true},
	{"pragma", get("/v1/services/web/instances", "Pragma: no-cache\r\n"), true},
	{"foreign origin", get("/v1/services/web/instances", "Origin: http://evil.example\r\n"), true},
	{"cross-site fetch", get("/v1/services/web/instances", "Sec-Fetch-Site: cross-site\r\n"), true},
	{"foreign host", "GET /v1/services/web/instances HTTP/1.1\r\nHost: evil.example\r\n\r\n", true},
	{"token", get("/v1/services/web/instances", "X-Beacon-Token: not-a-token\r\n"), true},
	{"bearer", get("/v1/services/web/instances", "Authorization: Bearer not-a-token\r\n"), true},
	{"token in the URL", get("/v1/services/web/instances?token=x", ""), true},
	{"blank value", get("/v1/services/web/instances", "X-Empty:\r\n"), true},
	{"tab in value", get("/v1/services/web/instances", "X-Tab: a\tb\r\n"), true},

	// A blocking query parks from either path (Hijack); one that asks to
	// close its connection cannot park and waits in its handler, which
	// net/http serves (it notices a client that goes away).
	{"blocking query", get("/v1/services/web/instances?index=1&wait=1s", ""), true},
	{"blocking query, escaped name", get("/v1/services/web/instances?ind%65x=1&wait=1s", ""), true},
	{"blocking query, answered at once", get("/v1/services/web/instances?index=0&wait=1s", ""), true},
	{"blocking query, bad index", get("/v1/services/web/instances?index=x&wait=1s", ""), true},
	{"blocking query, Connection: close", get("/v1/services/web/instances?index=1&wait=1s", "Connection: close\r\n"), false},
	{"HEAD", "HEAD /v1/services HTTP/1.1\r\nHost: HOST\r\n\r\n", false},
	{"POST", "POST /v1/services HTTP/1.1\r\nHost: HOST\r\nContent-Length: 0\r\n\r\n", false},
	{"HTTP/1.0", "GET /v1/services HTTP/1.0\r\nHost: HOST\r\n\r\n", false},
	{"not the API", get("/healthz", ""), false},
	{"snapshot", get("/v1/snapshot?bogus=1", ""), false},
	{"escaped path", get("/v1/services/web%2Fx/instances", ""), false},
	{"double slash", get("/v1//services", ""), false},
	{"absolute form", "GET http://HOST/v1/services HTTP/1.1\r\nHost: HOST\r\n\r\n", false},
	{"bad query escape", get("/v1/services/web/instances?tag=%zz", ""), false},
	{"semicolon in query", get("/v1/services/web/instances?tag=a;b", ""), false},
	{"no host", "GET /v1/services HTTP/1.1\r\n\r\n", false},
	{"two hosts", "GET /v1/services HTTP/1.1\r\nHost: HOST\r\nHost: HOST\r\n\r\n", false},
	{"host with a space", "GET /v1/services HTTP/1.1\r\nHost: a b\r\n\r\n", false},
	{"obs-fold", get("/v1/services", "X-A: b\r\n c\r\n"), false},
	{"space before colon", get("/v1/services", "X-A : b\r\n"), false},
	{"control character", get("/v1/services", "X-A: b\x01c\r\n"), false},
	{"bare LF", "GET /v1/services HTTP/1.1\nHost: HOST\n\n", false},
	{"body", get("/v1/services", "Content-Length: 2\r\n") + "{}", false},
	{"chunked", get("/v1/services", "Transfer-Encoding: chunked\r\n") + "0\r\n\r\n", false},
	{"expect", get("/v1/services", "Expect: 100-continue\r\n"), false},
	{"upgrade", get("/v1/services", "Connection: Upgrade\r\nUpgrade: websocket\r\n"), false},
	{"h2c preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", false},
	{"two content-lengths", get("/v1/services", "Content-Length: 0\r\nContent-Length: 0\r\n"), false},
	{"many header lines", get("/v1/services", strings.Repeat("X-A: b\r\n", fastMaxHeaderLines+1)), false},
	{"header lines at the limit", get("/v1/services", strings.Repeat("X-A: b\r\n", fastMaxHeaderLines-1)), true},
}

func put(target, headers, body string) string {
	return fmt.Sprintf("PUT %s HTTP/1.1\r\nHost: HOST\r\nContent-Type: application/json\r\n%sContent-Length: %d\r\n\r\n%s", target, headers, len(body), body)
}

// fastWriteCases are writes: each is sent to the API with the fast path,
// then to the one without, over one catalog, so each must leave the
// catalog as the second one finds it (an identical registration is a
// no-op answered with the same index; the rest change nothing).
var fastWriteCases = []fastCase{
	{"register", put("/v1/services/web/instances/web-9", "", `{"address":"127.0.0.1","port":9090,"tags":["t"],"meta":{"k":"v"}}`), true},
	{"register, lower-case length", "PUT /v1/services/web/instances/web-9 HTTP/1.1\r\nHost: HOST\r\ncontent-type: application/json\r\ncontent-length: 40\r\n\r\n" + `{"address":"127.0.0.1","port":9090     }`, true},
	{"register, bad JSON", put("/v1/services/web/instances/web-8", "", `{"address":`), true},
	{"register, unknown field", put("/v1/services/web/instances/web-8", "", `{"address":"127.0.0.1","port":1,"bogus":1}`), true},
	{"register, unknown field in a check", put("/v1/services/web/instances/web-8", "", `{"address":"127.0.0.1","port":1,"checks":[{"ttl":"5s","bogus":1}]}`), true},
	{"register, bad port", put("/v1/services/web/instances/web-8", "", `{"address":"127.0.0.1","port":70000}`), true},
	{"register, bad name", put("/v1/services/-bad-/instances/web-8", "", `{"address":"127.0.0.1","port":1}`), true},
	{"register, no body", "PUT /v1/services/web/instances/web-8 HTTP/1.1\r\nHost: HOST\r\nContent-Type: application/json\r\n\r\n", true},
	{"register, empty body", put("/v1/services/web/instances/web-8", "", ""), true},
	{"register, wrong type", "PUT /v1/services/web/instances/web-8 HTTP/1.1\r\nHost: HOST\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\n{}", true},
	{"register, foreign origin", put("/v1/services/web/instances/web-8", "Origin: http://evil.example\r\n", `{"address":"127.0.0.1","port":1}`), true},
	{"register, at the body limit", put("/v1/services/web/instances/web-8", "", `{"address":"127.0.0.1","port":1,"meta":{"k":"`+strings.Repeat("x", 64<<10-48)+`"}}`), true},
	{"deregister, bad name", "DELETE /v1/services/-bad-/instances/nope HTTP/1.1\r\nHost: HOST\r\n\r\n", true},
	{"deregister with a body it ignores", "DELETE /v1/services/-bad-/instances/nope HTTP/1.1\r\nHost: HOST\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}", true},
	{"deregister with a body of no type", "DELETE /v1/services/-bad-/instances/nope HTTP/1.1\r\nHost: HOST\r\nContent-Length: 2\r\n\r\n{}", true},

	{"PUT, no such route", put("/v1/services/web", "", `{}`), true},
	{"register, close", put("/v1/services/web/instances/web-9", "Connection: close\r\n", `{"address":"127.0.0.1","port":9090,"tags":["t"],"meta":{"k":"v"}}`), true},

	{"register, body over the limit", put("/v1/services/web/instances/web-8", "", strings.Repeat(" ", 64<<10+1)), false},
	{"register, chunked", "PUT /v1/services/web/instances/web-8 HTTP/1.1\r\nHost: HOST\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n", false},
	{"register, expect", put("/v1/services/web/instances/web-8", "Expect: 100-continue\r\n", `{}`), false},
	{"register, two lengths", "PUT /v1/services/web/instances/web-8 HTTP/1.1\r\nHost: HOST\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n{}", false},
	{"register, signed length", "PUT /v1/services/web/instances/web-8 HTTP/1.1\r\nHost: HOST\r\nContent-Length: +2\r\n\r\n{}", false},
	{"write outside /v1/services/", "PUT /v1/tokens HTTP/1.1\r\nHost: HOST\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}", false},
	{"PATCH", "PATCH /v1/services/web/instances/web-1 HTTP/1.1\r\nHost: HOST\r\nContent-Length: 0\r\n\r\n", false},
	{"POST under /v1/services/", "POST /v1/services/web/instances HTTP/1.1\r\nHost: HOST\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}", false},
}

// TestFastPathWritesAnswerAsNetHTTP: writes under /v1/services/ with a
// body of known length take the fast path and are answered as net/http's
// path answers them; the rest are handed off.
func TestFastPathWritesAnswerAsNetHTTP(t *testing.T) {
	fast, slow := twinServers(t)
	seedCatalog(fast)
	checkParity(t, fast, slow, fastWriteCases)
	// What the registrations stored, read through net/http's path.
	a := slow.exchange(get("/v1/services/web/instances/web-9", ""), "GET")[0]
	if a.status != http.StatusOK || !bytes.Contains(a.body, []byte(`"port":9090`)) || !bytes.Contains(a.body, []byte(`"meta":{"k":"v"}`)) {
		t.Fatalf("web-9 after its registration through the fast path: %d %s", a.status, a.body)
	}
}

// TestFastPathReadsEachBodyToItsEnd: pipelined writes on one connection,
// some of whose handlers read their body and some not, each answered in
// order; the next request starts where a body ends.
func TestFastPathReadsEachBodyToItsEnd(t *testing.T) {
	fast, _ := twinServers(t)
	seedCatalog(fast)
	looksLikeARequest := "GET /v1/services HTTP/1.1\r\nHost: x\r\n\r\n"
	ignored := fmt.Sprintf("DELETE /v1/services/-bad-/instances/nope HTTP/1.1\r\nHost: HOST\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
		len(looksLikeARequest), looksLikeARequest)
	raw := put("/v1/services/pipe/instances/p-1", "", `{"address":"127.0.0.1","port":1}`) +
		ignored +
		put("/v1/services/pipe/instances/p-2", "", `{"address":"127.0.0.1","port":2}`) +
		put("/v1/services/pipe/instances/p-3", "", `{"address":`) +
		get("/v1/services/pipe/instances", "Connection: close\r\n")
	served, handed := fast.fastStats()
	answers := fast.exchange(raw, "PUT", "DELETE", "PUT", "PUT", "GET")
	var got []int
	for _, a := range answers {
		if a.err != nil {
			t.Fatalf("answers %v: %v", got, a.err)
		}
		got = append(got, a.status)
	}
	if want := []int{200, 400, 200, 400, 200}; !slices.Equal(got, want) {
		t.Fatalf("statuses %v, want %v", got, want)
	}
	var insts []client.Instance
	if err := json.Unmarshal(answers[4].body, &insts); err != nil || len(insts) != 2 {
		t.Fatalf("pipe's instances: %v %s", err, answers[4].body)
	}
	if s, h := fast.fastStats(); s != served+5 || h != handed {
		t.Errorf("served %d→%d (want +5), handed off %d→%d (want none)", served, s, handed, h)
	}
}

// TestFastPathAfterAPOSTBody: net/http skips a stray CRLF a client sends
// after a POST's body; the POST goes to net/http, so the request after it
// is read as net/http reads it.
func TestFastPathAfterAPOSTBody(t *testing.T) {
	fast, slow := twinServers(t)
	seedCatalog(fast)
	raw := "POST /v1/services/web/instances HTTP/1.1\r\nHost: HOST\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}\r\n" +
		get("/v1/services", "Connection: close\r\n")
	a, b := fast.exchange(raw, "POST", "GET"), slow.exchange(raw, "POST", "GET")
	if len(a) != 2 || len(b) != 2 {
		t.Fatalf("answers: %d and %d, want 2 each", len(a), len(b))
	}
	for i := range a {
		sameAnswer(t, fmt.Sprint("answer ", i), a[i], b[i])
	}
}

// TestFastPathBodyLimitIsNetHTTPs: a body longer than net/http drops
// unread (256 KiB) goes to net/http even when MaxBodyBytes allows it, so
// that an unread one closes the connection as net/http's would.
func TestFastPathBodyLimitIsNetHTTPs(t *testing.T) {
	fast, slow := twinServers(t, func(c *Config) { c.MaxBodyBytes = 1 << 20 })
	seedCatalog(fast)
	body := strings.Repeat(" ", 300<<10)
	checkParity(t, fast, slow, []fastCase{
		{"300 KiB body, unread", fmt.Sprintf("DELETE /v1/services/-bad-/instances/nope HTTP/1.1\r\nHost: HOST\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body), false},
		{"200 KiB body, unread", fmt.Sprintf("DELETE /v1/services/-bad-/instances/nope HTTP/1.1\r\nHost: HOST\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", 200<<10, body[:200<<10]), true},
	})
}

// TestFastPathBodyTooSlowOrCut: a body that does not arrive within the
// read timeout gets net/http's answer (408) and the connection closes; one
// the client cuts short gets its 400.
func TestFastPathBodyTooSlowOrCut(t *testing.T) {
	// Without the body's own deadline the fast path would wait for the
	// head's (a minute), past the test connection's 30 s.
	fast, slow := twinServers(t, func(c *Config) { c.ReadTimeout, c.ReadHeaderTimeout = 300*time.Millisecond, time.Minute })
	head := "PUT /v1/services/web/instances/w-1 HTTP/1.1\r\nHost: HOST\r\nContent-Type: application/json\r\nContent-Length: 40\r\n\r\n{\"address\""
	unread := "DELETE /v1/services/-bad-/instances/nope HTTP/1.1\r\nHost: HOST\r\nContent-Type: application/json\r\nContent-Length: 40\r\n\r\n{\"a\""
	for _, c := range []struct {
		what      string
		raw       string
		cut       bool
		wantClose bool
	}{
		// A slow body's connection closes.
		{"slow body", head, false, true},
		// A cut one the handler read to its end: the answer says nothing
		// of closing (net/http reads the client's end as the body's).
		{"cut body", head, true, false},
		// A cut one the handler did not read: net/http finds it short
		// when it drops it, and closes.
		{"cut body, unread", unread, true, true},
	} {
		var answers [2]rawAnswer
		for i, ts := range []*testServer{fast, slow} {
			answers[i] = ts.exchangeHalf(c.raw, c.cut)
		}
		if a := answers[0]; a.err != nil || a.status < 400 || a.close != c.wantClose {
			t.Errorf("%s: fast path answered %d close=%v %v", c.what, a.status, a.close, a.err)
		}
		sameAnswer(t, c.what, answers[0], answers[1])
	}
}

// TestFastPathClosingDoesNotWaitForABody: when the answer closes the
// connection anyway (the client asked to), a handler's answer that read
// no body goes out at once, as net/http's: without it, the fast path would
// wait for the body until the read timeout (a minute here, past the test
// connection's 30 s).
func TestFastPathClosingDoesNotWaitForABody(t *testing.T) {
	fast, slow := twinServers(t, func(c *Config) { c.ReadTimeout, c.ReadHeaderTimeout = time.Minute, time.Minute })
	raw := "DELETE /v1/services/-bad-/instances/nope HTTP/1.1\r\nHost: HOST\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: 40\r\n\r\n{\"a\""
	a := fast.exchangeHalf(raw, false)
	if a.err != nil || a.status != http.StatusBadRequest || !a.close {
		t.Fatalf("fast path: %d close=%v %v", a.status, a.close, a.err)
	}
	sameAnswer(t, "stalled body, Connection: close", a, slow.exchangeHalf(raw, false))
}

// exchangeHalf sends raw (part of a request) and, when cut is set, closes
// its side of the connection; then it reads one answer.
func (ts *testServer) exchangeHalf(raw string, cut bool) rawAnswer {
	ts.t.Helper()
	conn := ts.send(raw)
	defer conn.Close()
	if cut {
		_ = conn.(*net.TCPConn).CloseWrite()
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: "PUT"})
	if err != nil {
		return rawAnswer{err: err}
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	return rawAnswer{status: resp.StatusCode, header: resp.Header, body: body, close: resp.Close, err: err}
}

// seedCatalog registers what the cases read.
func seedCatalog(ts *testServer) {
	ts.register("web", "web-1", client.Registration{Address: "127.0.0.1", Port: 8080, Tags: []string{"blue"}, Meta: map[string]string{"zone": "a"}})
	ts.register("web", "web-2", client.Registration{Address: "127.0.0.1", Port: 8081, Tags: []string{"green"}, Meta: map[string]string{"zone": "b"}})
}

// TestFastPathAnswersAsNetHTTP sends every case to an API with the fast
// path and to one without, over one catalog, and compares the answers;
// each case must take the path it is listed for.
func TestFastPathAnswersAsNetHTTP(t *testing.T) {
	fast, slow := twinServers(t)
	seedCatalog(fast)
	checkParity(t, fast, slow, fastCases)
}

// checkParity sends each case to fast and then to slow and compares the
// answers; each case must take the path it is listed for on fast.
func checkParity(t *testing.T, fast, slow *testServer, cases []fastCase) {
	t.Helper()
	for _, c := range cases {
		method := strings.Fields(c.raw)[0]
		served, handed := fast.fastStats()
		a := fast.exchange(c.raw, method)[0]
		served2, handed2 := fast.fastStats()
		switch {
		case c.fast && (served2 != served+1 || handed2 != handed):
			t.Errorf("%s: not served by the fast path (served %d→%d, handed off %d→%d)", c.name, served, served2, handed, handed2)
		case !c.fast && (served2 != served || handed2 != handed+1):
			t.Errorf("%s: not handed to net/http (served %d→%d, handed off %d→%d)", c.name, served, served2, handed, handed2)
		}
		sameAnswer(t, c.name, a, slow.exchange(c.raw, method)[0])
	}
}

// TestFastPathAnswersAsNetHTTPWithAuth is the same with tokens checked.
func TestFastPathAnswersAsNetHTTPWithAuth(t *testing.T) {
	const mgmt = "management-secret"
	fast, slow := twinServers(t, func(c *Config) { c.Auth = AuthConfig{ManagementTokenHash: HashToken(mgmt)} })
	// Registered with the management token (do sends none).
	for _, id := range []string{"web-1", "web-2"} {
		body := `{"address":"127.0.0.1","port":8080}`
		raw := fmt.Sprintf("PUT /v1/services/web/instances/%s HTTP/1.1\r\nHost: HOST\r\nX-Beacon-Token: %s\r\n"+
			"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", id, mgmt, len(body), body)
		if a := fast.exchange(raw, "PUT")[0]; a.status != http.StatusOK {
			t.Fatalf("register %s: %d %s", id, a.status, a.body)
		}
	}
	cases := []fastCase{
		{"no token", get("/v1/services/web/instances", ""), true},
		{"bad token", get("/v1/services/web/instances", "X-Beacon-Token: nope\r\n"), true},
		{"management token", get("/v1/services/web/instances", "X-Beacon-Token: "+mgmt+"\r\n"), true},
		{"bearer", get("/v1/services/web/instances", "Authorization: Bearer "+mgmt+"\r\n"), true},
		{"lower-case token header", get("/v1/services/web/instances", "x-beacon-token: "+mgmt+"\r\n"), true},
		{"token in the URL", get("/v1/services/web/instances?token="+mgmt, ""), true},
		{"tokens list", get("/v1/tokens", "X-Beacon-Token: "+mgmt+"\r\n"), true},
		{"tokens list, no token", get("/v1/tokens", ""), true},
		{"foreign origin with token", get("/v1/services", "X-Beacon-Token: "+mgmt+"\r\nOrigin: http://evil.example\r\n"), true},
	}
	reg := `{"address":"127.0.0.1","port":8080}`
	cases = append(cases,
		fastCase{"register, no token", put("/v1/services/web/instances/web-1", "", reg), true},
		fastCase{"register, bad token", put("/v1/services/web/instances/web-1", "X-Beacon-Token: nope\r\n", reg), true},
		fastCase{"register, management token", put("/v1/services/web/instances/web-1", "X-Beacon-Token: "+mgmt+"\r\n", reg), true},
		fastCase{"deregister, no token", "DELETE /v1/services/web/instances/web-1 HTTP/1.1\r\nHost: HOST\r\n\r\n", true},
	)
	for _, c := range cases {
		method := strings.Fields(c.raw)[0]
		served, _ := fast.fastStats()
		a := fast.exchange(c.raw, method)[0]
		if s, _ := fast.fastStats(); s != served+1 {
			t.Errorf("%s: not served by the fast path", c.name)
		}
		sameAnswer(t, c.name, a, slow.exchange(c.raw, method)[0])
	}
	if a := fast.exchange(get("/v1/services/web/instances/web-1", "X-Beacon-Token: "+mgmt+"\r\n"), "GET")[0]; a.status != http.StatusOK {
		t.Fatalf("web-1 after a deregistration without a token: %d %s", a.status, a.body)
	}
}

// TestFastPathKeepsAConnectionAndHandsItOver: requests on one connection,
// pipelined, are answered in order; the first that is not for the fast
// path hands the connection, with the bytes after it, to net/http, which
// answers it and the rest.
func TestFastPathKeepsAConnectionAndHandsItOver(t *testing.T) {
	fast, _ := twinServers(t)
	seedCatalog(fast)
	raw := get("/v1/services/web/instances/web-1", "") + get("/v1/services/web/instances/web-2", "") +
		"HEAD /v1/services HTTP/1.1\r\nHost: HOST\r\n\r\n" + get("/v1/services/web/instances/web-1", "Connection: close\r\n")
	served, handed := fast.fastStats()
	answers := fast.exchange(raw, "GET", "GET", "HEAD", "GET")
	if len(answers) != 4 {
		t.Fatalf("%d answers, want 4: %+v", len(answers), answers)
	}
	for i, want := range []string{"web-1", "web-2", "", "web-1"} {
		a := answers[i]
		if a.err != nil || a.status != http.StatusOK {
			t.Fatalf("answer %d: %d %v %s", i, a.status, a.err, a.body)
		}
		if want != "" && !bytes.Contains(a.body, []byte(`"id":"`+want+`"`)) {
			t.Errorf("answer %d is not %s's: %s", i, want, a.body)
		}
	}
	if !answers[3].close {
		t.Errorf("the last answer does not close the connection")
	}
	if s, h := fast.fastStats(); s != served+2 || h != handed+1 {
		t.Errorf("served %d→%d (want +2), handed off %d→%d (want +1)", served, s, handed, h)
	}
}

// TestFastPathHeadersDoNotCarryOver: a connection reuses its header map
// from request to request; nothing of one request's header may reach the
// next one's handler.
func TestFastPathHeadersDoNotCarryOver(t *testing.T) {
	fast, _ := twinServers(t)
	seedCatalog(fast)
	raw := get("/v1/services/web/instances", "Origin: http://evil.example\r\nX-A: 1\r\n") +
		get("/v1/services/web/instances", "X-A: 1\r\n") +
		get("/v1/services/web/instances", "Sec-Fetch-Site: cross-site\r\n") +
		get("/v1/services/web/instances", "")
	served, _ := fast.fastStats()
	answers := fast.exchange(raw, "GET", "GET", "GET", "GET")
	var got []int
	for _, a := range answers {
		got = append(got, a.status)
	}
	if want := []int{http.StatusForbidden, http.StatusOK, http.StatusForbidden, http.StatusOK}; !slices.Equal(got, want) {
		t.Errorf("statuses %v, want %v", got, want)
	}
	if s, _ := fast.fastStats(); s != served+4 {
		t.Errorf("served %d of 4 on the fast path", s-served)
	}
}

// TestFastPathTargetsDoNotCarryOver: a connection parses a target only
// when it differs from the last request's (parseTarget), so a run of
// requests on one connection that repeat, change and go back to targets
// must each be answered for its own target, as net/http answers it.
func TestFastPathTargetsDoNotCarryOver(t *testing.T) {
	fast, slow := twinServers(t)
	seedCatalog(fast)
	targets := []string{
		"/v1/services/web/instances?tag=blue",
		"/v1/services/web/instances?tag=blue",
		"/v1/services/web/instances?tag=green",
		"/v1/services/web/instances",
		"/v1/services/web/instances/web-2",
		"/v1/services/web/instances/web-2",
		"/v1/services/web/instances/web-1",
		"/v1/services/web/instances?tag=blue",
		"/v1/services/web/instances?tag=%62lue", // the same query, spelled otherwise
		"/v1/services",
	}
	var raw string
	methods := make([]string, len(targets))
	for i, tg := range targets {
		raw += get(tg, "")
		methods[i] = http.MethodGet
	}
	served, _ := fast.fastStats()
	got := fast.exchange(raw, methods...)
	if len(got) != len(targets) {
		t.Fatalf("%d answers of %d: %+v", len(got), len(targets), got[len(got)-1])
	}
	for i, tg := range targets {
		want := slow.exchange(get(tg, ""), http.MethodGet)[0]
		sameAnswer(t, fmt.Sprintf("request %d (%s)", i, tg), got[i], want)
	}
	// Each differs from its neighbours where the targets do.
	if bytes.Equal(got[1].body, got[2].body) || bytes.Equal(got[5].body, got[6].body) {
		t.Error("requests for different targets got the same answer")
	}
	if s, _ := fast.fastStats(); s != served+int64(len(targets)) {
		t.Errorf("served %d of %d on the fast path", s-served, len(targets))
	}
}

// TestFastPathSendsALongAnswerInChunks: an answer longer than the fast
// path keeps goes out in chunks as the handler writes it, the same JSON
// as net/http's path sends.
func TestFastPathSendsALongAnswerInChunks(t *testing.T) {
	fast, slow := twinServers(t)
	long := strings.Repeat("m", 500)
	n := 0
	for ; n*700 < 3*fastBodyMax; n++ {
		fast.register("big", fmt.Sprintf("big-%03d", n), client.Registration{Address: "127.0.0.1", Port: 9000 + n, Meta: map[string]string{"pad": long}})
	}
	raw := get("/v1/services/big/instances", "") + get("/v1/services/big/instances/big-001", "") +
		get("/v1/services/big/instances", "Connection: close\r\n")
	a := fast.exchange(raw, "GET", "GET", "GET")
	b := slow.exchange(raw, "GET", "GET", "GET")
	if len(a) != 3 || a[0].err != nil || a[1].err != nil || a[2].err != nil {
		t.Fatalf("fast path answers: %+v", a)
	}
	if !a[2].chunked || !a[2].close {
		t.Errorf("a long answer to Connection: close: chunked %v, close %v; want both", a[2].chunked, a[2].close)
	}
	if !a[0].chunked || len(a[0].body) <= fastBodyMax {
		t.Errorf("the long answer (%d bytes) was not chunked", len(a[0].body))
	}
	if a[1].chunked {
		t.Errorf("a short answer after it was chunked")
	}
	var insts []client.Instance
	if err := json.Unmarshal(a[0].body, &insts); err != nil || len(insts) != n {
		t.Fatalf("decoded %d instances of %d: %v", len(insts), n, err)
	}
	for i := range a {
		sameAnswer(t, fmt.Sprint("answer ", i), a[i], b[i])
	}
}

// TestFastPathShutdown: Shutdown closes idle connections at once and lets
// a request in flight finish, with "Connection: close".
func TestFastPathShutdown(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	ts := newTestServerOn(t, nil, func(s *Server) {
		s.Mount("/v1/held/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			close(entered)
			<-release
			_, _ = io.WriteString(w, "done")
		}))
	})
	addr := strings.TrimPrefix(ts.url, "http://")
	idle, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	busy, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	for _, c := range []net.Conn{idle, busy} {
		_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	}
	// The idle connection has been served once.
	if _, err := io.WriteString(idle, strings.ReplaceAll(get("/v1/services", ""), "HOST", addr)); err != nil {
		t.Fatal(err)
	}
	idleR := bufio.NewReader(idle)
	resp, err := http.ReadResponse(idleR, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	if _, err := io.WriteString(busy, strings.ReplaceAll(get("/v1/held/x", ""), "HOST", addr)); err != nil {
		t.Fatal(err)
	}
	<-entered
	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		shut <- ts.api.Shutdown(ctx)
	}()
	// The idle connection is closed while the request is still held.
	if _, err := idleR.ReadByte(); err == nil {
		t.Fatal("the idle connection sent data; want it closed")
	}
	close(release)
	resp, err = http.ReadResponse(bufio.NewReader(busy), nil)
	if err != nil {
		t.Fatalf("the request in flight got no answer: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	if string(body) != "done" || !resp.Close {
		t.Errorf("answer %q, close=%v; want done, close", body, resp.Close)
	}
	if err := <-shut; err != nil {
		t.Errorf("shutdown: %v", err)
	}
}

// TestFastPathShutdownBeforeServe: a Shutdown that comes before Serve has
// started its fast path still stops it: Serve returns and serves nothing.
func TestFastPathShutdownBeforeServe(t *testing.T) {
	cl := apitest.NewCluster(testLogger(t, "fsm"))
	s := New(DefaultConfig(), cl.Store(), cl)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		ln.Close()
		<-served
		t.Fatal("Serve after Shutdown did not return")
	}
	if c, err := net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second); err == nil {
		c.Close()
		t.Error("the listener still accepts connections")
	}
}

// TestFastPathShutdownKeepsItsDeadline: Shutdown returns when its context
// ends even if a handler has not returned (as net/http's does), with the
// context's error.
func TestFastPathShutdownKeepsItsDeadline(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	ts := newTestServerOn(t, nil, func(s *Server) {
		s.Mount("/v1/stuck/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			close(entered)
			<-release
		}))
	})
	defer close(release) // lets the handler end before the leak check
	go func() { _ = ts.exchange(get("/v1/stuck/x", ""), "GET") }()
	<-entered
	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		shut <- ts.api.Shutdown(ctx)
	}()
	select {
	case err := <-shut:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("shutdown: %v, want the context's deadline", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Shutdown waited for a stuck handler past its context")
	}
}

// TestFastPathPanicClosesOnlyItsConnection: a handler's panic ends its
// connection without an answer (as net/http's server does); the server goes
// on serving.
func TestFastPathPanicClosesOnlyItsConnection(t *testing.T) {
	var panics atomic.Int64
	ts := newTestServerOn(t, nil, func(s *Server) {
		s.Mount("/v1/boom/", http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
			panics.Add(1)
			panic("boom")
		}))
	})
	a := ts.exchange(get("/v1/boom/x", ""), "GET")
	if a[0].err == nil {
		t.Fatalf("the panicking request got an answer: %d %s", a[0].status, a[0].body)
	}
	if panics.Load() != 1 {
		t.Fatalf("handler ran %d times", panics.Load())
	}
	if b := ts.exchange(get("/v1/services", ""), "GET"); b[0].err != nil || b[0].status != http.StatusOK {
		t.Fatalf("after the panic: %+v", b[0])
	}
}

// TestFastPathLeavesTLSToNetHTTP: a TLS connection is handed over before
// anything is read of it.
func TestFastPathLeavesTLSToNetHTTP(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	tc := tls.Client(a, &tls.Config{})
	if !isTLS(tc) || !isTLS(&prefixConn{Conn: tc}) {
		t.Fatal("a TLS connection is not seen as one")
	}
	if isTLS(a) || isTLS(&prefixConn{Conn: a}) {
		t.Fatal("a plain connection is seen as TLS")
	}
}

func TestHasQueryKey(t *testing.T) {
	for q, want := range map[string]bool{
		"": false, "index": true, "index=1": true, "a=1&index=2": true, "ind%65x=1": true, "%69ndex": true,
		"indexes=1": false, "x=index": false, "in+dex=1": false, "%zz=1": true, "a=%zz": false,
	} {
		if got := hasQueryKey([]byte(q), "index"); got != want {
			t.Errorf("hasQueryKey(%q) = %v, want %v", q, got, want)
		}
	}
}

// FuzzFastPathRequest: every head the fast path takes must be one net/http
// reads the same way: method, target, URL, host, header fields (Host moved
// out, as net/http's server does), "Connection: close", no body.
func FuzzFastPathRequest(f *testing.F) {
	for _, c := range fastCases {
		f.Add([]byte(strings.ReplaceAll(c.raw, "HOST", "127.0.0.1:8500")))
	}
	for _, c := range fastWriteCases {
		f.Add([]byte(strings.ReplaceAll(c.raw, "HOST", "127.0.0.1:8500")))
	}
	type key struct{}
	ctx := context.WithValue(context.Background(), key{}, "the connection's")
	srv := &fastServer{s: &Server{cfg: Config{MaxBodyBytes: 64 << 10}}}
	c := &fastConn{f: srv, ctx: ctx, remoteAddr: "127.0.0.1:1", template: &http.Request{}}
	f.Fuzz(func(t *testing.T, data []byte) {
		head, err := connlimit.PeekHead(bufio.NewReaderSize(bytes.NewReader(data), fastReadBufSize), nil)
		if err != nil {
			return
		}
		got, ok := c.request(head)
		if !ok {
			return
		}
		if got.Context().Value(key{}) != "the connection's" || got.RemoteAddr != c.remoteAddr || (got.Body == http.NoBody) != (got.ContentLength == 0) {
			t.Fatalf("head %q: the request lacks the connection's context or address, or its body does not match its length %d", head, got.ContentLength)
		}
		want, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(head)))
		if err != nil {
			t.Fatalf("the fast path took %q, net/http refuses it: %v", head, err)
		}
		want.Header.Del("Host") // if ReadRequest left it: the server deletes it
		if got.Method != want.Method || got.RequestURI != want.RequestURI || got.URL.String() != want.URL.String() ||
			got.URL.Path != want.URL.Path || got.URL.RawPath != want.URL.RawPath || got.URL.RawQuery != want.URL.RawQuery ||
			got.Host != want.Host || got.Close != want.Close || got.ContentLength != want.ContentLength || got.Proto != want.Proto ||
			!reflect.DeepEqual(got.Header, want.Header) {
			t.Fatalf("head %q\nfast path: %s %s %q host %q close %v %v\nnet/http:  %s %s %q host %q close %v %v (length %d)", head,
				got.Method, got.RequestURI, got.URL, got.Host, got.Close, got.Header,
				want.Method, want.RequestURI, want.URL, want.Host, want.Close, want.Header, want.ContentLength)
		}
	})
}

// TestFastPathParksABlockingQuery: a blocking query parks straight from
// the fast path (its connection hijacked, nothing handed to net/http), is
// answered on its connection when the catalog changes, and the request the
// client pipelined behind it is served on the same connection after the
// answer; net/http's path gives the same two answers.
func TestFastPathParksABlockingQuery(t *testing.T) {
	fast, slow := twinServers(t)
	seedCatalog(fast)
	n := fast.register("web", "web-3", client.Registration{Address: "127.0.0.1", Port: 8082})
	for i, ts := range []*testServer{fast, slow} {
		served, handed := fast.fastStats()
		raw := get(fmt.Sprintf("/v1/services/web/instances?index=%d&wait=1m", n), "") +
			get("/v1/services", "Connection: close\r\n")
		conn := ts.send(raw)
		ts.awaitParked(t, 1)
		if s, h := fast.fastStats(); ts == fast && (s != served+1 || h != handed) {
			t.Errorf("fast path: served %d→%d (want +1), handed off %d→%d (want none)", served, s, handed, h)
		}
		n = ts.register("web", fmt.Sprintf("web-%d", 4+i), client.Registration{Address: "127.0.0.1", Port: 8083 + i})
		br := bufio.NewReader(conn)
		var insts []client.Instance
		var list client.ServiceList
		for k, into := range []any{&insts, &list} {
			resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodGet})
			if err != nil {
				t.Fatalf("server %d, answer %d: %v", i, k, err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != http.StatusOK {
				t.Fatalf("server %d, answer %d: %d %v %s", i, k, resp.StatusCode, err, body)
			}
			if err := json.Unmarshal(body, into); err != nil {
				t.Fatalf("server %d, answer %d: %v: %s", i, k, err, body)
			}
		}
		conn.Close()
		if len(insts) != 4+i || len(list.Services) == 0 {
			t.Errorf("server %d: %d instances after the change (want %d), %d services", i, len(insts), 4+i, len(list.Services))
		}
		ts.awaitParked(t, 0)
	}
}

// TestFastPathDateFollowsTheClock: the fast path formats the Date header
// once a second, telling the second's end by the monotonic clock (now).
// Every answer's Date is the wall clock's second at the time it was
// written, and it moves on as the seconds pass.
func TestFastPathDateFollowsTheClock(t *testing.T) {
	ts, _ := twinServers(t)
	conn := ts.send("")
	defer conn.Close()
	br := bufio.NewReader(conn)
	seen := map[string]bool{}
	deadline := time.Now().Add(10 * time.Second)
	for len(seen) < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("the Date header took only the values %v in 10 s", seen)
		}
		before := time.Now().Truncate(time.Second)
		if _, err := io.WriteString(conn, "GET /v1/services HTTP/1.1\r\nHost: "+strings.TrimPrefix(ts.url, "http://")+"\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodGet})
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		after := time.Now()
		date, err := http.ParseTime(resp.Header.Get("Date"))
		if err != nil {
			t.Fatalf("Date %q: %v", resp.Header.Get("Date"), err)
		}
		if date.Before(before) || date.After(after) {
			t.Fatalf("Date %v, sent between %v and %v", date, before, after)
		}
		seen[resp.Header.Get("Date")] = true
		time.Sleep(50 * time.Millisecond) // pacing only: the loop waits on the values seen
	}
	if served, _ := ts.fastStats(); served == 0 {
		t.Fatal("the fast path served none of the reads")
	}
}
