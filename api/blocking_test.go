package api

import (
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/beaconhq/beacon/api/client"
	"github.com/beaconhq/beacon/fsm"
)

// generous bounds how long a blocking query may overrun its wait on a
// loaded machine; the tests never assert anything tighter.
const generous = 20 * time.Second

// readIndex returns a read's X-Beacon-Index.
func readIndex(t testing.TB, r response) uint64 {
	t.Helper()
	if r.status != http.StatusOK {
		t.Fatalf("read: %s", r)
	}
	idx, err := strconv.ParseUint(r.header.Get(HeaderIndex), 10, 64)
	if err != nil || idx == 0 {
		t.Fatalf("%s %q", HeaderIndex, r.header.Get(HeaderIndex))
	}
	return idx
}

// blockingRead is a read that returned, with how long it took.
type blockingRead struct {
	r       response
	elapsed time.Duration
	at      time.Time // when it returned
}

// startRead sends a GET in the background.
func (ts *testServer) startRead(target string) <-chan blockingRead {
	done := make(chan blockingRead, 1)
	go func() {
		start := time.Now()
		r := ts.doNoFail(http.MethodGet, target)
		done <- blockingRead{r, time.Since(start), time.Now()}
	}()
	return done
}

// doNoFail is do for other goroutines: a transport error becomes status 0.
func (ts *testServer) doNoFail(method, target string) response {
	req, err := http.NewRequest(method, ts.url+target, nil)
	if err != nil {
		return response{body: []byte(err.Error())}
	}
	resp, err := ts.http.Do(req)
	if err != nil {
		return response{body: []byte(err.Error())}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return response{body: []byte(err.Error())}
	}
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

func (ts *testServer) awaitRead(ch <-chan blockingRead) blockingRead {
	ts.t.Helper()
	select {
	case br := <-ch:
		return br
	case <-time.After(generous + time.Minute):
		ts.t.Fatalf("a blocking query never returned")
		return blockingRead{}
	}
}

func registerCmd(id, service string, port int) *fsm.RegisterRequest {
	return &fsm.RegisterRequest{ID: id, Service: service, Address: "10.0.0.1", Port: port, Weight: 1, Time: time.Now().UnixNano()}
}

func TestBlockingQueryReturnsWhenTheResultChanges(t *testing.T) {
	for _, tc := range []struct {
		name   string
		target string
		change func(ts *testServer)
		check  func(t *testing.T, r response)
	}{
		{
			name:   "discovery returns when an instance is added",
			target: "/v1/services/web/instances",
			change: func(ts *testServer) { ts.applyCmd(fsm.RegisterType, registerCmd("web-9", "web", 9999)) },
			check: func(t *testing.T, r response) {
				var insts []client.Instance
				decodeStrict(t, r.body, &insts)
				if !slices.ContainsFunc(insts, func(i client.Instance) bool { return i.ID == "web-9" }) {
					t.Fatalf("the answer lacks the new instance: %s", r)
				}
			},
		},
		{
			name:   "discovery returns when an instance is deregistered",
			target: "/v1/services/web/instances",
			change: func(ts *testServer) {
				ts.applyCmd(fsm.DeregisterType, &fsm.DeregisterRequest{Service: "web", ID: "web-2", Time: time.Now().UnixNano()})
			},
			check: func(t *testing.T, r response) {
				var insts []client.Instance
				decodeStrict(t, r.body, &insts)
				if len(insts) != 1 || insts[0].ID != "web-1" {
					t.Fatalf("after deregistering web-2: %s", r)
				}
			},
		},
		{
			name:   "an instance read returns when its check changes",
			target: "/v1/services/web/instances/web-1",
			change: func(ts *testServer) {
				ts.applyCmd(fsm.CheckUpdateType, &fsm.CheckUpdateRequest{Time: time.Now().UnixNano(),
					Updates: []fsm.CheckUpdate{{Check: "web:web-1:heartbeat", Status: fsm.Passing}}})
			},
			check: func(t *testing.T, r response) {
				var inst client.Instance
				decodeStrict(t, r.body, &inst)
				if len(inst.Transitions) != 1 || inst.Transitions[0].To != "passing" {
					t.Fatalf("the answer lacks the transition: %s", r)
				}
			},
		},
		{
			name:   "the services list returns when a service appears",
			target: "/v1/services",
			change: func(ts *testServer) { ts.applyCmd(fsm.RegisterType, registerCmd("db-1", "db", 5432)) },
			check: func(t *testing.T, r response) {
				var l client.ServiceList
				decodeStrict(t, r.body, &l)
				if !slices.Contains(names(l), "db") {
					t.Fatalf("the answer lacks the new service: %s", r)
				}
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := newTestServer(t)
			populate(ts)
			n := readIndex(t, ts.do(http.MethodGet, tc.target, nil))
			ts.watchArrivals()
			done := ts.startRead(fmt.Sprintf("%s?index=%d&wait=%s", tc.target, n, generous))
			// The change comes from another goroutine once the query is in
			// the handler, as a write from another client would.
			ts.awaitArrival(fmt.Sprintf("index=%d", n))
			changed := make(chan struct{})
			go func() {
				defer close(changed)
				tc.change(ts)
			}()
			br := ts.awaitRead(done)
			<-changed
			if got := readIndex(t, br.r); got <= n {
				t.Fatalf("returned index %d, want more than %d", got, n)
			}
			tc.check(t, br.r)
			if br.elapsed >= generous {
				t.Fatalf("returned after %s: at the wait's end, not on the change", br.elapsed)
			}
		})
	}
}

func TestBlockingQueryReturnsTheSameIndexAtTheWaitsEnd(t *testing.T) {
	const wait = 200 * time.Millisecond
	ts := newTestServer(t)
	populate(ts)
	for _, target := range []string{"/v1/services/web/instances", "/v1/services/web/instances/web-1", "/v1/services"} {
		t.Run(target, func(t *testing.T) {
			ts := *ts
			ts.t = t
			n := readIndex(t, ts.do(http.MethodGet, target, nil))
			br := ts.awaitRead(ts.startRead(fmt.Sprintf("%s?index=%d&wait=%s", target, n, wait)))
			if got := readIndex(t, br.r); got != n {
				t.Fatalf("index %d, want the same %d", got, n)
			}
			if br.elapsed < wait || br.elapsed > wait+generous {
				t.Fatalf("returned after %s, want the wait of %s (plus jitter)", br.elapsed, wait)
			}
		})
	}
}

func TestBlockingQueryIsNotEndedByAnotherService(t *testing.T) {
	const wait = 2 * time.Second
	ts := newTestServer(t)
	populate(ts)
	n := readIndex(t, ts.do(http.MethodGet, "/v1/services/web/instances", nil))
	ts.watchArrivals()
	done := ts.startRead(fmt.Sprintf("/v1/services/web/instances?index=%d&wait=%s", n, wait))
	ts.awaitArrival(fmt.Sprintf("index=%d", n))
	// Change service api in every way a write can, while web's query waits.
	writes := make(chan time.Time, 1)
	go func() {
		ts.applyCmd(fsm.RegisterType, registerCmd("api-2", "api", 9001))
		ts.applyCmd(fsm.RegisterType, registerCmd("api-1", "api", 9002))
		ts.applyCmd(fsm.DeregisterType, &fsm.DeregisterRequest{Service: "api", ID: "api-2", Time: time.Now().UnixNano()})
		ts.applyCmd(fsm.RegisterType, registerCmd("db-1", "db", 5432))
		writes <- time.Now()
	}()
	br := ts.awaitRead(done)
	wroteAt := <-writes
	if got := readIndex(t, br.r); got != n {
		t.Fatalf("web's query returned index %d, want the same %d: writes to other services moved it", got, n)
	}
	if br.elapsed < wait {
		t.Fatalf("web's query returned after %s, before its wait of %s", br.elapsed, wait)
	}
	if !wroteAt.Before(br.at) {
		t.Fatalf("the other services' writes ended after web's query returned, so they were not tested against it")
	}
	if idx := ts.cl.Store().LastIndex(); idx <= n {
		t.Fatalf("the other services' writes did not land (last index %d, web %d)", idx, n)
	}
}

func TestBlockingQueryWaitIsClamped(t *testing.T) {
	ts := newTestServer(t, func(c *Config) { c.DefaultWait, c.MaxWait = 50*time.Millisecond, 100*time.Millisecond })
	populate(ts)
	n := readIndex(t, ts.do(http.MethodGet, "/v1/services/web/instances", nil))
	for _, wait := range []string{"10m", "", "0s"} {
		t.Run("wait="+wait, func(t *testing.T) {
			ts := *ts
			ts.t = t
			br := ts.awaitRead(ts.startRead(fmt.Sprintf("/v1/services/web/instances?index=%d&wait=%s", n, wait)))
			if got := readIndex(t, br.r); got != n || br.elapsed > generous {
				t.Fatalf("index %d after %s, want %d within the max wait", got, br.elapsed, n)
			}
		})
	}
}

func TestBlockingQueryWithAnotherIndexReturnsAtOnce(t *testing.T) {
	ts := newTestServer(t)
	populate(ts)
	n := readIndex(t, ts.do(http.MethodGet, "/v1/services/web/instances", nil))
	// A client that remembers an index from before a restore, or from
	// another service, must not wait: the result already differs.
	for _, idx := range []uint64{n - 1, n + 1000} {
		br := ts.awaitRead(ts.startRead(fmt.Sprintf("/v1/services/web/instances?index=%d&wait=%s", idx, generous)))
		if got := readIndex(t, br.r); got != n || br.elapsed >= generous {
			t.Fatalf("index=%d: %d after %s, want %d at once", idx, got, br.elapsed, n)
		}
	}
}
