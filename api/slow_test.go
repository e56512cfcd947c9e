package api

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/beaconhq/beacon/api/apitest"
	"github.com/beaconhq/beacon/api/client"
	"github.com/beaconhq/beacon/fsm/fsmtest/wait"
)

// serveLoopback runs a real api.Server on 127.0.0.1 with cfg changed by
// opts, and shuts it down when the test ends. It returns the address and
// the fake cluster behind it.
func serveLoopback(t *testing.T, opts ...func(*Config)) (string, *apitest.Cluster, *Server) {
	t.Helper()
	cl := apitest.NewCluster(testLogger(t, "fsm"))
	cfg := DefaultConfig()
	cfg.Logger = testLogger(t, "api")
	for _, o := range opts {
		o(&cfg)
	}
	s := New(cfg, cl.Store(), cl)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return ln.Addr().String(), cl, s
}

// trickle writes b one byte every interval until it is all sent, the
// connection fails or stop is closed; it returns how many bytes it sent.
func trickle(conn net.Conn, b []byte, interval time.Duration, stop <-chan struct{}) int {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for i := range b {
		select {
		case <-stop:
			return i
		case <-tick.C:
		}
		if _, err := conn.Write(b[i : i+1]); err != nil {
			return i
		}
	}
	return len(b)
}

func TestSlowClientsAreCutOff(t *testing.T) {
	const timeout = 300 * time.Millisecond
	addr, cl, _ := serveLoopback(t, func(c *Config) { c.ReadTimeout, c.ReadHeaderTimeout = timeout, timeout })
	body := mustJSON(t, client.Registration{Address: "10.0.0.1", Port: 80, Tags: []string{"slow"}})
	// At one byte every 50ms, the body alone would take seconds: far more
	// than the read timeout, and the trickle never stops on its own before
	// the test's bound.
	slow := append(body, make([]byte, 4096)...)
	for i := len(body); i < len(slow); i++ {
		slow[i] = ' '
	}

	for _, tc := range []struct {
		name     string
		head     string // sent at once
		trickled []byte // then one byte at a time
		// The server answers 408 JSON (a slow body, seen by the handler)
		// or just closes the connection (slow headers, before any handler).
		wantStatus int
	}{
		{
			name:       "a body sent slowly is cut off by the read timeout with a 408",
			head:       fmt.Sprintf("PUT /v1/services/web/instances/slow-1 HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", len(slow)),
			trickled:   slow,
			wantStatus: http.StatusRequestTimeout,
		},
		{
			name:       "a chunked body sent slowly is cut off by the read timeout with a 408",
			head:       "PUT /v1/services/web/instances/slow-2 HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
			trickled:   []byte(fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(slow), slow)),
			wantStatus: http.StatusRequestTimeout,
		},
		{
			name:     "headers sent slowly are cut off by the read header timeout",
			head:     "PUT /v1/services/web/instances/slow-3 HTTP/1.1\r\n",
			trickled: []byte("Host: localhost\r\nX-Padding: " + string(make([]byte, 4096)) + "\r\n\r\n"),
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := snapshotCatalog(cl.Store())
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if _, err := io.WriteString(conn, tc.head); err != nil {
				t.Fatal(err)
			}
			stop := make(chan struct{})
			sent := make(chan int, 1)
			go func() { sent <- trickle(conn, tc.trickled, 50*time.Millisecond, stop) }()
			stopTrickle := sync.OnceValue(func() int {
				close(stop)
				return <-sent
			})
			defer stopTrickle()

			// The server must end the exchange long before the trickle would.
			if err := conn.SetReadDeadline(time.Now().Add(generous)); err != nil {
				t.Fatal(err)
			}
			br := bufio.NewReader(conn)
			resp, err := http.ReadResponse(br, nil)
			switch {
			case tc.wantStatus == 0:
				if err == nil {
					resp.Body.Close()
					t.Fatalf("slow headers got an answer %d; want the connection closed", resp.StatusCode)
				}
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					t.Fatalf("the server kept the connection open for %s", generous)
				}
			case err != nil:
				t.Fatalf("no answer: %v", err)
			default:
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				r := response{status: resp.StatusCode, header: resp.Header, body: b}
				assertError(t, r, tc.wantStatus, "body_timeout", "")
				// And the connection is not reused.
				if _, err := br.ReadByte(); err == nil {
					t.Fatalf("the connection stayed open after the 408")
				} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
					t.Fatalf("the connection stayed open after the 408")
				}
			}
			if n := stopTrickle(); n >= len(tc.trickled) {
				t.Fatalf("the whole request was sent (%d bytes) before the server gave up", n)
			}
			if got := snapshotCatalog(cl.Store()); got.LastIndex != before.LastIndex || len(got.Instances) != len(before.Instances) {
				t.Fatalf("a cut-off request changed the catalog")
			}
			if cl.Applies() != 0 {
				t.Fatalf("a cut-off request reached the cluster")
			}
		})
	}
}

func TestShutdownEndsBlockingQueries(t *testing.T) {
	addr, cl, s := serveLoopback(t)
	hc := &http.Client{Transport: &http.Transport{}}
	defer hc.CloseIdleConnections()
	done := make(chan response, 1)
	go func() {
		// consistent, so that the query calls the cluster before blocking
		// and the test can see it is in flight.
		resp, err := hc.Get("http://" + addr + "/v1/services/web/instances?consistent&index=1&wait=10m")
		if err != nil {
			done <- response{body: []byte(err.Error())}
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		done <- response{status: resp.StatusCode, header: resp.Header, body: b}
	}()
	wait.Until(t, generous, "the blocking query to reach the server", func() bool { return cl.ConsistentReads() > 0 })
	ctx, cancel := context.WithTimeout(context.Background(), generous)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown waited for the blocking query: %v", err)
	}
	select {
	case r := <-done:
		t.Logf("the blocking query ended with %s", r)
		if r.status == 0 {
			t.Fatalf("the blocking query got no answer: %s", r.body)
		}
		assertError(t, r, http.StatusServiceUnavailable, "shutting_down", "")
	case <-time.After(generous):
		t.Fatalf("the blocking query did not end")
	}
}
