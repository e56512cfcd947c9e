package lb

// A request body the client does not send whole (malformed framing, a
// stall, a client that leaves half-way) is the client's fault: it is
// answered (400, 408) or cut, never retried, never counted against the
// instance, on both paths and whichever of them reads the body (the fast
// path for a small Content-Length body, net/http for chunked and larger
// ones).

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// fourBackends registers four real backends as service web and starts a
// balancer in front of them; each backend reads its request's body.
func fourBackends(t *testing.T, mut func(*Config)) (*Balancer, string) {
	t.Helper()
	cat := newMemCatalog()
	var recs []Backend
	for i := range 4 {
		recs = append(recs, startBackend(t, fmt.Sprintf("web-%d", i+1)).backend())
	}
	idx := cat.Set("web", recs...)
	b, url := startBalancer(t, cat, mut)
	waitTable(t, b, "web", idx)
	return b, url
}

// requireUncharged waits until no request is in flight on any instance of
// web and fails if any failure or ejection was counted against one.
func requireUncharged(t *testing.T, b *Balancer) {
	t.Helper()
	instances := func() []InstanceStatus { return b.Status().Services[0].Instances }
	eventually(t, func() bool {
		for _, in := range instances() {
			if in.InFlight != 0 {
				return false
			}
		}
		return true
	}, "no request in flight on any instance")
	for _, in := range instances() {
		if in.Failures != 0 || in.Consecutive != 0 || in.Ejected || in.Ejections != 0 {
			t.Fatalf("instance %s was charged for the client's body: %+v", in.ID, in)
		}
	}
}

// requireErrorAnswer reads one answer and checks its status and JSON code.
func requireErrorAnswer(t *testing.T, c net.Conn, status int, code, what string) {
	t.Helper()
	got, err := io.ReadAll(c) // the balancer closes after the answer; dialRaw's deadline bounds the wait
	if err != nil && len(got) == 0 {
		t.Fatalf("%s: no answer: %v", what, err)
	}
	head, body, _ := strings.Cut(string(got), "\r\n\r\n")
	if want := fmt.Sprintf("HTTP/1.1 %d ", status); !strings.HasPrefix(head, want) {
		t.Fatalf("%s: got %q, want %q...", what, got, want)
	}
	var eb ErrorBody
	if err := json.Unmarshal([]byte(body), &eb); err != nil || eb.Code != code || eb.Service != "web" {
		t.Fatalf("%s: body %q (%v), want code %q", what, body, err, code)
	}
	if !strings.Contains(strings.ToLower(head), "\r\nconnection: close") {
		t.Fatalf("%s: the answer does not close the connection: %q", what, head)
	}
}

// Twenty malformed chunked bodies would have ejected half of the service
// (502 upstream_unreachable, each counted as the instance's failure).
func TestMalformedRequestBodyIsAnswered400AndNotCharged(t *testing.T) {
	bothPaths(t, func(t *testing.T, mut func(*Config)) {
		b, url := fourBackends(t, mut)
		for i := range 20 {
			chunk := "zz\r\n" // invalid byte in chunk length
			if i%2 == 1 {
				chunk = "4\nabcd\r\n" // a chunk line ended by a bare LF
			}
			c, _ := dialRaw(t, url)
			fmt.Fprint(c, "POST /web/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"+chunk)
			requireErrorAnswer(t, c, http.StatusBadRequest, CodeBadBody, fmt.Sprintf("chunk %q", chunk))
			c.Close()
		}
		requireUncharged(t, b)
	})
}

// stalledBodies are requests whose body stops short, and the path that
// reads it.
var stalledBodies = []struct{ name, raw string }{
	{"chunked (net/http)", "POST /web/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n"},
	{"over 64 KiB (net/http)", "POST /web/a HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + strings.Repeat("a", 70000)},
	{"small (fast path)", "PUT /web/a HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc"},
}

// A stalled body was never cut where net/http read it (no body deadline on
// its server), holding an upstream connection and an in-flight count; the
// fast path cut it without an answer.
func TestStalledRequestBodyIsAnswered408(t *testing.T) {
	bothPaths(t, func(t *testing.T, mut func(*Config)) {
		b, url := fourBackends(t, func(c *Config) { mut(c); c.ReadHeaderTimeout = 300 * time.Millisecond })
		for _, tc := range stalledBodies {
			c, _ := dialRaw(t, url) // its 20 s deadline: answered, not hung
			if _, err := io.WriteString(c, tc.raw); err != nil {
				t.Fatal(err)
			}
			requireErrorAnswer(t, c, http.StatusRequestTimeout, CodeBodyTimeout, tc.name)
			c.Close()
		}
		requireUncharged(t, b)
	})
}

// A body cut short by the client's half-close got an invented
// "200 OK, Content-Length: 0" where net/http read it (the handler returned
// without writing); now both paths close without an answer.
func TestTruncatedBodyThenHalfCloseIsNotAnswered(t *testing.T) {
	bothPaths(t, func(t *testing.T, mut func(*Config)) {
		b, url := fourBackends(t, mut)
		for _, tc := range stalledBodies {
			c, _ := dialRaw(t, url)
			if _, err := io.WriteString(c, tc.raw); err != nil {
				t.Fatal(err)
			}
			if err := c.(*net.TCPConn).CloseWrite(); err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(c) // until the balancer closes; dialRaw's deadline bounds it
			var ne net.Error
			if len(got) > 0 || errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("%s: got %q (%v), want the connection closed without an answer", tc.name, got, err)
			}
			c.Close()
		}
		requireUncharged(t, b)
	})
}
