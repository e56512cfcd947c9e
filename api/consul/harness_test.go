package consul_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"go.uber.org/goleak"

	"github.com/beaconhq/beacon/api"
	"github.com/beaconhq/beacon/api/apitest"
	"github.com/beaconhq/beacon/api/consul"
	"github.com/beaconhq/beacon/fsm"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// ttlReporter applies TTL reports as the leader does (TTL checks have no
// owner node), straight through the one-node cluster.
type ttlReporter struct{ cl *apitest.Cluster }

func (r ttlReporter) ReportTTL(ctx context.Context, id string, status fsm.Health, output string, _ map[string]float64) (uint64, error) {
	cmd, err := fsm.Encode(fsm.CheckUpdateType, &fsm.CheckUpdateRequest{
		Updates: []fsm.CheckUpdate{{Check: id, Status: status, Output: output}}, Time: time.Now().UnixNano()})
	if err != nil {
		return 0, err
	}
	return r.cl.Apply(ctx, cmd)
}

// testServer is Beacon's API with the Consul endpoints mounted, over a
// real FSM, on a loopback listener.
type testServer struct {
	t    testing.TB
	cl   *apitest.Cluster
	api  *api.Server
	base string
	hc   *http.Client
}

// newTestServer starts the API as node apitest.NodeName; mutate may change
// both configs.
func newTestServer(t testing.TB, mutate func(*api.Config, *consul.Config)) *testServer {
	t.Helper()
	cl := apitest.NewCluster(nil)
	ac := api.DefaultConfig()
	cc := consul.DefaultConfig()
	cc.NodeName = apitest.NodeName
	cc.NodeAddress = "127.0.0.1"
	cc.TTL = ttlReporter{cl}
	cc.Logger = hclog.NewNullLogger()
	if mutate != nil {
		mutate(&ac, &cc)
	}
	srv := api.New(ac, cl.Store(), cl)
	cc.Auth = srv
	cs, err := consul.New(cc, cl.Store(), cl)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range consul.Prefixes {
		srv.MountWithToken(p, cs.Handler(), consul.RequestToken)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	tr := &http.Transport{}
	ts := &testServer{t: t, cl: cl, api: srv, base: "http://" + ln.Addr().String(), hc: &http.Client{Transport: tr, Timeout: 30 * time.Second}}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
		tr.CloseIdleConnections()
	})
	return ts
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) String() string { return strconv.Itoa(r.status) + " " + string(r.body) }

func (r response) index(t testing.TB) uint64 {
	t.Helper()
	i, err := strconv.ParseUint(r.header.Get("X-Consul-Index"), 10, 64)
	if err != nil || i == 0 {
		t.Fatalf("X-Consul-Index %q: %s", r.header.Get("X-Consul-Index"), r)
	}
	return i
}

func (r response) decode(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decode %s: %v", r.body, err)
	}
}

// do sends a request with headers (pairs of name, value).
func (ts *testServer) do(method, target, body string, headers ...string) response {
	ts.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, ts.base+target, rd)
	if err != nil {
		ts.t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := ts.hc.Do(req)
	if err != nil {
		ts.t.Fatalf("%s %s: %v", method, target, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		ts.t.Fatal(err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: bytes.TrimSpace(b)}
}

func (ts *testServer) mustOK(method, target, body string, headers ...string) response {
	ts.t.Helper()
	r := ts.do(method, target, body, headers...)
	if r.status != http.StatusOK {
		ts.t.Fatalf("%s %s: %s", method, target, r)
	}
	return r
}

// applyCmd commits an fsm command as another node or the leader would.
func (ts *testServer) applyCmd(typ fsm.MessageType, req any) uint64 {
	ts.t.Helper()
	cmd, err := fsm.Encode(typ, req)
	if err != nil {
		ts.t.Fatal(err)
	}
	idx, err := ts.cl.Apply(context.Background(), cmd)
	if err != nil {
		ts.t.Fatalf("apply %s: %v", typ, err)
	}
	return idx
}

// errorBody decodes a JSON error and checks status, code and field.
func assertError(t testing.TB, r response, status int, code, field string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d: %s", r.status, status, r)
	}
	var eb struct{ Error, Code, Field string }
	r.decode(t, &eb)
	if eb.Error == "" || eb.Code != code || eb.Field != field {
		t.Fatalf("error %+v, want code %q field %q", eb, code, field)
	}
}
