package api

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/beaconhq/beacon/api/client"
	"github.com/beaconhq/beacon/fsm"
	"github.com/beaconhq/beacon/fsm/fsmtest/wait"
)

// rawConn is one client connection written and read by hand, so a test
// knows which connection carried which request.
type rawConn struct {
	t    *testing.T
	conn net.Conn
	br   *bufio.Reader
}

func (ts *testServer) dialRaw(t *testing.T) *rawConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", strings.TrimPrefix(ts.url, "http://"), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawConn{t: t, conn: c, br: bufio.NewReader(c)}
}

func (rc *rawConn) send(raw string) {
	rc.t.Helper()
	_ = rc.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(rc.conn, raw); err != nil {
		rc.t.Fatal(err)
	}
}

// getReq is a GET of target from the host the test server listens on (the
// API refuses other Host headers: site.go).
func (rc *rawConn) getReq(target string) string {
	return "GET " + target + " HTTP/1.1\r\nHost: " + rc.conn.RemoteAddr().String() + "\r\n\r\n"
}

// read reads one response within timeout.
func (rc *rawConn) read(timeout time.Duration) (*http.Response, string) {
	rc.t.Helper()
	_ = rc.conn.SetReadDeadline(time.Now().Add(timeout))
	resp, err := http.ReadResponse(rc.br, nil)
	if err != nil {
		rc.t.Fatalf("reading a response: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		rc.t.Fatalf("reading a response's body: %v", err)
	}
	return resp, string(b)
}

// parkedNow is how many queries wait out of net/http on ts.
func (ts *testServer) parkedNow() int { return int(ts.api.BlockingStats().Parked) }

func (ts *testServer) awaitParked(t *testing.T, n int) {
	t.Helper()
	wait.Until(t, 30*time.Second, fmt.Sprintf("%d parked queries", n), func() bool { return ts.parkedNow() == n })
}

// A blocking query that waits leaves net/http: while it waits the lot holds
// it, net/http's in-flight request is gone, and once the catalog changes
// the answer comes on the client's connection, complete and well formed,
// and the same connection then serves the client's next request.
func TestParkedQueryIsAnsweredOnItsConnectionWhichStaysOpen(t *testing.T) {
	ts := newTestServer(t)
	populate(ts)
	n := readIndex(t, ts.do(http.MethodGet, "/v1/services/web/instances", nil))
	rc := ts.dialRaw(t)
	rc.send(rc.getReq(fmt.Sprintf("/v1/services/web/instances?index=%d&wait=1m", n)))
	ts.awaitParked(t, 1)
	if got := ts.api.BlockingStats().Active; got != 1 {
		t.Fatalf("blocking queries active: %d, want 1 (a parked query counts)", got)
	}

	idx := ts.applyCmd(fsm.RegisterType, registerCmd("web-9", "web", 9999))
	resp, body := rc.read(30 * time.Second)
	if resp.StatusCode != http.StatusOK || resp.ProtoMajor != 1 || resp.ProtoMinor != 1 {
		t.Fatalf("answer %s %d: %s", resp.Proto, resp.StatusCode, body)
	}
	if got, _ := strconv.ParseUint(resp.Header.Get(HeaderIndex), 10, 64); got != idx {
		t.Fatalf("%s %q, want %d", HeaderIndex, resp.Header.Get(HeaderIndex), idx)
	}
	for _, h := range []string{"Content-Type", "Date", client.HeaderAgent, HeaderKnownLeader, HeaderLastContact} {
		if resp.Header.Get(h) == "" {
			t.Errorf("the parked answer lacks %s: %v", h, resp.Header)
		}
	}
	if resp.ContentLength != int64(len(body)) || resp.Close {
		t.Fatalf("Content-Length %d for %d bytes, close %v", resp.ContentLength, len(body), resp.Close)
	}
	var insts []client.Instance
	decodeStrict(t, []byte(body), &insts)
	if len(insts) != 3 || insts[2].ID != "web-9" {
		t.Fatalf("the answer: %s", body)
	}
	if ts.parkedNow() != 0 || ts.api.BlockingStats().Active != 0 {
		t.Fatalf("after the answer: %d parked, %d active", ts.parkedNow(), ts.api.BlockingStats().Active)
	}

	// The same connection: a plain read, then another blocking query that
	// parks again and ends at its wait.
	rc.send(rc.getReq("/v1/services/web/instances/web-9"))
	resp, body = rc.read(30 * time.Second)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `"id":"web-9"`) {
		t.Fatalf("the next request on the connection: %d %s", resp.StatusCode, body)
	}
	rc.send(rc.getReq(fmt.Sprintf("/v1/services/web/instances?index=%d&wait=50ms", idx)))
	resp, body = rc.read(30 * time.Second)
	if resp.StatusCode != http.StatusOK || resp.Header.Get(HeaderIndex) != strconv.FormatUint(idx, 10) {
		t.Fatalf("a wait that ended: %d %v %s", resp.StatusCode, resp.Header, body)
	}
}

