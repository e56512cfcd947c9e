package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"go.uber.org/goleak"

	"github.com/beaconhq/beacon/api/apitest"
	"github.com/beaconhq/beacon/api/client"
	"github.com/beaconhq/beacon/fsm"
)

// TestMain fails the package if any test leaves a goroutine running.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testServer is the API over an apitest.Cluster, served by httptest.
type testServer struct {
	t    testing.TB
	cl   *apitest.Cluster
	api  *Server
	url  string
	http *http.Client
	// arrivals, once set by watchArrivals, receives the URL of every
	// request as the API starts on it.
	// It is a pointer so that a copy of a testServer with another t (for
	// a subtest) shares it.
	arrivals *atomic.Pointer[chan string]
}

// newTestServer serves a new API over an empty catalog. opts change the
// default config first. The server is closed when the test ends.
func newTestServer(t testing.TB, opts ...func(*Config)) *testServer {
	t.Helper()
	return newTestServerOn(t, nil, nil, opts...)
}

// newTestServerOn is newTestServer over cl (nil: a new one), with before
// called on the Server before it serves (to Mount handlers).
func newTestServerOn(t testing.TB, cl *apitest.Cluster, before func(*Server), opts ...func(*Config)) *testServer {
	t.Helper()
	if cl == nil {
		cl = apitest.NewCluster(testLogger(t, "fsm"))
	}
	cfg := DefaultConfig()
	cfg.Logger = testLogger(t, "api")
	for _, o := range opts {
		o(&cfg)
	}
	ts := &testServer{t: t, cl: cl, api: New(cfg, cl.Store(), cl), arrivals: new(atomic.Pointer[chan string])}
	if before != nil {
		before(ts.api)
	}
	ts.api.arrival = func(r *http.Request) {
		if ch := ts.arrivals.Load(); ch != nil {
			select {
			case *ch <- r.URL.String():
			default:
			}
		}
	}
	// Served as the agent serves it (Serve: connection caps, blocking
	// queries parked out of net/http), not through Handler alone.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- ts.api.Serve(ln) }()
	tr := &http.Transport{MaxIdleConnsPerHost: 16}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := ts.api.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
		tr.CloseIdleConnections()
	})
	// Redirects are answers too: the tests see them rather than follow them.
	ts.http = &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	ts.url = "http://" + ln.Addr().String()
	return ts
}

// watchArrivals starts recording the requests that reach the API, for
// awaitArrival.
func (ts *testServer) watchArrivals() {
	ch := make(chan string, 1024)
	ts.arrivals.Store(&ch)
}

// awaitArrival waits until a request whose URL contains substr reaches the
// API (the request is then in the handler: a blocking query is about to
// block or blocks already). watchArrivals must have been called before the
// request was sent.
func (ts *testServer) awaitArrival(substr string) {
	ts.t.Helper()
	ch := ts.arrivals.Load()
	if ch == nil {
		ts.t.Fatalf("awaitArrival without watchArrivals")
	}
	timeout := time.After(30 * time.Second)
	for {
		select {
		case u := <-*ch:
			if strings.Contains(u, substr) {
				return
			}
		case <-timeout:
			ts.t.Fatalf("no request for %q reached the API", substr)
		}
	}
}

// testLogger logs to t.Log, so logs show only when a test fails.
func testLogger(t testing.TB, name string) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Name: name, Level: hclog.Debug, Output: testWriter{t}})
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// response is an HTTP answer read in full.
type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) String() string {
	b := r.body
	if len(b) > 300 {
		b = append(b[:300:300], "..."...)
	}
	return fmt.Sprintf("%d %s", r.status, b)
}

