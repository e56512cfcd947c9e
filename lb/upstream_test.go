package lb

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// oneService registers tb as the only instance of service web.
func oneService(t *testing.T, tb *testBackend, mutate func(*Config)) (*Balancer, string) {
	t.Helper()
	cat := newMemCatalog()
	idx := cat.Set("web", tb.backend())
	b, url := startBalancer(t, cat, mutate)
	waitTable(t, b, "web", idx)
	return b, url
}

func TestForwardedRequestLosesHopHeadersAndGetsForwardingHeaders(t *testing.T) {
	tb := startBackend(t, "web-1")
	seen := make(chan http.Header, 1)
	tb.handle(func(w http.ResponseWriter, r *http.Request) {
		h := r.Header.Clone()
		h.Set("X-Seen-Query", r.URL.RawQuery)
		h.Set("X-Seen-Host", r.Host)
		seen <- h
		w.Header().Set("Connection", "X-Resp-Hop")
		w.Header().Set("X-Resp-Hop", "1")
		w.Header().Set("Keep-Alive", "timeout=5")
		w.Header().Add("X-Multi", "a")
		w.Header().Add("X-Multi", "b")
		fmt.Fprint(w, "ok")
	})
	_, url := oneService(t, tb, nil)
	req, _ := http.NewRequest(http.MethodGet, url+"/web/x?a=1;b=2", nil)
	req.Host = "shop.example"
	req.Header.Set("Connection", "X-Secret")
	req.Header.Set("X-Secret", "s")
	req.Header.Set("Proxy-Authorization", "Basic Zm9vOmJhcg==")
	req.Header.Set("Te", "trailers")
	req.Header.Set("X-Forwarded-For", "6.6.6.6")
	req.Header.Set("X-Forwarded-Host", "evil.example")
	req.Header.Set("Forwarded", "for=6.6.6.6")
	req.Header.Add("X-App", "1")
	req.Header.Add("X-App", "2")
	resp, err := newClient(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "ok" {
		t.Fatalf("%d %q", resp.StatusCode, body)
	}
	h := <-seen
	for _, k := range []string{"X-Secret", "Proxy-Authorization", "Forwarded", "Connection"} {
		if v := h.Get(k); v != "" {
			t.Errorf("the instance got %s: %q", k, v)
		}
	}
	want := map[string]string{
		"X-Forwarded-For": "127.0.0.1", "X-Forwarded-Host": "shop.example", "X-Forwarded-Proto": "http",
		"X-Forwarded-Prefix": "/web", "Te": "trailers", "X-Seen-Host": "shop.example",
		// The unparsable query is re-encoded, as ReverseProxy does.
		"X-Seen-Query": "",
	}
	for k, v := range want {
		if got := h.Get(k); got != v {
			t.Errorf("the instance got %s %q, want %q", k, got, v)
		}
	}
	if got := h.Values("X-App"); len(got) != 2 || got[0] != "1" || got[1] != "2" {
		t.Errorf("X-App %q, want both values", got)
	}
	if _, ok := h["User-Agent"]; !ok || h.Get("User-Agent") != "Go-http-client/1.1" {
		t.Errorf("User-Agent %q: the client's must pass", h.Get("User-Agent"))
	}
	if resp.Header.Get("X-Resp-Hop") != "" || resp.Header.Get("Keep-Alive") != "" {
		t.Errorf("hop-by-hop response headers reached the client: %v", resp.Header)
	}
	if got := resp.Header.Values("X-Multi"); len(got) != 2 {
		t.Errorf("X-Multi %q, want both values", got)
	}
}

func TestNoUserAgentIsAddedWhenTheClientSentNone(t *testing.T) {
	tb := startBackend(t, "web-1")
	ua := make(chan []string, 1)
	tb.handle(func(w http.ResponseWriter, r *http.Request) { ua <- r.Header["User-Agent"] })
	_, url := oneService(t, tb, nil)
	conn, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprint(conn, "GET /web/ HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := <-ua; len(got) != 0 {
		t.Fatalf("the instance got User-Agent %q", got)
	}
}

func TestBodiesPassBothWaysWhateverTheirFraming(t *testing.T) {
	tb := startBackend(t, "web-1")
	tb.handle(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Len", fmt.Sprint(r.ContentLength))
		if r.URL.Query().Get("stream") != "" {
			// No Content-Length: chunked to the balancer.
			for i := 0; i < 3; i++ {
				_, _ = w.Write(b)
				w.(http.Flusher).Flush()
			}
			return
		}
		_, _ = w.Write(b)
	})
	_, url := oneService(t, tb, nil)
	c := newClient(t)
	payload := strings.Repeat("0123456789", 10_000)
	for _, tc := range []struct {
		name    string
		body    io.Reader
		query   string
		wantLen string
		want    string
	}{
		{"content-length", strings.NewReader(payload), "", fmt.Sprint(len(payload)), payload},
		{"chunked request", io.MultiReader(strings.NewReader(payload)), "", "-1", payload},
		{"chunked response", strings.NewReader("abc"), "?stream=1", "3", "abcabcabc"},
		{"empty", http.NoBody, "", "0", ""},
	} {
		resp, err := c.Post(url+"/web/"+tc.query, "text/plain", tc.body)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 || string(got) != tc.want || resp.Header.Get("X-Len") != tc.wantLen {
			t.Fatalf("%s: %d, %d bytes (want %d), X-Len %q (want %q), %v", tc.name, resp.StatusCode, len(got), len(tc.want), resp.Header.Get("X-Len"), tc.wantLen, err)
		}
	}
	resp, err := c.Head(url + "/web/")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("HEAD: %v %v", resp, err)
	}
	resp.Body.Close()
	// The connection is still good after a HEAD.
	if code, _, _ := get(t, c, url+"/web/"); code != 200 {
		t.Fatalf("GET after HEAD: %d", code)
	}
}

