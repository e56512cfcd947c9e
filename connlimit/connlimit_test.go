package connlimit

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/beaconhq/beacon/fsm/fsmtest/wait"
)

// TestConnectionsBeyondTheCapAreAnswered429AndOthersStillServed holds the
// cap's worth of connections open from one address, sees the next one
// answered 429 and closed, and sees a slot freed by a close taken again.
func TestConnectionsBeyondTheCapAreAnswered429AndOthersStillServed(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := Wrap(raw, 3)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })

	dial := func() net.Conn {
		c, err := net.DialTimeout("tcp", raw.Addr().String(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	get := func(c net.Conn) (int, string) {
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			return 0, err.Error()
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	var held []net.Conn
	for i := 0; i < 3; i++ {
		c := dial()
		if code, body := get(c); code != 200 {
			t.Fatalf("connection %d: %d %s", i, code, body)
		}
		held = append(held, c)
	}
	if code, body := get(dial()); code != 429 || !strings.Contains(body, "too_many_connections") {
		t.Fatalf("connection over the cap: %d %q, want 429 too_many_connections", code, body)
	}
	if ln.Rejected() != 1 {
		t.Fatalf("rejected %d, want 1", ln.Rejected())
	}
	held[0].Close()
	lo := netip.MustParseAddr("127.0.0.1")
	wait.For(t, 30*time.Second, 5*time.Millisecond, func() (bool, string) {
		n := ln.Open(lo)
		return n == 2, fmt.Sprintf("open connections %d after a close, want 2", n)
	})
	if code, _ := get(dial()); code != 200 {
		t.Fatalf("a freed slot was not reusable: %d", code)
	}
}

func TestIPv6ClientsCountPer64(t *testing.T) {
	a := clientKey(netip.MustParseAddr("2001:db8:1:2:aaaa::1"))
	b := clientKey(netip.MustParseAddr("2001:db8:1:2:bbbb::9"))
	c := clientKey(netip.MustParseAddr("2001:db8:1:3::1"))
	if a != b || a == c {
		t.Fatalf("keys %v %v %v: want the same /64 together and another apart", a, b, c)
	}
	if clientKey(netip.MustParseAddr("::ffff:10.0.0.1")) != netip.MustParseAddr("10.0.0.1") {
		t.Fatal("an IPv4-mapped address is not counted as IPv4")
	}
}
