//go:build linux

package api

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/beaconhq/beacon/api/client"
)

func (ts *testServer) looped() int64 {
	ts.api.fastMu.Lock()
	f := ts.api.fast
	ts.api.fastMu.Unlock()
	return f.looped.Load()
}

// loopConn dials ts and has its first request answered: the connection's
// next requests are the raw loop's.
func (ts *testServer) loopConn(t *testing.T) (net.Conn, *bufio.Reader) {
	t.Helper()
	conn := ts.send(get("/v1/services", ""))
	t.Cleanup(func() { conn.Close() })
	br := bufio.NewReader(conn)
	readOK(t, br, "first request")
	return conn, br
}

func readOK(t *testing.T, br *bufio.Reader, what string) []byte {
	t.Helper()
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("%s: %d %v %s", what, resp.StatusCode, err, body)
	}
	return body
}

func (ts *testServer) write(t *testing.T, conn net.Conn, raw string) {
	t.Helper()
	addr := strings.TrimPrefix(ts.url, "http://")
	if _, err := io.WriteString(conn, strings.ReplaceAll(raw, "HOST", addr)); err != nil {
		t.Fatal(err)
	}
}

// A client that sends each request once it has the last answer (the
// common client) is served from the loop, every request.
func TestRawLoopServesSequentialRequests(t *testing.T) {
	ts := newTestServerOn(t, nil, nil, func(c *Config) { c.IdleTimeout = time.Minute })
	seedCatalog(ts)
	conn, br := ts.loopConn(t)
	before := ts.looped()
	for i := range 200 {
		id := fmt.Sprintf("web-%d", 1+i%2)
		ts.write(t, conn, get("/v1/services/web/instances/"+id, ""))
		// A lost wake-up would hold the answer until the idle timeout
		// (a minute): the connection's deadline (30 s) fails first.
		body := readOK(t, br, "request "+fmt.Sprint(i))
		if !strings.Contains(string(body), `"id":"`+id+`"`) {
			t.Fatalf("request %d: not %s's answer: %s", i, id, body)
		}
	}
	if n := ts.looped() - before; n != 200 {
		t.Fatalf("the raw loop took %d of 200 requests", n)
	}
}

// A request sent while the loop runs a slow handler is answered after it,
// without waiting for the idle timeout.
func TestRawLoopSeesARequestSentDuringAnAnswer(t *testing.T) {
	entered, release := make(chan struct{}, 1), make(chan struct{})
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(release) }) })
	ts := newTestServerOn(t, nil, func(s *Server) {
		s.Mount("/v1/held/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			entered <- struct{}{}
			<-release
			_, _ = io.WriteString(w, "held")
		}))
	}, func(c *Config) { c.IdleTimeout = time.Minute })
	conn, br := ts.loopConn(t)
	before := ts.looped()
	ts.write(t, conn, get("/v1/held/x", ""))
	<-entered
	ts.write(t, conn, get("/v1/services", ""))
	once.Do(func() { close(release) })
	if body := readOK(t, br, "held request"); string(body) != "held" {
		t.Fatalf("answer %q", body)
	}
	readOK(t, br, "request sent meanwhile")
	if n := ts.looped() - before; n != 2 {
		t.Fatalf("the raw loop took %d of the 2 requests", n)
	}
}

// Pipelined requests are answered in order from the loop, and a head that
// comes in pieces is put together.
func TestRawLoopPipelinesAndJoinsAHeadInPieces(t *testing.T) {
	ts := newTestServerOn(t, nil, nil)
	seedCatalog(ts)
	conn, br := ts.loopConn(t)
	before := ts.looped()
	var all strings.Builder
	for i := range 6 {
		all.WriteString(get(fmt.Sprintf("/v1/services/web/instances/web-%d", 1+i%2), ""))
	}
	ts.write(t, conn, all.String())
	for i := range 6 {
		body := readOK(t, br, fmt.Sprint("pipelined ", i))
		if want := fmt.Sprintf(`"id":"web-%d"`, 1+i%2); !strings.Contains(string(body), want) {
			t.Fatalf("answer %d out of order: %s", i, body)
		}
	}
	whole := strings.ReplaceAll(get("/v1/services/web/instances/web-2", ""), "HOST", strings.TrimPrefix(ts.url, "http://"))
	for len(whole) > 0 {
		n := min(len(whole), 7)
		if _, err := io.WriteString(conn, whole[:n]); err != nil {
			t.Fatal(err)
		}
		whole = whole[n:]
	}
	if body := readOK(t, br, "head in pieces"); !strings.Contains(string(body), `"id":"web-2"`) {
		t.Fatalf("answer %s", body)
	}
	if n := ts.looped() - before; n != 7 {
		t.Fatalf("the raw loop took %d of the 7 requests", n)
	}
}

