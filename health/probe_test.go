package health

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/beaconhq/beacon/fsm"
	"github.com/beaconhq/beacon/fsm/fsmtest/netx"
	"google.golang.org/grpc"
	healthgrpc "google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

func httpCheck(target string) *fsm.Check {
	return &fsm.Check{ID: "i:http", Target: target, CheckDefinition: &fsm.CheckDefinition{Type: fsm.CheckHTTP, Method: "GET", Timeout: int64(2 * time.Second)}}
}

func TestHTTPProbe(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/ok", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("fine")) })
	mux.HandleFunc("/busy", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusTooManyRequests) })
	mux.HandleFunc("/broken", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusInternalServerError) })
	mux.HandleFunc("/redirect", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/ok", http.StatusFound) })
	mux.HandleFunc("/big", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(strings.Repeat("é", 1<<20))) })
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	})
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(r.Method + " " + r.Host + " " + r.Header.Get("X-Token") + " " + r.UserAgent()))
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	tlsSrv := httptest.NewTLSServer(mux)
	defer tlsSrv.Close()
	p := NewProber(nil, 256)

	cases := []struct {
		name   string
		check  func(*fsm.Check)
		status fsm.Health
		output string
	}{
		{"a 2xx answer passes and its body is the output", func(c *fsm.Check) { c.Target = srv.URL + "/ok" }, fsm.Passing, "200 OK Output: fine"},
		{"429 is a warning", func(c *fsm.Check) { c.Target = srv.URL + "/busy" }, fsm.Warning, "429"},
		{"a 5xx answer is critical", func(c *fsm.Check) { c.Target = srv.URL + "/broken" }, fsm.Critical, "500"},
		{"a redirect is not followed and is critical", func(c *fsm.Check) { c.Target = srv.URL + "/redirect" }, fsm.Critical, "302 Found"},
		{"a slow answer times out", func(c *fsm.Check) { c.Target, c.Timeout = srv.URL+"/slow", int64(100*time.Millisecond) }, fsm.Critical, "deadline exceeded"},
		{"method, headers and Host are sent", func(c *fsm.Check) {
			c.Target, c.Method = srv.URL+"/echo", "PUT"
			c.Header = map[string][]string{"X-Token": {"t1"}, "Host": {"svc.example"}}
		}, fsm.Passing, "PUT svc.example t1 Beacon-Health-Check/1"},
		{"a closed port is critical", func(c *fsm.Check) { c.Target = "http://" + closedAddr(t) + "/" }, fsm.Critical, "refused"},
		{"a self-signed certificate fails without tls_skip_verify", func(c *fsm.Check) { c.Target = tlsSrv.URL + "/ok" }, fsm.Critical, "certificate"},
		{"tls_skip_verify accepts a self-signed certificate", func(c *fsm.Check) { c.Target, c.TLSSkipVerify = tlsSrv.URL+"/ok", true }, fsm.Passing, "fine"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := httpCheck("")
			tc.check(c)
			r := p.Probe(context.Background(), c)
			if r.Status != tc.status || !strings.Contains(r.Output, tc.output) {
				t.Fatalf("got %s %q, want %s containing %q", r.Status, r.Output, tc.status, tc.output)
			}
		})
	}

	t.Run("a large body is read only up to the output cap, on a rune boundary", func(t *testing.T) {
		r := p.Probe(context.Background(), httpCheck(srv.URL+"/big"))
		if r.Status != fsm.Passing || len(r.Output) > 256 || !utf8.ValidString(r.Output) {
			t.Fatalf("got %s, %d bytes, valid UTF-8 %v", r.Status, len(r.Output), utf8.ValidString(r.Output))
		}
	})
}

// closedAddr returns a loopback address that refuses connections for the
// whole test.
func closedAddr(t *testing.T) string { return netx.RefusedAddr(t) }

func TestTCPProbe(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	p := NewProber(nil, 4096)
	tcp := func(target string) *fsm.Check {
		return &fsm.Check{Target: target, CheckDefinition: &fsm.CheckDefinition{Type: fsm.CheckTCP, Timeout: int64(time.Second)}}
	}
	if r := p.Probe(context.Background(), tcp(ln.Addr().String())); r.Status != fsm.Passing {
		t.Fatalf("open port: %s %q", r.Status, r.Output)
	}
	if r := p.Probe(context.Background(), tcp(closedAddr(t))); r.Status != fsm.Critical || !strings.Contains(r.Output, "refused") {
		t.Fatalf("closed port: %s %q", r.Status, r.Output)
	}
}

