package api_test

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/beaconhq/beacon/fsm"
)

// discardWriter is the cheapest http.ResponseWriter, so that the handler's
// own allocations are what a benchmark counts.
type discardWriter struct{ h http.Header }

func (d *discardWriter) Header() http.Header         { return d.h }
func (d *discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (d *discardWriter) WriteHeader(int)             {}

func benchCatalog(b *testing.B) *testServer {
	ts := newTestServer(b, nil)
	for i := range 10 {
		h := fsm.Passing
		if i%4 == 3 {
			h = fsm.Critical
		}
		ts.register(b, inst{id: fmt.Sprintf("web-%d", i), service: "web", tags: []string{"v1", fmt.Sprintf("t%d", i%2)},
			meta: map[string]string{"zone": "a"}, version: "1.2.3", address: fmt.Sprintf("10.0.0.%d", i+1), health: h})
	}
	return ts
}

// BenchmarkDiscoveryHandler measures one discovery read in the handler
// alone (no network): time and allocations per read of a 10-instance service.
func BenchmarkDiscoveryHandler(b *testing.B) {
	ts := benchCatalog(b)
	h := ts.srv.Handler()
	for _, q := range []string{"", "?healthy=true", "?tag=t1&meta=zone:a", "?version=%3E%3D1.0.0%20%3C2.0.0", "?max_stale=5s"} {
		b.Run("query="+q, func(b *testing.B) {
			req, _ := http.NewRequest(http.MethodGet, "/v1/services/web/instances"+q, nil)
			w := &discardWriter{h: http.Header{}}
			b.ReportAllocs()
			for b.Loop() {
				clear(w.h)
				h.ServeHTTP(w, req)
			}
		})
	}
}

// BenchmarkDiscoveryHTTP measures discovery reads over HTTP/1.1 on loopback
// with keep-alive connections from parallel clients, and reports reads/s.
// Client and server share the machine's cores, as in `make bench`.
func BenchmarkDiscoveryHTTP(b *testing.B) {
	ts := benchCatalog(b)
	url := ts.base + "/v1/services/web/instances?healthy=true"
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}}
	defer hc.Transport.(*http.Transport).CloseIdleConnections()
	b.SetParallelism(16)
	b.ReportAllocs()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := hc.Get(url)
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				b.Errorf("status %d", resp.StatusCode)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "reads/s")
}

// BenchmarkRegisterHandler measures one registration in the handler over a
// real FSM (no Raft, no network): the API's own cost per write — decoding,
// validation, encoding — plus the FSM's apply.
func BenchmarkRegisterHandler(b *testing.B) {
	ts := newTestServer(b, nil)
	h := ts.srv.Handler()
	body := []byte(`{"address":"10.0.1.2","port":8080,"tags":["bench","v1"],"meta":{"zone":"z1"},"version":"1.0.2"}`)
	w := &discardWriter{h: http.Header{}}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		req, _ := http.NewRequest(http.MethodPut, fmt.Sprintf("/v1/services/bench-%d/instances/i-%d", i%100, i), bytes.NewReader(body))
		clear(w.h)
		h.ServeHTTP(w, req)
	}
}

// BenchmarkDiscoveryFastPath measures discovery reads through Serve's fast
// path on one kept-alive loopback connection, with a client that allocates
// nothing per read: the allocations reported are the server's (the
// request, the middleware, the handler, the answer).
func BenchmarkDiscoveryFastPath(b *testing.B) {
	ts := benchCatalog(b)
	addr := strings.TrimPrefix(ts.base, "http://")
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	req := []byte("GET /v1/services/web/instances HTTP/1.1\r\nHost: " + addr + "\r\nUser-Agent: bench\r\n\r\n")
	buf := make([]byte, 64<<10)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := conn.Write(req); err != nil {
			b.Fatal(err)
		}
		// The answer ends with the JSON array's "]" (Content-Length framed, no chunking).
		for n := 0; ; {
			m, err := conn.Read(buf[n:])
			if err != nil {
				b.Fatal(err)
			}
			n += m
			if n > 0 && buf[n-1] == ']' {
				break
			}
		}
	}
}
