package lb

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/beaconhq/beacon/connlimit"
)

// The balancer tells a cleartext HTTP/2 connection (prior knowledge) from
// an HTTP/1 one by its first bytes, and waits for more only while they are
// the start of the HTTP/2 preface (fastServer, connlimit.PeekPreface).
// Before, a net/http server with UnencryptedHTTP2 looked for the preface
// on every connection and waited for 14 bytes first: a request shorter
// than that was answered only after the read header timeout (10 s).

// shortRequestAnswer is how long a test waits for the answer to a short
// request: far below the read header timeout the stall lasted.
const shortRequestAnswer = 3 * time.Second

func TestShortRequestsAreAnsweredAtOnce(t *testing.T) {
	bothPaths(t, func(t *testing.T, mut func(*Config)) {
		tb := startBackend(t, "web-1")
		cat := newMemCatalog()
		idx := cat.Set("web", tb.backend())
		b, url := startBalancer(t, cat, func(c *Config) { mut(c); c.ReadHeaderTimeout = 10 * time.Second })
		waitTable(t, b, "web", idx)
		for _, tc := range []struct {
			raw  string
			want int
		}{
			{"GET /\r\n\r\n", 400},              // 9 bytes, no version
			{"X\r\n\r\n", 400},                  // garbage
			{"PRI\r\n\r\n", 400},                // starts as the preface does, then differs
			{"GET / HTTP/1.0\r\n\r\n", 404},     // 18 bytes, HTTP/1.0: no route for /
			{"GET /web/ HTTP/1.0\r\n\r\n", 200}, // shorter than the 24-byte preface
			{"GET /web HTTP/1.1\r\nHost: a\r\n\r\n", 200},
		} {
			c, br := dialRaw(t, url)
			_ = c.SetDeadline(time.Now().Add(shortRequestAnswer))
			if _, err := io.WriteString(c, tc.raw); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("%q: no answer within %v (read header timeout 10 s): %v", tc.raw, shortRequestAnswer, err)
			}
			_, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Fatalf("%q: answered %d, want %d", tc.raw, resp.StatusCode, tc.want)
			}
			c.Close()
		}

		// A short request after a proxied one on the same connection (the
		// fast path hands the connection over at that point).
		c, br := dialRaw(t, url)
		_ = c.SetDeadline(time.Now().Add(2 * shortRequestAnswer))
		fmt.Fprint(c, "GET /web/ HTTP/1.1\r\nHost: a\r\n\r\n")
		if r := readAnswer(t, br, "first request"); r.StatusCode != 200 {
			t.Fatalf("first request answered %d", r.StatusCode)
		}
		fmt.Fprint(c, "GET /\r\n\r\n")
		if r := readAnswer(t, br, "a short request after a proxied one"); r.StatusCode != 400 {
			t.Fatalf("a short request after a proxied one answered %d, want 400", r.StatusCode)
		}
	})
}

// slowPrefaceConn is a client connection that writes the first bytes it
// sends (the HTTP/2 preface) one at a time, as a slow client's segments
// would come.
type slowPrefaceConn struct {
	net.Conn
	left int // bytes still to send one by one
}

func (c *slowPrefaceConn) Write(p []byte) (int, error) {
	n := 0
	for c.left > 0 && n < len(p) {
		if _, err := c.Conn.Write(p[n : n+1]); err != nil {
			return n, err
		}
		n++
		c.left--
		// Pacing, not waiting for a condition: the server is meant to
		// see the preface come in pieces (the test holds whatever it sees).
		time.Sleep(2 * time.Millisecond)
	}
	m, err := c.Conn.Write(p[n:])
	return n + m, err
}

func TestH2CPriorKnowledgeIsServed(t *testing.T) {
	bothPaths(t, func(t *testing.T, mut func(*Config)) {
		tb := startBackend(t, "web-1")
		cat := newMemCatalog()
		idx := cat.Set("web", tb.backend())
		b, url := startBalancer(t, cat, mut)
		waitTable(t, b, "web", idx)
		for _, slow := range []bool{false, true} {
			var p http.Protocols
			p.SetUnencryptedHTTP2(true)
			tr := &http.Transport{Protocols: &p}
			var d net.Dialer
			tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
				nc, err := d.DialContext(ctx, network, addr)
				if err != nil || !slow {
					return nc, err
				}
				return &slowPrefaceConn{Conn: nc, left: len(connlimit.Preface)}, nil
			}
			client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
			for i := range 3 {
				resp, err := client.Get(url + "/web/")
				if err != nil {
					t.Fatalf("slow preface %v, request %d: %v", slow, i, err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.ProtoMajor != 2 || resp.StatusCode != 200 || string(body) != "web-1" {
					t.Fatalf("slow preface %v, request %d: got %s %d %q, want HTTP/2.0 200 web-1", slow, i, resp.Proto, resp.StatusCode, body)
				}
			}
			tr.CloseIdleConnections()
		}
		if n := tb.hits.Load(); n != 6 {
			t.Fatalf("backend saw %d requests, want 6", n)
		}
	})
}
