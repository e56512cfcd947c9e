package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/beaconhq/beacon/api"
	"github.com/beaconhq/beacon/api/client"
	"github.com/beaconhq/beacon/fsm"
	"github.com/beaconhq/beacon/fsm/fsmtest"
	"github.com/beaconhq/beacon/fsm/fsmtest/wait"
)

// The external tests (package api_test) drive the API over HTTP on a real
// listener; the package's TestMain (main_test.go) checks for leaks.

// fakeCluster is a one-node "cluster" over a real FSM. Writes made with
// Apply are applied at once (this node is up to date); writes made with
// commitElsewhere are committed by the "leader" but not yet applied here,
// until a consistent read (ConsistentIndex) catches this node up. That is
// exactly what distinguishes a local read from a fresh one.
type fakeCluster struct {
	t   testing.TB
	fsm *fsm.FSM

	mu      sync.Mutex
	next    uint64
	pending []*raft.Log

	lastContact     atomic.Int64 // nanoseconds
	noLeader        atomic.Bool
	consistentCalls atomic.Int64
}

func newFakeCluster(t testing.TB) *fakeCluster {
	return &fakeCluster{t: t, fsm: fsm.New(nil), next: 1}
}

var errNoLeader = codedError("no_leader")

type codedError string

func (e codedError) Error() string     { return "cluster: " + string(e) }
func (e codedError) ErrorCode() string { return string(e) }

func (c *fakeCluster) Apply(ctx context.Context, cmd []byte) (uint64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.catchUpLocked()
	idx := c.next
	c.next++
	res := c.fsm.Apply(&raft.Log{Index: idx, Type: raft.LogCommand, Data: cmd}).(fsm.ApplyResult)
	if res.Err != nil {
		return idx, res.Err
	}
	return idx, nil
}

// apply applies an fsm command here (as Apply does) and returns its index.
func (c *fakeCluster) apply(cmd []byte) uint64 {
	c.t.Helper()
	idx, err := c.Apply(context.Background(), cmd)
	if err != nil {
		c.t.Fatalf("apply: %v", err)
	}
	return idx
}

// commitElsewhere commits cmd "on the leader" without applying it here.
func (c *fakeCluster) commitElsewhere(cmd []byte) uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	idx := c.next
	c.next++
	c.pending = append(c.pending, &raft.Log{Index: idx, Type: raft.LogCommand, Data: cmd})
	return idx
}

func (c *fakeCluster) catchUpLocked() {
	if len(c.pending) > 0 {
		c.fsm.ApplyBatch(c.pending)
		c.pending = nil
	}
}

func (c *fakeCluster) ConsistentIndex(ctx context.Context) (uint64, error) {
	c.consistentCalls.Add(1)
	if c.noLeader.Load() {
		return 0, errNoLeader
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.catchUpLocked()
	return c.fsm.AppliedIndex(), nil
}

func (c *fakeCluster) KnownLeader() bool { return !c.noLeader.Load() }

// LastIndex counts the entries committed elsewhere and not applied here.
func (c *fakeCluster) LastIndex() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.next - 1
}
func (c *fakeCluster) LastContact() time.Duration {
	return time.Duration(c.lastContact.Load())
}
func (c *fakeCluster) Status() client.ClusterStatus { return client.ClusterStatus{} }
func (c *fakeCluster) Members() []client.Member     { return nil }
func (c *fakeCluster) Servers(context.Context) client.ClusterServers {
	return client.ClusterServers{Servers: []client.ServerStatus{}}
}
func (c *fakeCluster) Join([]string) (int, error)                     { return 0, errors.New("not here") }
func (c *fakeCluster) Leave(context.Context) error                    { return errors.New("not here") }
func (c *fakeCluster) RemovePeer(ctx context.Context, _ string) error { return errors.New("not here") }
func (c *fakeCluster) RemovePeerByAddress(ctx context.Context, _ string) (string, error) {
	return "", errors.New("not here")
}
func (c *fakeCluster) ForceLeave(ctx context.Context, _ string) error { return errors.New("not here") }
func (c *fakeCluster) Restore(ctx context.Context, _ []byte) (uint64, error) {
	return 0, errors.New("not here")
}

// testServer is an api.Server on a loopback listener over a fake cluster.
type testServer struct {
	*fakeCluster
	srv  *api.Server
	base string
	hc   *http.Client
}