// do sends a request and reads the answer. target is sent exactly as given
// (path and query, no cleaning or escaping), so tests can send path tricks.
func (ts *testServer) do(method, target string, body []byte) response {
	ts.t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, ts.url+"/", rd)
	if err != nil {
		ts.t.Fatalf("%s %s: %v", method, target, err)
	}
	path, query, _ := strings.Cut(target, "?")
	req.URL.Opaque, req.URL.RawQuery = path, query
	if body != nil {
		// The media type the route takes (site.go).
		ct := "application/json"
		if strings.HasPrefix(path, "/v1/snapshot") {
			ct = client.SnapshotContentType
		}
		req.Header.Set("Content-Type", ct)
	}
	resp, err := ts.http.Do(req)
	if err != nil {
		ts.t.Fatalf("%s %s: %v", method, target, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		ts.t.Fatalf("%s %s: reading the answer: %v", method, target, err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

// mustJSON marshals v, failing the test on error.
func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("marshal %T: %v", v, err)
	}
	return b
}

// decodeStrict decodes b into v, rejecting unknown fields and trailing data.
func decodeStrict(t testing.TB, b []byte, v any) {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("decoding %T from %q: %v", v, b, err)
	}
	if dec.More() {
		t.Fatalf("decoding %T from %q: trailing data", v, b)
	}
}

// register PUTs reg as instance id of service and fails the test unless
// it is accepted. It returns the write's index.
func (ts *testServer) register(service, id string, reg client.Registration) uint64 {
	ts.t.Helper()
	r := ts.do(http.MethodPut, "/v1/services/"+service+"/instances/"+id, mustJSON(ts.t, reg))
	if r.status != http.StatusOK {
		ts.t.Fatalf("register %s/%s: %s", service, id, r)
	}
	var res client.WriteResult
	decodeStrict(ts.t, r.body, &res)
	if res.Index == 0 || r.header.Get(HeaderIndex) != fmt.Sprint(res.Index) {
		ts.t.Fatalf("register %s/%s: index %d, %s %q", service, id, res.Index, HeaderIndex, r.header.Get(HeaderIndex))
	}
	return res.Index
}

// applyCmd commits an fsm command through the fake cluster, as another
// node or a leader task would, failing the test if it is rejected.
func (ts *testServer) applyCmd(t fsm.MessageType, req any) uint64 {
	ts.t.Helper()
	cmd, err := fsm.Encode(t, req)
	if err != nil {
		ts.t.Fatalf("encode %s: %v", t, err)
	}
	idx, err := ts.cl.Apply(ts.t.Context(), cmd)
	if err != nil {
		ts.t.Fatalf("apply %s: %v", t, err)
	}
	return idx
}

// catalog is everything the store holds, comparable with reflect.DeepEqual
// (instances are cloned to leave out their encoding cache).
type catalog struct {
	LastIndex uint64
	Instances []*fsm.Instance
	Checks    []*fsm.Check
	Services  []*fsm.Service
	Nodes     []*fsm.Node
}

func snapshotCatalog(st *fsm.Store) catalog {
	c := catalog{LastIndex: st.LastIndex()}
	_, insts := st.Instances(nil)
	for _, i := range insts {
		c.Instances = append(c.Instances, i.Clone())
	}
	_, c.Checks = st.Checks(nil, "")
	_, c.Services, _ = st.Services(nil, "", "", 0)
	_, c.Nodes = st.Nodes(nil)
	return c
}

// assertUnchanged fails the test if the catalog differs from before.
func (ts *testServer) assertUnchanged(before catalog) {
	ts.t.Helper()
	after := snapshotCatalog(ts.cl.Store())
	if !reflect.DeepEqual(before, after) {
		ts.t.Fatalf("the catalog changed:\nbefore %s\nafter  %s", mustJSON(ts.t, before), mustJSON(ts.t, after))
	}
}

// assertError fails the test unless r is a JSON error with status, code
// and field.
func assertError(t testing.TB, r response, status int, code, field string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d: %s", r.status, status, r)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q, want application/json: %s", ct, r)
	}
	var eb client.ErrorBody
	decodeStrict(t, r.body, &eb)
	if eb.Error == "" || eb.Code != code || eb.Field != field {
		t.Fatalf("error body %+v, want code %q, field %q and a message", eb, code, field)
	}
}