func TestTrailersAndStreamsPassThrough(t *testing.T) {
	tb := startBackend(t, "web-1")
	release := make(chan struct{})
	tb.handle(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/trailers":
			w.Header().Set("Trailer", "X-Sum")
			fmt.Fprint(w, "body")
			w.Header().Set("X-Sum", "42")
			w.Header().Set(http.TrailerPrefix+"X-Late", "late")
		case "/events":
			w.Header().Set("Content-Type", "text/event-stream")
			w.Header().Set("Content-Length", "1000")
			fmt.Fprint(w, "data: one\n\n")
			w.(http.Flusher).Flush()
			<-release
		}
	})
	_, url := oneService(t, tb, nil)
	c := newClient(t)
	resp, err := c.Get(url + "/web/trailers")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "body" || resp.Trailer.Get("X-Sum") != "42" || resp.Trailer.Get("X-Late") != "late" {
		t.Fatalf("body %q trailers %v", body, resp.Trailer)
	}

	// The first event arrives while the instance still holds the stream.
	resp, err = c.Get(url + "/web/events")
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(resp.Body).ReadString('\n')
		got <- line
	}()
	select {
	case line := <-got:
		if line != "data: one\n" {
			t.Fatalf("first event %q", line)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the event was held back by the balancer")
	}
	close(release)
	resp.Body.Close()
}

func TestATruncatedResponseIsCutNotCompleted(t *testing.T) {
	tb := startBackend(t, "web-1")
	tb.handle(func(w http.ResponseWriter, r *http.Request) {
		// ?n=SENT&of=LENGTH: a body of LENGTH bytes announced, SENT sent.
		sent, length := 10, 100
		fmt.Sscan(r.URL.Query().Get("n"), &sent)
		fmt.Sscan(r.URL.Query().Get("of"), &length)
		conn, brw, _ := http.NewResponseController(w).Hijack()
		fmt.Fprintf(brw, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", length, strings.Repeat("b", sent))
		brw.Flush()
		conn.Close()
	})
	_, url := oneService(t, tb, nil)
	c := newClient(t)
	// Cut within what one read brings, within the instance connection's
	// buffer after more reads, and far beyond it.
	for _, q := range []string{"", "?n=4000&of=6000", "?n=50000&of=100000"} {
		resp, err := c.Get(url + "/web/" + q)
		if err == nil {
			_, err = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		if err == nil {
			t.Fatalf("%s: the client read a truncated body as whole", q)
		}
	}
}

func TestUpstreamTimeoutsAndOversizedHeaders(t *testing.T) {
	tb := startBackend(t, "web-1")
	release := make(chan struct{})
	defer close(release)
	tb.handle(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/slow":
			select {
			case <-release:
			case <-r.Context().Done():
			}
		case "/huge":
			for i := 0; i < 200; i++ {
				w.Header().Set(fmt.Sprintf("X-H%d", i), strings.Repeat("h", 8000))
			}
		}
	})
	b, url := oneService(t, tb, func(c *Config) {
		c.ResponseHeaderTimeout = 2 * time.Second
		c.MaxRetries = 0
		c.EjectAfter = 0
	})
	c := newClient(t)
	if code, body, _ := get(t, c, url+"/web/slow"); code != http.StatusGatewayTimeout || !strings.Contains(body, CodeTimeout) {
		t.Fatalf("slow instance: %d %s", code, body)
	}
	if code, body, _ := get(t, c, url+"/web/huge"); code != http.StatusBadGateway || !strings.Contains(body, "larger than") {
		t.Fatalf("huge headers: %d %s", code, body)
	}
	// The connections of failed requests were closed, not pooled.
	if code, _, _ := get(t, c, url+"/web/"); code != 200 {
		t.Fatalf("after the failures: %d", code)
	}
	u := b.proxy.upstream
	u.mu.Lock()
	n := u.nidle
	u.mu.Unlock()
	if n != 1 {
		t.Fatalf("%d idle connections after one good request, want 1", n)
	}
}