func newTestServer(t testing.TB, mutate func(*api.Config)) *testServer {
	t.Helper()
	cfg := api.DefaultConfig()
	if mutate != nil {
		mutate(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	fc := newFakeCluster(t)
	srv := api.New(cfg, fc.fsm.Store(), fc)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	ts := &testServer{fakeCluster: fc, srv: srv, base: "http://" + ln.Addr().String(), hc: &http.Client{Transport: tr}}
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

// response is what a test needs of an HTTP answer.
type response struct {
	status int
	header http.Header
	body   []byte
	index  uint64
}

func (r response) instances(t testing.TB) []client.Instance {
	t.Helper()
	var out []client.Instance
	if err := json.Unmarshal(r.body, &out); err != nil {
		t.Fatalf("decode %s: %v", r.body, err)
	}
	return out
}

func (r response) ids(t testing.TB) []string {
	t.Helper()
	var ids []string
	for _, i := range r.instances(t) {
		ids = append(ids, i.ID)
	}
	return ids
}

func (r response) errorBody(t testing.TB) client.ErrorBody {
	t.Helper()
	var e client.ErrorBody
	if err := json.Unmarshal(r.body, &e); err != nil {
		t.Fatalf("decode error body %s: %v", r.body, err)
	}
	return e
}

func (ts *testServer) get(t testing.TB, path string) response {
	t.Helper()
	r, err := ts.getCtx(context.Background(), path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	return r
}

func (ts *testServer) getCtx(ctx context.Context, path string) (response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, ts.base+path, nil)
	if err != nil {
		return response{}, err
	}
	resp, err := ts.hc.Do(req)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return response{}, err
	}
	idx, _ := strconv.ParseUint(resp.Header.Get(api.HeaderIndex), 10, 64)
	return response{status: resp.StatusCode, header: resp.Header, body: body, index: idx}, nil
}

// blocked starts a GET in the background and waits until the server holds
// it as a blocking query; the answer arrives on the returned channel.
func (ts *testServer) blocked(t testing.TB, path string) <-chan response {
	t.Helper()
	before := ts.srv.BlockingStats()
	ch := make(chan response, 1)
	go func() {
		r, err := ts.getCtx(context.Background(), path)
		if err != nil {
			r = response{status: -1, body: []byte(err.Error())}
		}
		ch <- r
	}()
	// Parked, not only counted as blocking: a query is counted before its
	// first run, and a change applied in between would be seen by that
	// run rather than wake it (a test waiting for a wake-up then waits in
	// vain; seen on a loaded machine).
	waitFor(t, func() bool {
		st := ts.srv.BlockingStats()
		return st.Active > before.Active && st.Parked > before.Parked
	}, "the query to block")
	return ch
}

// waitFor polls cond until it holds, failing the test after 30 s (wait.Until).
func waitFor(t testing.TB, cond func() bool, what string) {
	t.Helper()
	wait.Until(t, 30*time.Second, what, cond)
}

// receive waits for a blocked query's answer, failing after 10 s.
func receive(t testing.TB, ch <-chan response) response {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("blocked query did not return")
		return response{}
	}
}

// notYet fails the test if a blocked query has already answered.
func notYet(t testing.TB, ch <-chan response, why string) {
	t.Helper()
	select {
	case r := <-ch:
		t.Fatalf("blocked query returned %d %s (index %d), but %s", r.status, r.body, r.index, why)
	default:
	}
}

// inst describes an instance for register.
type inst struct {
	id, service string
	tags        []string
	meta        map[string]string
	version     string
	address     string
	health      fsm.Health // "" is passing (no checks)
}

// register registers i directly through the FSM; an instance with health
// gets a TTL check that starts in that status.
func (ts *testServer) register(t testing.TB, i inst) uint64 {
	t.Helper()
	addr := i.address
	if addr == "" {
		addr = "10.0.0.1"
	}
	return ts.apply(fsmtest.Register(t, i.id, i.service, func(r *fsm.RegisterRequest) {
		r.Address, r.Port, r.Tags, r.Meta, r.Version, r.Weight = addr, 8080, i.tags, i.meta, i.version, 1
		if i.health != "" {
			r.Checks = []fsm.CheckDefinition{fsmtest.TTLCheck("ttl", i.health)}
		}
	}))
}

// setHealth moves the TTL check of instance id of service (see register) to h.
func (ts *testServer) setHealth(t testing.TB, service, id string, h fsm.Health, output string) uint64 {
	t.Helper()
	return ts.apply(fsmtest.CheckUpdate(t, "", time.Now().UnixNano(), fsm.CheckUpdate{Check: fsm.CheckID(service, id, "ttl"), Status: h, Output: output}))
}

// persist writes a snapshot of f to w, as Raft would.
func persist(t testing.TB, f *fsm.FSM, w io.Writer) {
	t.Helper()
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Release()
	if err := snap.Persist(&sink{Writer: w}); err != nil {
		t.Fatal(err)
	}
}

// sink is a raft.SnapshotSink over a writer.
type sink struct{ io.Writer }

func (s *sink) ID() string    { return "test" }
func (s *sink) Cancel() error { return nil }
func (s *sink) Close() error  { return nil }

type nopCloser struct{ io.Reader }

func (nopCloser) Close() error { return nil }