// Bytes the client sent behind its blocking query (a pipelined request)
// are its next request: parking keeps them.
func TestParkedQueryKeepsAPipelinedRequest(t *testing.T) {
	ts := newTestServer(t)
	populate(ts)
	n := readIndex(t, ts.do(http.MethodGet, "/v1/services/web/instances", nil))
	rc := ts.dialRaw(t)
	rc.send(rc.getReq(fmt.Sprintf("/v1/services/web/instances?index=%d&wait=1m", n)) + rc.getReq("/v1/services/web/instances/web-1"))
	ts.awaitParked(t, 1)
	ts.applyCmd(fsm.RegisterType, registerCmd("web-9", "web", 9999))
	resp, body := rc.read(30 * time.Second)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `"id":"web-9"`) {
		t.Fatalf("the blocking query: %d %s", resp.StatusCode, body)
	}
	resp, body = rc.read(30 * time.Second)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `"id":"web-1"`) {
		t.Fatalf("the pipelined request: %d %s", resp.StatusCode, body)
	}
}

// A client that hangs up on its parked query frees the query's slot: the
// lot notices from the connection's TCP state and ends the wait, long
// before the wait would have ended.
func TestParkedQueryOfAClientThatLeftEnds(t *testing.T) {
	ts := newTestServer(t, func(c *Config) { c.MaxBlockingQueries = 1 })
	populate(ts)
	n := readIndex(t, ts.do(http.MethodGet, "/v1/services/web/instances", nil))
	rc := ts.dialRaw(t)
	rc.send(rc.getReq(fmt.Sprintf("/v1/services/web/instances?index=%d&wait=10m", n)))
	ts.awaitParked(t, 1)
	// The one slot is taken: another blocking query is refused.
	if r := ts.do(http.MethodGet, fmt.Sprintf("/v1/services/web/instances?index=%d&wait=1m", n), nil); r.status != http.StatusTooManyRequests {
		t.Fatalf("a second blocking query over the cap: %s", r)
	}
	rc.conn.Close()
	wait.Until(t, 30*time.Second, "the slot freed", func() bool {
		return ts.parkedNow() == 0 && ts.api.BlockingStats().Active == 0
	})
	// And the slot serves another query.
	done := ts.startRead(fmt.Sprintf("/v1/services/web/instances?index=%d&wait=50ms", n))
	if br := ts.awaitRead(done); br.r.status != http.StatusOK {
		t.Fatalf("a blocking query after the slot was freed: %s", br.r)
	}
}