func TestDenyListIsCheckedOnTheResolvedAddressAtConnectTime(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	p := NewProber([]netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, 4096)
	cases := []struct {
		name  string
		check *fsm.Check
	}{
		{"an HTTP check to a host name that resolves into the range", httpCheck("http://localhost:" + port + "/")},
		{"an HTTP check to an IP literal in the range", httpCheck("http://127.0.0.1:" + port + "/")},
		{"a TCP check", &fsm.Check{Target: "localhost:" + port, CheckDefinition: &fsm.CheckDefinition{Type: fsm.CheckTCP, Timeout: int64(time.Second)}}},
		{"a gRPC check", &fsm.Check{Target: "localhost:" + port, CheckDefinition: &fsm.CheckDefinition{Type: fsm.CheckGRPC, Timeout: int64(time.Second)}}},
	}
	for _, tc := range cases {
		t.Run(tc.name+" is refused", func(t *testing.T) {
			r := p.Probe(context.Background(), tc.check)
			if r.Status != fsm.Critical || !strings.Contains(r.Output, "denied range (127.0.0.0/8)") {
				t.Fatalf("got %s %q", r.Status, r.Output)
			}
		})
	}
	if _, bad := Denied([]netip.Prefix{netip.MustParsePrefix("169.254.0.0/16")}, netip.MustParseAddr("::ffff:169.254.169.254")); !bad {
		t.Fatal("an IPv4-mapped IPv6 address escapes the deny list")
	}
}

func TestGRPCProbeAgainstTheRealHealthServer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := healthgrpc.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus("db", healthpb.HealthCheckResponse_NOT_SERVING)
	gs := grpc.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	go gs.Serve(ln)
	defer gs.Stop()
	p := NewProber(nil, 4096)
	g := func(target, service string) *fsm.Check {
		return &fsm.Check{Target: target, CheckDefinition: &fsm.CheckDefinition{Type: fsm.CheckGRPC, GRPCService: service, Timeout: int64(2 * time.Second)}}
	}
	cases := []struct {
		name, target, service string
		status                fsm.Health
		output                string
	}{
		{"the server's overall status SERVING passes", ln.Addr().String(), "", fsm.Passing, "SERVING"},
		{"a NOT_SERVING service is critical", ln.Addr().String(), "db", fsm.Critical, "NOT_SERVING"},
		{"an unknown service is critical with the gRPC error", ln.Addr().String(), "nope", fsm.Critical, "code 5"},
		{"a server that is down is critical", closedAddr(t), "", fsm.Critical, "refused"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := p.Probe(context.Background(), g(tc.target, tc.service))
			if r.Status != tc.status || !strings.Contains(r.Output, tc.output) {
				t.Fatalf("got %s %q, want %s containing %q", r.Status, r.Output, tc.status, tc.output)
			}
		})
	}
	t.Run("a service that stops serving turns critical, and passes again", func(t *testing.T) {
		hs.SetServingStatus("api", healthpb.HealthCheckResponse_SERVING)
		if r := p.Probe(context.Background(), g(ln.Addr().String(), "api")); r.Status != fsm.Passing {
			t.Fatalf("serving: %s %q", r.Status, r.Output)
		}
		hs.SetServingStatus("api", healthpb.HealthCheckResponse_NOT_SERVING)
		if r := p.Probe(context.Background(), g(ln.Addr().String(), "api")); r.Status != fsm.Critical {
			t.Fatalf("not serving: %s %q", r.Status, r.Output)
		}
	})
}

func TestDecodeHealthResponseRejectsMalformedFrames(t *testing.T) {
	for name, b := range map[string][]byte{
		"a short frame":          {0, 0, 0},
		"a compressed message":   {1, 0, 0, 0, 2, 8, 1},
		"a wrong length":         {0, 0, 0, 0, 9, 8, 1},
		"a truncated varint":     {0, 0, 0, 0, 2, 8, 0x80},
		"an unknown wire type 7": {0, 0, 0, 0, 2, 0x0f, 1},
	} {
		t.Run(name+" is an error", func(t *testing.T) {
			if _, err := decodeHealthResponse(b); err == nil {
				t.Fatal("no error")
			}
		})
	}
	if s, err := decodeHealthResponse([]byte{0, 0, 0, 0, 5, 0x12, 1, 'x', 8, 1}); err != nil || s != 1 {
		t.Fatalf("an unknown field before the status: %d %v", s, err)
	}
}