// A half-sent head in the loop is bounded by the read header timeout, not
// the idle timeout.
func TestRawLoopBoundsAHalfSentHead(t *testing.T) {
	ts := newTestServerOn(t, nil, nil, func(c *Config) {
		c.ReadHeaderTimeout = 300 * time.Millisecond
		c.IdleTimeout = time.Minute
	})
	conn, br := ts.loopConn(t)
	ts.write(t, conn, "GET /v1/services HTTP/1.1\r\nHo")
	_ = conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("read: %v, want the server's close", err)
	}
}

// A registration whose body is longer than the connection's buffer leaves
// the loop (its body is read on the ordinary path); the next request is
// the loop's again.
func TestRawLoopHandsALongBodyToTheOrdinaryPath(t *testing.T) {
	ts := newTestServerOn(t, nil, nil)
	conn, br := ts.loopConn(t)
	before := ts.looped()
	meta := map[string]string{}
	for i := range 16 {
		meta[fmt.Sprint("k", i)] = strings.Repeat("x", 500)
	}
	reg := client.Registration{Address: "127.0.0.1", Port: 8080, Meta: meta}
	body, _ := json.Marshal(reg)
	if len(body) <= fastReadBufSize {
		t.Fatalf("the body (%d bytes) fits the connection's buffer", len(body))
	}
	ts.write(t, conn, put("/v1/services/web/instances/big-1", "", string(body)))
	readOK(t, br, "long registration")
	if ts.looped() != before {
		t.Fatal("the raw loop took a request whose body it could not hold")
	}
	got := readOKAfter(t, ts, conn, br, get("/v1/services/web/instances/big-1", ""))
	var inst client.Instance
	if err := json.Unmarshal(got, &inst); err != nil || len(inst.Meta) != 16 || inst.Meta["k15"] != meta["k15"] {
		t.Fatalf("stored %d metadata entries (%v), want 16", len(inst.Meta), err)
	}
	if ts.looped() != before+1 {
		t.Fatal("the request after the long registration was not the loop's")
	}
}

func readOKAfter(t *testing.T, ts *testServer, conn net.Conn, br *bufio.Reader, raw string) []byte {
	t.Helper()
	ts.write(t, conn, raw)
	return readOK(t, br, raw[:strings.IndexByte(raw, '\r')])
}

// A blocking query taken by the loop parks (the handler takes the
// connection), is answered when the catalog changes, and the connection
// goes on serving.
func TestRawLoopParksABlockingQuery(t *testing.T) {
	ts := newTestServerOn(t, nil, nil)
	seedCatalog(ts)
	conn, br := ts.loopConn(t)
	idx := ts.register("web", "web-3", client.Registration{Address: "127.0.0.1", Port: 8082})
	before := ts.looped()
	ts.write(t, conn, get(fmt.Sprintf("/v1/services/web/instances?index=%d&wait=1m", idx), ""))
	ts.awaitParked(t, 1)
	if ts.looped() != before+1 {
		t.Fatal("the blocking query was not the loop's")
	}
	ts.register("web", "web-4", client.Registration{Address: "127.0.0.1", Port: 8083})
	var insts []client.Instance
	if err := json.Unmarshal(readOK(t, br, "blocking query"), &insts); err != nil || len(insts) != 4 {
		t.Fatalf("%d instances (%v), want 4", len(insts), err)
	}
	readOKAfter(t, ts, conn, br, get("/v1/services", ""))
}

// Shutdown closes a connection idle in the loop at once.
func TestRawLoopShutdownClosesAnIdleConnection(t *testing.T) {
	ts := newTestServerOn(t, nil, nil)
	_, br := ts.loopConn(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := ts.api.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("read: %v, want EOF", err)
	}
}