// Shutdown answers parked queries with 503 and closes their connections,
// and returns only once they are answered (TestMain's goleak checks that
// nothing of theirs is left).
func TestShutdownAnswersParkedQueries(t *testing.T) {
	ts := newTestServer(t)
	populate(ts)
	n := readIndex(t, ts.do(http.MethodGet, "/v1/services/web/instances", nil))
	var conns []*rawConn
	for range 5 {
		rc := ts.dialRaw(t)
		rc.send(rc.getReq(fmt.Sprintf("/v1/services/web/instances?index=%d&wait=10m", n)))
		conns = append(conns, rc)
	}
	ts.awaitParked(t, 5)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := ts.api.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	for _, rc := range conns {
		resp, body := rc.read(10 * time.Second)
		if resp.StatusCode != http.StatusServiceUnavailable || !resp.Close || !strings.Contains(body, `"shutting_down"`) {
			t.Fatalf("a parked query at shutdown: %d close=%v %s", resp.StatusCode, resp.Close, body)
		}
		_ = rc.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := rc.br.ReadByte(); err != io.EOF {
			t.Fatalf("the connection after the shutdown answer: %v, want EOF", err)
		}
	}
	if ts.parkedNow() != 0 || ts.api.BlockingStats().Active != 0 {
		t.Fatalf("after shutdown: %d parked, %d active", ts.parkedNow(), ts.api.BlockingStats().Active)
	}
}