// closingBackend answers each request on a raw connection and then closes
// it without saying so (no Connection: close), like an instance whose
// keep-alive timeout has just run out. It counts the connections.
func closingBackend(t *testing.T) (Backend, *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns atomic.Int64
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				req, err := http.ReadRequest(bufio.NewReader(c))
				if err != nil {
					return
				}
				_, _ = io.Copy(io.Discard, req.Body)
				fmt.Fprint(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			}()
		}
	}()
	port := ln.Addr().(*net.TCPAddr).Port
	return Backend{ID: "closing", Address: "127.0.0.1", Port: port, Weight: 1, Status: Passing}, &conns
}

func TestConnectionsTheInstanceClosedAreNotUsedToLoseRequests(t *testing.T) {
	be, conns := closingBackend(t)
	cat := newMemCatalog()
	idx := cat.Set("web", be)
	b, url := startBalancer(t, cat, func(c *Config) { c.MaxRetries = 0 })
	waitTable(t, b, "web", idx)
	c := newClient(t)
	// Back to back: the pooled connection may look alive when taken; an
	// idempotent request goes again on a new connection.
	for i := 0; i < 20; i++ {
		if code, body, _ := get(t, c, url+"/web/"); code != 200 || body != "ok" {
			t.Fatalf("GET %d: %d %q", i, code, body)
		}
	}
	// After a pause the closed connection is noticed before it is used, so
	// that even a POST (never sent twice once written) gets through.
	for i := 0; i < 3; i++ {
		time.Sleep(300 * time.Millisecond) // longer than staleCheckAfterIdle
		resp, err := c.Post(url+"/web/", "text/plain", strings.NewReader("order"))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != "ok" {
			t.Fatalf("POST %d after a pause: %d %q", i, resp.StatusCode, body)
		}
	}
	if n := conns.Load(); n < 23 {
		t.Fatalf("%d connections for 23 requests: the test proves nothing", n)
	}
}

func TestIdleUpstreamConnectionsAreReusedThenClosed(t *testing.T) {
	tb := startBackend(t, "web-1")
	var conns sync.Map
	tb.handle(func(w http.ResponseWriter, r *http.Request) { conns.Store(r.RemoteAddr, true) })
	b, url := oneService(t, tb, func(c *Config) { c.UpstreamIdleTimeout = 200 * time.Millisecond })
	c := newClient(t)
	for i := 0; i < 50; i++ {
		if code, _, _ := get(t, c, url+"/web/"); code != 200 {
			t.Fatalf("GET %d: %d", i, code)
		}
	}
	n := 0
	conns.Range(func(any, any) bool { n++; return true })
	if n != 1 {
		t.Fatalf("%d connections to the instance for 50 sequential requests, want 1", n)
	}
	u := b.proxy.upstream
	eventually(t, func() bool {
		u.mu.Lock()
		defer u.mu.Unlock()
		return u.nidle == 0 && u.sweep == nil
	}, "the idle connection closed after UpstreamIdleTimeout")
}
