package main

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// The raw client against net/http's server: answers with a length, chunked
// answers, an answer that closes the connection, a body sent, and
// keep-alive kept across requests.
func TestRawClientAgainstNetHTTP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns atomic.Int32
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(r.Body)
			switch r.URL.Path {
			case "/len":
				_, _ = w.Write([]byte("short"))
			case "/chunked":
				for i := 0; i < 10; i++ {
					_, _ = w.Write([]byte(strings.Repeat("x", 1000)))
					w.(http.Flusher).Flush()
				}
			case "/close":
				w.Header().Set("Connection", "close")
				_, _ = w.Write([]byte("bye"))
			case "/echo":
				if r.Header.Get("Content-Type") != "application/json" || string(body) != `{"a":1}` {
					w.WriteHeader(http.StatusBadRequest)
					return
				}
				w.WriteHeader(http.StatusCreated)
			case "/empty":
				w.WriteHeader(http.StatusNoContent)
			}
		}),
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				conns.Add(1)
			}
		},
		ReadHeaderTimeout: 5 * time.Second,
	}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	base := "http://" + ln.Addr().String()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var rc rawConn
	defer rc.close()
	for _, tc := range []struct {
		method, path string
		body         []byte
		want         int
		keep         bool
	}{
		{"GET", "/len", nil, 200, true},
		{"GET", "/chunked", nil, 200, true},
		{"GET", "/empty", nil, 204, true},
		{"PUT", "/echo", []byte(`{"a":1}`), 201, true},
		{"GET", "/len?x=1", nil, 200, true},
		{"GET", "/close", nil, 200, false},
		{"GET", "/len", nil, 200, true},
	} {
		status, err := rc.do(ctx, tc.method, base+tc.path, tc.body)
		if err != nil || status != tc.want {
			t.Fatalf("%s %s: %d, %v; want %d", tc.method, tc.path, status, err, tc.want)
		}
		if (rc.c != nil) != tc.keep {
			t.Fatalf("%s %s: connection kept %v, want %v", tc.method, tc.path, rc.c != nil, tc.keep)
		}
	}
	if n := conns.Load(); n != 2 {
		t.Fatalf("%d connections; want 2 (one closed by the server's answer)", n)
	}
}

// readRawResponse never panics and never reads past a malformed framing.
func FuzzReadRawResponse(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nT: 1\r\n\r\n",
		"HTTP/1.0 200 OK\r\n\r\nrest",
		"HTTP/1.1 204 No Content\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
		"HTTP/1.1 2x0 OK\r\n\r\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		_, _, _ = readRawResponse(bufio.NewReaderSize(strings.NewReader(s), 64))
	})
}