// The metrics count a parked query as in flight while it waits and as
// answered, with its status, once: when it is answered.
func TestParkedQueryIsCountedWhenAnswered(t *testing.T) {
	reg := prometheus.NewRegistry()
	ts := newTestServer(t, func(c *Config) { c.Metrics = reg })
	populate(ts)
	n := readIndex(t, ts.do(http.MethodGet, "/v1/services/web/instances", nil))
	answered := func() float64 {
		return testutil.ToFloat64(ts.api.metrics.requests.WithLabelValues("GET /v1/services/{service}/instances", "GET", "200"))
	}
	before := answered()
	rc := ts.dialRaw(t)
	rc.send(rc.getReq(fmt.Sprintf("/v1/services/web/instances?index=%d&wait=1m", n)))
	ts.awaitParked(t, 1)
	if got := testutil.ToFloat64(ts.api.metrics.inflight); got != 1 {
		t.Fatalf("in flight while parked: %v, want 1", got)
	}
	if got := answered(); got != before {
		t.Fatalf("answered %v while parked, want %v", got, before)
	}
	ts.applyCmd(fsm.RegisterType, registerCmd("web-9", "web", 9999))
	if resp, body := rc.read(30 * time.Second); resp.StatusCode != http.StatusOK {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	// The lot records the request right after writing it.
	wait.Until(t, 10*time.Second, "the parked query counted", func() bool {
		return answered() == before+1 && testutil.ToFloat64(ts.api.metrics.inflight) == 0
	})
}

// Served through Handler (no Serve, so no lot) or over a connection that
// cannot be parked (HTTP/1.0, "Connection: close"), a blocking query waits
// in its handler as it always did, and answers the same way.
func TestBlockingQueryThatCannotParkWaitsInItsHandler(t *testing.T) {
	t.Run("Handler", func(t *testing.T) {
		ts := newTestServer(t)
		populate(ts)
		n := readIndex(t, ts.do(http.MethodGet, "/v1/services/web/instances", nil))
		// Another API over the same store and cluster, served only by
		// httptest through its Handler.
		cfg := DefaultConfig()
		cfg.Logger = testLogger(t, "api2")
		other := New(cfg, ts.cl.Store(), ts.cl)
		hs := httptest.NewServer(other.Handler())
		defer hs.Close()
		done := make(chan *http.Response, 1)
		go func() {
			resp, err := hs.Client().Get(fmt.Sprintf("%s/v1/services/web/instances?index=%d&wait=1m", hs.URL, n))
			if err != nil {
				done <- nil
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			done <- resp
		}()
		wait.Until(t, 30*time.Second, "the query waiting", func() bool { return other.BlockingStats().Active == 1 })
		idx := ts.applyCmd(fsm.RegisterType, registerCmd("web-9", "web", 9999))
		select {
		case resp := <-done:
			if resp == nil || resp.StatusCode != http.StatusOK || resp.Header.Get(HeaderIndex) != strconv.FormatUint(idx, 10) {
				t.Fatalf("answer: %+v", resp)
			}
		case <-time.After(time.Minute):
			t.Fatal("the blocking query never returned")
		}
	})
	for _, tc := range []struct{ name, req string }{
		{"HTTP/1.0", "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n"},
		{"Connection: close", "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := newTestServer(t)
			populate(ts)
			n := readIndex(t, ts.do(http.MethodGet, "/v1/services/web/instances", nil))
			rc := ts.dialRaw(t)
			rc.send(fmt.Sprintf(tc.req, fmt.Sprintf("/v1/services/web/instances?index=%d&wait=1m", n), rc.conn.RemoteAddr()))
			wait.Until(t, 30*time.Second, "the query waiting", func() bool { return ts.api.BlockingStats().Active == 1 })
			if ts.parkedNow() != 0 {
				t.Fatalf("parked")
			}
			ts.applyCmd(fsm.RegisterType, registerCmd("web-9", "web", 9999))
			resp, body := rc.read(30 * time.Second)
			if resp.StatusCode != http.StatusOK || !strings.Contains(body, `"id":"web-9"`) {
				t.Fatalf("answer: %d %s", resp.StatusCode, body)
			}
		})
	}
}

// Many parked queries on one service all wake on its change, each with the
// answer, each on its own connection.
func TestManyParkedQueriesAllWake(t *testing.T) {
	ts := newTestServer(t)
	populate(ts)
	n := readIndex(t, ts.do(http.MethodGet, "/v1/services/web/instances", nil))
	const queries = 150 // under the per-client connection cap (200)
	tr := &http.Transport{MaxConnsPerHost: queries, MaxIdleConnsPerHost: queries}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 2 * time.Minute}
	type result struct {
		status int
		index  string
		body   string
		err    error
	}
	results := make(chan result, queries)
	for range queries {
		go func() {
			resp, err := hc.Get(fmt.Sprintf("%s/v1/services/web/instances?index=%d&wait=1m", ts.url, n))
			if err != nil {
				results <- result{err: err}
				return
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			results <- result{resp.StatusCode, resp.Header.Get(HeaderIndex), string(b), err}
		}()
	}
	ts.awaitParked(t, queries)
	idx := ts.applyCmd(fsm.RegisterType, registerCmd("web-9", "web", 9999))
	for range queries {
		r := <-results
		if r.err != nil || r.status != http.StatusOK || r.index != strconv.FormatUint(idx, 10) || !strings.Contains(r.body, `"id":"web-9"`) {
			t.Fatalf("a parked query's answer: %+v", r)
		}
	}
	ts.awaitParked(t, 0)
}

// Parked queries cost no goroutine each, whether they share their watch
// (one service's watchers) or not (each on a service of its own, more than
// one watcher's worth), and each wakes on its own service's change only.
func TestParkedQueriesHoldNoGoroutineEach(t *testing.T) {
	ts := newTestServer(t, func(c *Config) { c.MaxConnsPerClient = 0 }) // 300 connections from one address
	const services = 300                                                // over two watchers' worth of groups (groupsPerWatcher)
	idx := make([]uint64, services)
	for i := range services {
		idx[i] = ts.applyCmd(fsm.RegisterType, registerCmd("i-1", fmt.Sprintf("svc-%d", i), 8080))
	}
	baseline := runtime.NumGoroutine()
	// Raw connections: the client side starts no goroutine per request.
	conns := make([]*rawConn, services)
	for i := range services {
		conns[i] = ts.dialRaw(t)
		conns[i].send(conns[i].getReq(fmt.Sprintf("/v1/services/svc-%d/instances?index=%d&wait=5m", i, idx[i])))
	}
	ts.awaitParked(t, services)
	// net/http's connection goroutines end just after their query parks:
	// wait for them, bounded. A goroutine per parked query never settles.
	wait.For(t, 30*time.Second, 10*time.Millisecond, func() (bool, string) {
		grown := runtime.NumGoroutine() - baseline
		return grown <= 20, fmt.Sprintf("%d parked queries on %d services hold %d goroutines", services, services, grown)
	})

	// A change to one service answers its watcher alone.
	changed := ts.applyCmd(fsm.RegisterType, registerCmd("i-2", "svc-7", 8081))
	resp, body := conns[7].read(30 * time.Second)
	if resp.StatusCode != http.StatusOK || resp.Header.Get(HeaderIndex) != strconv.FormatUint(changed, 10) || !strings.Contains(body, `"id":"i-2"`) {
		t.Fatalf("svc-7's watcher: %d %v %s", resp.StatusCode, resp.Header, body)
	}
	ts.awaitParked(t, services-1)

	// Then every other service changes: every watcher answers, with its
	// service's change.
	for i := range services {
		if i != 7 {
			idx[i] = ts.applyCmd(fsm.RegisterType, registerCmd("i-2", fmt.Sprintf("svc-%d", i), 8081))
		}
	}
	for i, rc := range conns {
		if i == 7 {
			continue
		}
		resp, body := rc.read(30 * time.Second)
		if resp.StatusCode != http.StatusOK || resp.Header.Get(HeaderIndex) != strconv.FormatUint(idx[i], 10) || !strings.Contains(body, `"id":"i-2"`) {
			t.Fatalf("svc-%d's watcher: %d %v %s", i, resp.StatusCode, resp.Header, body)
		}
	}
	ts.awaitParked(t, 0)
}

// The response a parked query writes itself is well formed whatever its
// status, headers and body: it parses as one HTTP/1.1 response with its
// body's length, a header value cannot start another header or the body,
// and Connection says whether the connection is kept.
func FuzzParkedResponseHead(f *testing.F) {
	f.Add(200, "X-Beacon-Index", "42", []byte(`[{"id":"web-1"}]`), true)
	f.Add(503, "Retry-After", "1", []byte(`{"error":"x"}`), false)
	f.Add(204, "X-A", "b\r\nX-Injected: 1", []byte("ignored"), true)
	f.Add(404, "X-A", "b\r\n\r\nbody", []byte{}, true)
	f.Add(0, "Content-Length", "1", []byte("<html>"), true)
	f.Fuzz(func(t *testing.T, status int, key, value string, body []byte, keep bool) {
		if status != 0 && (status < 200 || status > 599) {
			return
		}
		key = http.CanonicalHeaderKey(key)
		if key == "" || strings.ContainsAny(key, " :\r\n\t") || !utf8.ValidString(key) {
			return
		}
		pw := &parkedResponse{header: http.Header{}}
		pw.Header().Set(key, value)
		if status != 0 {
			pw.WriteHeader(status)
		}
		_, _ = pw.Write(body)
		raw := append(pw.head(keep), pw.body.Bytes()...)
		resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(append(raw, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"...))), nil)
		if err != nil {
			t.Fatalf("%q does not parse: %v", raw, err)
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		want := body
		if status == 0 {
			status = http.StatusOK
		}
		if status == http.StatusNoContent || status == http.StatusNotModified {
			want = nil
		}
		if resp.StatusCode != status || !bytes.Equal(got, want) {
			t.Fatalf("status %d body %q, want %d %q (raw %q)", resp.StatusCode, got, status, want, raw)
		}
		if resp.Close == keep {
			t.Fatalf("keep %v, Close %v", keep, resp.Close)
		}
		if resp.Header.Get("X-Injected") != "" {
			t.Fatalf("a header value made a header: %q", raw)
		}
	})
}

// head cleans a header value without writing into its slice: the API
// shares value slices between responses (setReadHeaders' valTrue).
func TestParkedResponseHeadLeavesSharedValuesAlone(t *testing.T) {
	shared := []string{"a\x01b"}
	clean := []string{"true"}
	pw := &parkedResponse{header: http.Header{"X-Shared": shared, "X-Clean": clean}}
	_, _ = pw.Write([]byte("{}"))
	head := string(pw.head(true))
	if shared[0] != "a\x01b" || clean[0] != "true" {
		t.Fatalf("head wrote into shared slices: %q %q", shared, clean)
	}
	if !strings.Contains(head, "X-Shared: a b\r\n") || !strings.Contains(head, "X-Clean: true\r\n") {
		t.Fatalf("head: %q", head)
	}
}
