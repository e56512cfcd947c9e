package connlimit

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/beaconhq/beacon/fsm/fsmtest/netx"
	"github.com/beaconhq/beacon/fsm/fsmtest/wait"
)

// selfSigned returns a server configuration with a certificate for
// 127.0.0.1 and a client configuration that trusts it.
func selfSigned(t *testing.T) (server, client *tls.Config) {
	t.Helper()
	cert, pool := netx.SelfSigned(t)
	return &tls.Config{Certificates: []tls.Certificate{cert}}, &tls.Config{RootCAs: pool}
}

// TestTLSListenerGivesNetHTTPATLSConnection: WrapTLS counts connections
// beneath TLS and gives net/http the *tls.Conn, so Request.TLS is set; a
// plain HTTP request is answered with the listener's answer; a TLS
// connection over the cap is closed without a plain-text 429.
func TestTLSListenerGivesNetHTTPATLSConnection(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	scfg, ccfg := selfSigned(t)
	answer := "HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 6\r\n\r\nhttps\n"
	ln := WrapTLS(raw, 1, scfg, []byte(answer))
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.TLS == nil {
				io.WriteString(w, "no TLS")
				return
			}
			io.WriteString(w, "TLS")
		}),
		ReadHeaderTimeout: 5 * time.Second,
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	addr := raw.Addr().String()

	// Plain HTTP first (a slot of its own, freed when it ends).
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("plain HTTP on the TLS listener: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	c.Close()
	if resp.StatusCode != http.StatusBadRequest || string(b) != "https\n" {
		t.Fatalf("plain HTTP on the TLS listener: %d %q", resp.StatusCode, b)
	}

	// Wait for the plain connection's slot to be free, then hold the only
	// slot with a TLS connection whose request sees Request.TLS.
	wait.For(t, 30*time.Second, 5*time.Millisecond, func() (bool, string) {
		n := ln.Open(netip.MustParseAddr("127.0.0.1"))
		return n == 0, fmt.Sprintf("%d connections open after the plain HTTP one ended, want 0", n)
	})
	tc, err := tls.Dial("tcp", addr, ccfg)
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	_ = tc.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(tc, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err = http.ReadResponse(bufio.NewReader(tc), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	if string(b) != "TLS" {
		t.Fatalf("the handler saw %q, want Request.TLS set", b)
	}

	// Over the cap: closed before the handshake, no plain text written.
	over, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer over.Close()
	_ = over.SetDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(over)
	if len(got) != 0 || (err != nil && !errors.Is(err, io.EOF) && !strings.Contains(err.Error(), "reset")) {
		t.Fatalf("a TLS connection over the cap got %q, %v; want it closed without a word", got, err)
	}
	if ln.Rejected() != 1 {
		t.Fatalf("rejected %d, want 1", ln.Rejected())
	}
}
