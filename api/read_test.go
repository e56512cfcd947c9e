package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/beaconhq/beacon/api"
	"github.com/beaconhq/beacon/fsm"
	"github.com/beaconhq/beacon/fsm/fsmtest"
)

// catalog registers the instances the filter tests query.
func catalog(t testing.TB, ts *testServer) {
	t.Helper()
	for _, i := range []inst{
		{id: "w1", service: "web", tags: []string{"v1", "eu"}, meta: map[string]string{"zone": "a"}, version: "1.2.0"},
		{id: "w2", service: "web", tags: []string{"v2", "eu"}, meta: map[string]string{"zone": "b"}, version: "1.9.3"},
		{id: "w3", service: "web", tags: []string{"v2", "us"}, meta: map[string]string{"zone": "a", "tier": "gold"}, version: "2.0.0", health: fsm.Critical},
		{id: "w4", service: "web", tags: []string{"v2"}, version: "not-semver", health: fsm.Warning},
		{id: "w5", service: "web", version: "1.2.0-rc.1"},
		{id: "a1", service: "api", tags: []string{"v2"}},
	} {
		ts.register(t, i)
	}
	ts.apply(fsmtest.Maintenance(t, "web", "w5", fsm.ModeMaintenance))
}

func TestDiscoveryFilters(t *testing.T) {
	ts := newTestServer(t, nil)
	catalog(t, ts)
	tests := []struct {
		name  string
		query string
		want  []string
	}{
		{"no filter returns every instance ordered by id", "", []string{"w1", "w2", "w3", "w4", "w5"}},
		{"healthy=true keeps passing instances outside maintenance", "healthy=true", []string{"w1", "w2"}},
		{"healthy=false is no filter", "healthy=false", []string{"w1", "w2", "w3", "w4", "w5"}},
		{"one tag keeps instances that carry it", "tag=v2", []string{"w2", "w3", "w4"}},
		{"several tags must all match", "tag=v2&tag=eu", []string{"w2"}},
		{"an unknown tag matches nothing", "tag=nope", nil},
		{"meta key:value keeps instances with that value", "meta=zone:a", []string{"w1", "w3"}},
		{"several meta pairs must all match", "meta=zone:a&meta=tier:gold", []string{"w3"}},
		{"a meta value may contain colons", "meta=zone:a:b", nil},
		{"an exact version matches only that version", "version=1.2.0", []string{"w1"}},
		{"a semver range keeps versions inside it", "version=" + escape(">=1.2.0 <2.0.0"), []string{"w1", "w2"}},
		{"a caret range", "version=" + escape("^1.2"), []string{"w1", "w2"}},
		{"a wildcard is a range", "version=1.x", []string{"w1", "w2"}},
		{"a range never matches a version that is not semver", "version=" + escape(">=0.0.0"), []string{"w1", "w2", "w3"}},
		{"a pre-release needs a pre-release range", "version=" + escape(">=1.2.0-rc.0 <1.2.0"), []string{"w5"}},
		{"filters combine", "healthy=true&tag=eu&meta=zone:b&version=" + escape("~1.9"), []string{"w2"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := ts.get(t, "/v1/services/web/instances?"+tc.query)
			if r.status != http.StatusOK {
				t.Fatalf("status %d: %s", r.status, r.body)
			}
			if got := r.ids(t); !slices.Equal(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
	t.Run("an unknown service answers an empty array", func(t *testing.T) {
		r := ts.get(t, "/v1/services/nothing/instances?healthy=true")
		if r.status != http.StatusOK || string(r.body) != "[]" || r.index == 0 {
			t.Errorf("got %d %q index %d, want 200 [] with an index", r.status, r.body, r.index)
		}
	})
	bad := []struct{ name, query, field string }{
		{"healthy must be a boolean", "healthy=yes", "healthy"},
		{"meta needs a colon", "meta=zone", "meta"},
		{"meta needs a key", "meta=:a", "meta"},
		{"a version range must parse", "version=" + escape(">=1.2.0 <<2"), "version"},
		{"index must be a number", "index=abc", "index"},
		{"wait must be a duration", "index=1&wait=forever", "wait"},
		{"max_stale must be positive", "max_stale=-1s", "max_stale"},
		{"consistent must be a boolean", "consistent=maybe", "consistent"},
		{"consistent and max_stale exclude each other", "consistent&max_stale=1s", "max_stale"},
	}
	for _, tc := range bad {
		t.Run(tc.name+" (400 naming the field)", func(t *testing.T) {
			r := ts.get(t, "/v1/services/web/instances?"+tc.query)
			e := r.errorBody(t)
			if r.status != http.StatusBadRequest || e.Code != "invalid" || e.Field != tc.field {
				t.Errorf("got %d %+v, want 400 invalid on %s", r.status, e, tc.field)
			}
		})
	}
}

func escape(s string) string {
	return strings.NewReplacer(" ", "%20", ">", "%3E", "<", "%3C", "=", "%3D", "^", "%5E", "~", "%7E").Replace(s)
}

func TestConsistencyModes(t *testing.T) {
	ts := newTestServer(t, nil)
	ts.register(t, inst{id: "w1", service: "web"})
	// The leader committed w2, which this node has not applied yet.
	ts.commitElsewhere(fsmtest.Register(t, "w2", "web", fsmtest.WithAddress("10.0.0.2", 80)))

	read := func(t *testing.T, q string) response {
		t.Helper()
		before := ts.consistentCalls.Load()
		r := ts.get(t, "/v1/services/web/instances?"+q)
		if r.status != http.StatusOK {
			t.Fatalf("status %d: %s", r.status, r.body)
		}
		r.header.Set("X-Test-Fresh", fmt.Sprint(ts.consistentCalls.Load() > before))
		return r
	}
	t.Run("the default read answers from the local store", func(t *testing.T) {
		ts.lastContact.Store(int64(time.Hour))
		r := read(t, "")
		if got := r.ids(t); !slices.Equal(got, []string{"w1"}) || r.header.Get("X-Test-Fresh") != "false" {
			t.Errorf("got %v (fresh %s), want the local [w1]", got, r.header.Get("X-Test-Fresh"))
		}
		if lc := r.header.Get(api.HeaderLastContact); lc != "3600000" {
			t.Errorf("Last-Contact = %q, want 3600000 (ms)", lc)
		}
		if kl := r.header.Get(api.HeaderKnownLeader); kl != "true" {
			t.Errorf("Known-Leader = %q", kl)
		}
	})
	t.Run("max_stale larger than the last contact answers locally", func(t *testing.T) {
		ts.lastContact.Store(int64(2 * time.Second))
		r := read(t, "max_stale=5s")
		if got := r.ids(t); !slices.Equal(got, []string{"w1"}) || r.header.Get("X-Test-Fresh") != "false" {
			t.Errorf("got %v (fresh %s), want the local [w1]", got, r.header.Get("X-Test-Fresh"))
		}
	})
	t.Run("max_stale smaller than the last contact makes a fresh read", func(t *testing.T) {
		ts.lastContact.Store(int64(10 * time.Second))
		r := read(t, "max_stale=5s")
		if got := r.ids(t); !slices.Equal(got, []string{"w1", "w2"}) || r.header.Get("X-Test-Fresh") != "true" {
			t.Errorf("got %v (fresh %s), want the leader's [w1 w2]", got, r.header.Get("X-Test-Fresh"))
		}
		if lc := r.header.Get(api.HeaderLastContact); lc != "10000" {
			t.Errorf("Last-Contact = %q, want 10000", lc)
		}
	})
	t.Run("consistent always asks the leader", func(t *testing.T) {
		ts.commitElsewhere(fsmtest.Register(t, "w3", "web", fsmtest.WithAddress("10.0.0.3", 80)))
		ts.lastContact.Store(0)
		r := read(t, "consistent")
		if got := r.ids(t); !slices.Equal(got, []string{"w1", "w2", "w3"}) || r.header.Get("X-Test-Fresh") != "true" {
			t.Errorf("got %v (fresh %s), want [w1 w2 w3] read fresh", got, r.header.Get("X-Test-Fresh"))
		}
	})
	t.Run("without a leader consistent and too-stale reads fail with 503 while the default answers", func(t *testing.T) {
		ts.noLeader.Store(true)
		defer ts.noLeader.Store(false)
		ts.lastContact.Store(int64(time.Minute))
		for _, q := range []string{"consistent", "max_stale=5s"} {
			r := ts.get(t, "/v1/services/web/instances?"+q)
			if r.status != http.StatusServiceUnavailable || r.errorBody(t).Code != "no_leader" || r.header.Get("Retry-After") == "" {
				t.Errorf("%s: got %d %s, want 503 no_leader with Retry-After", q, r.status, r.body)
			}
		}
		r := ts.get(t, "/v1/services/web/instances")
		if r.status != http.StatusOK || r.header.Get(api.HeaderKnownLeader) != "false" || r.header.Get(api.HeaderLastContact) != "60000" {
			t.Errorf("default read: %d, Known-Leader %q, Last-Contact %q", r.status, r.header.Get(api.HeaderKnownLeader), r.header.Get(api.HeaderLastContact))
		}
	})
	t.Run("the same modes apply to one instance and to the service list", func(t *testing.T) {
		ts.commitElsewhere(fsmtest.Register(t, "w4", "web", fsmtest.WithAddress("10.0.0.4", 80)))
		ts.lastContact.Store(0)
		if r := ts.get(t, "/v1/services/web/instances/w4"); r.status != http.StatusNotFound {
			t.Errorf("local read of w4: %d, want 404 (not applied here yet)", r.status)
		}
		if r := ts.get(t, "/v1/services/web/instances/w4?consistent"); r.status != http.StatusOK {
			t.Errorf("consistent read of w4: %d %s", r.status, r.body)
		}
		ts.commitElsewhere(fsmtest.Register(t, "x1", "xsvc", fsmtest.WithAddress("10.0.0.5", 80)))
		if r := ts.get(t, "/v1/services?prefix=x"); !bytes.Contains(r.body, []byte(`"services":[]`)) {
			t.Errorf("local list: %s, want empty", r.body)
		}
		ts.lastContact.Store(int64(time.Minute))
		if r := ts.get(t, "/v1/services?prefix=x&max_stale=1s"); !bytes.Contains(r.body, []byte(`"xsvc"`)) {
			t.Errorf("fresh list: %s, want xsvc", r.body)
		}
	})
}

func TestBlockingQueries(t *testing.T) {
	t.Run("a query with an index behind the result's answers at once", func(t *testing.T) {
		ts := newTestServer(t, nil)
		idx := ts.register(t, inst{id: "w1", service: "web"})
		r := ts.get(t, fmt.Sprintf("/v1/services/web/instances?index=%d", idx-1))
		if r.status != http.StatusOK || r.index != idx {
			t.Errorf("got %d index %d, want 200 at %d", r.status, r.index, idx)
		}
	})
	t.Run("index=0 does not block and the index is never 0", func(t *testing.T) {
		ts := newTestServer(t, nil)
		for _, p := range []string{"/v1/services/web/instances?index=0", "/v1/services", "/v1/services/web/instances"} {
			if r := ts.get(t, p); r.status != http.StatusOK || r.index == 0 {
				t.Errorf("%s: %d index %d", p, r.status, r.index)
			}
		}
	})
	t.Run("a blocked query returns when its service changes, with the new index", func(t *testing.T) {
		ts := newTestServer(t, nil)
		idx := ts.register(t, inst{id: "w1", service: "web"})
		ch := ts.blocked(t, fmt.Sprintf("/v1/services/web/instances?index=%d&wait=1m", idx))
		idx2 := ts.register(t, inst{id: "w2", service: "web"})
		r := receive(t, ch)
		if r.status != http.StatusOK || r.index != idx2 || !slices.Equal(r.ids(t), []string{"w1", "w2"}) {
			t.Errorf("got %d index %d %s, want index %d with w1, w2", r.status, r.index, r.body, idx2)
		}
	})
	t.Run("a blocked reader of service a is not woken by changes to service b", func(t *testing.T) {
		ts := newTestServer(t, nil)
		idx := ts.register(t, inst{id: "a1", service: "a"})
		ts.register(t, inst{id: "b1", service: "b"})
		ch := ts.blocked(t, fmt.Sprintf("/v1/services/a/instances?index=%d&wait=1m", idx))
		for i := range 20 {
			ts.register(t, inst{id: fmt.Sprintf("b%d", i+2), service: "b"})
		}
		ts.apply(fsmtest.Deregister(t, "b", "b1"))
		notYet(t, ch, "only b changed")
		if w := ts.srv.BlockingStats().Wakeups; w != 0 {
			t.Errorf("%d wake-ups of the reader of a, want 0", w)
		}
		idx2 := ts.register(t, inst{id: "a2", service: "a"})
		if r := receive(t, ch); r.index != idx2 {
			t.Errorf("woke at index %d, want %d", r.index, idx2)
		}
	})
	t.Run("at the end of the wait the query answers with the unchanged index", func(t *testing.T) {
		ts := newTestServer(t, nil)
		idx := ts.register(t, inst{id: "a1", service: "a"})
		ch := ts.blocked(t, fmt.Sprintf("/v1/services/a/instances?index=%d&wait=200ms", idx))
		ts.register(t, inst{id: "b1", service: "b"})
		if r := receive(t, ch); r.status != http.StatusOK || r.index != idx {
			t.Errorf("got %d index %d, want 200 at the unchanged %d", r.status, r.index, idx)
		}
	})
	t.Run("a new check output alone wakes no discovery reader", func(t *testing.T) {
		ts := newTestServer(t, nil)
		idx := ts.register(t, inst{id: "a1", service: "a", health: fsm.Passing})
		ch := ts.blocked(t, fmt.Sprintf("/v1/services/a/instances?index=%d&wait=1m", idx))
		ts.setHealth(t, "a", "a1", fsm.Passing, "all good, 12ms")
		ts.setHealth(t, "a", "a1", fsm.Passing, "all good, 15ms")
		notYet(t, ch, "only the check output changed")
		if w := ts.srv.BlockingStats().Wakeups; w != 0 {
			t.Errorf("%d wake-ups, want 0", w)
		}
		idx2 := ts.setHealth(t, "a", "a1", fsm.Critical, "down")
		if r := receive(t, ch); r.index != idx2 || r.instances(t)[0].Status != "critical" {
			t.Errorf("woke at %d with %s, want %d critical", r.index, r.body, idx2)
		}
	})
	t.Run("a filtered reader sleeps through changes to instances it filters out", func(t *testing.T) {
		ts := newTestServer(t, nil)
		ts.register(t, inst{id: "a1", service: "a", health: fsm.Passing})
		idx := ts.register(t, inst{id: "a2", service: "a", health: fsm.Critical})
		ch := ts.blocked(t, fmt.Sprintf("/v1/services/a/instances?healthy=true&index=%d&wait=1m", idx))
		ts.setHealth(t, "a", "a2", fsm.Warning, "")
		ts.register(t, inst{id: "a3", service: "a", health: fsm.Critical})
		waitFor(t, func() bool { return ts.srv.BlockingStats().Wakeups >= 1 }, "the watch to fire")
		notYet(t, ch, "no healthy instance changed")
		idx2 := ts.setHealth(t, "a", "a2", fsm.Passing, "")
		r := receive(t, ch)
		if r.index != idx2 || !slices.Equal(r.ids(t), []string{"a1", "a2"}) {
			t.Errorf("woke at %d with %v, want %d with a1, a2", r.index, r.ids(t), idx2)
		}
	})
	t.Run("a reader of a deleted service wakes when it comes back", func(t *testing.T) {
		ts := newTestServer(t, nil)
		ts.register(t, inst{id: "a1", service: "a"})
		gone := ts.apply(fsmtest.Deregister(t, "a", "a1"))
		r := ts.get(t, "/v1/services/a/instances")
		if r.index != gone || string(r.body) != "[]" {
			t.Fatalf("deleted service: index %d %s, want %d []", r.index, r.body, gone)
		}
		ch := ts.blocked(t, fmt.Sprintf("/v1/services/a/instances?index=%d&wait=1m", gone))
		ts.register(t, inst{id: "b1", service: "b"})
		ts.register(t, inst{id: "c1", service: "c"})
		ts.apply(fsmtest.Deregister(t, "c", "c1"))
		notYet(t, ch, "only other services changed")
		back := ts.register(t, inst{id: "a2", service: "a"})
		if r := receive(t, ch); r.index != back {
			t.Errorf("woke at %d, want %d", r.index, back)
		}
	})
	t.Run("a reader of one instance wakes when its check output changes", func(t *testing.T) {
		ts := newTestServer(t, nil)
		idx := ts.register(t, inst{id: "a1", service: "a", health: fsm.Passing})
		ch := ts.blocked(t, fmt.Sprintf("/v1/services/a/instances/a1?index=%d&wait=1m", idx))
		idx2 := ts.setHealth(t, "a", "a1", fsm.Passing, "new output")
		if r := receive(t, ch); r.index != idx2 || !bytes.Contains(r.body, []byte("new output")) {
			t.Errorf("woke at %d with %s, want %d with the new output", r.index, r.body, idx2)
		}
	})
	t.Run("a blocked service list wakes for a change on its page only", func(t *testing.T) {
		ts := newTestServer(t, nil)
		ts.register(t, inst{id: "a1", service: "a"})
		ts.register(t, inst{id: "b1", service: "b"})
		ts.register(t, inst{id: "c1", service: "c"})
		r := ts.get(t, "/v1/services?limit=1")
		ch := ts.blocked(t, fmt.Sprintf("/v1/services?limit=1&index=%d&wait=1m", r.index))
		ts.register(t, inst{id: "c2", service: "c"})
		waitFor(t, func() bool { return ts.srv.BlockingStats().Wakeups >= 1 }, "the watch to fire")
		notYet(t, ch, "only a service on a later page changed")
		idx := ts.register(t, inst{id: "a2", service: "a"})
		if r := receive(t, ch); r.index != idx {
			t.Errorf("woke at %d, want %d", r.index, idx)
		}
	})
	t.Run("a node whose store is restored from a snapshot wakes every blocked reader", func(t *testing.T) {
		ts := newTestServer(t, nil)
		idxA := ts.register(t, inst{id: "a1", service: "a"})
		idxB := ts.register(t, inst{id: "b1", service: "b"})
		var snap bytes.Buffer
		persist(t, ts.fsm, &snap)
		ts.register(t, inst{id: "b2", service: "b"})
		list := ts.get(t, "/v1/services").index
		chans := []<-chan response{
			ts.blocked(t, fmt.Sprintf("/v1/services/a/instances?index=%d&wait=1m", idxA)),
			ts.blocked(t, fmt.Sprintf("/v1/services/b/instances?index=%d&wait=1m", idxB+1)),
			ts.blocked(t, "/v1/services/none/instances?index=1&wait=1m"),
			ts.blocked(t, fmt.Sprintf("/v1/services?index=%d&wait=1m", list)),
		}
		if err := ts.fsm.Restore(nopCloser{&snap}); err != nil {
			t.Fatal(err)
		}
		for i, ch := range chans {
			r := receive(t, ch)
			if r.status != http.StatusOK {
				t.Errorf("reader %d: %d %s", i, r.status, r.body)
			}
		}
	})
	t.Run("an index of another service that a lagging node has yet to apply answers once it has", func(t *testing.T) {
		ts := newTestServer(t, nil)
		idx := ts.register(t, inst{id: "a1", service: "a"})
		ahead := ts.commitElsewhere(fsmtest.Register(t, "b1", "b", fsmtest.WithAddress("10.0.0.2", 80)))
		ch := ts.blocked(t, fmt.Sprintf("/v1/services/a/instances?index=%d&wait=1m", ahead))
		notYet(t, ch, "this node has not applied the client's index")
		ts.register(t, inst{id: "c1", service: "c"}) // applies b1, then c1: a never changes
		if r := receive(t, ch); r.status != http.StatusOK || r.index != idx {
			t.Errorf("got %d at %d, want 200 at a's index %d", r.status, r.index, idx)
		}
	})
	t.Run("an index no node has reached answers at once", func(t *testing.T) {
		ts := newTestServer(t, nil)
		idx := ts.register(t, inst{id: "a1", service: "a"})
		r := ts.get(t, fmt.Sprintf("/v1/services/a/instances?index=%d&wait=1m", idx+1000))
		if r.status != http.StatusOK || r.index != idx {
			t.Errorf("got %d at %d, want 200 at %d", r.status, r.index, idx)
		}
	})
	t.Run("an index this node has applied but the result is behind means a restore: answer at once", func(t *testing.T) {
		ts := newTestServer(t, nil)
		ts.register(t, inst{id: "a1", service: "a"})
		for i := range 5 {
			ts.register(t, inst{id: fmt.Sprintf("b%d", i), service: "b"})
		}
		r := ts.get(t, "/v1/services/a/instances?index=4&wait=1m")
		if r.status != http.StatusOK || r.index != 1 {
			t.Errorf("got %d at %d, want 200 at 1", r.status, r.index)
		}
	})
	t.Run("an index ahead of this node waits for the node to catch up", func(t *testing.T) {
		ts := newTestServer(t, nil)
		ts.register(t, inst{id: "a1", service: "a"})
		ahead := ts.commitElsewhere(fsmtest.Register(t, "a2", "a", fsmtest.WithAddress("10.0.0.2", 80)))
		ch := ts.blocked(t, fmt.Sprintf("/v1/services/a/instances?index=%d&wait=1m", ahead))
		notYet(t, ch, "this node has not applied the client's index")
		// This write first applies a2, at exactly the client's index: the
		// reader wakes, finds nothing newer than what the client has, and
		// must wait on.
		ts.register(t, inst{id: "b1", service: "b"})
		waitFor(t, func() bool { return ts.srv.BlockingStats().Wakeups >= 1 }, "the catch-up to wake the reader")
		notYet(t, ch, "the node only caught up with the client")
		idx := ts.register(t, inst{id: "a3", service: "a"})
		if r := receive(t, ch); r.index != idx || !slices.Equal(r.ids(t), []string{"a1", "a2", "a3"}) {
			t.Errorf("woke at %d with %v, want %d with a1, a2, a3", r.index, r.ids(t), idx)
		}
	})
	t.Run("a reader ahead of a lagging node compares with the result at its own index", func(t *testing.T) {
		ts := newTestServer(t, nil)
		ts.register(t, inst{id: "a1", service: "a"})
		// The client saw a1 and a2 at this index elsewhere; this node has
		// only a1 so far, which must not count as what the client has.
		ahead := ts.commitElsewhere(fsmtest.Register(t, "a2", "a", fsmtest.WithAddress("10.0.0.2", 80)))
		ch := ts.blocked(t, fmt.Sprintf("/v1/services/a/instances?index=%d&wait=1m", ahead))
		ts.register(t, inst{id: "b1", service: "b"}) // applies a2, then b1
		waitFor(t, func() bool { return ts.srv.BlockingStats().Wakeups >= 1 }, "the catch-up to wake the reader")
		gone := ts.apply(fsmtest.Deregister(t, "a", "a2"))
		r := receive(t, ch)
		if r.index != gone || !slices.Equal(r.ids(t), []string{"a1"}) {
			t.Errorf("woke at %d with %v, want %d with a1 alone", r.index, r.ids(t), gone)
		}
	})
	t.Run("the wait is clamped to the maximum", func(t *testing.T) {
		ts := newTestServer(t, func(c *api.Config) { c.DefaultWait, c.MaxWait = 100*time.Millisecond, 200*time.Millisecond })
		idx := ts.register(t, inst{id: "a1", service: "a"})
		start := time.Now()
		r := ts.get(t, fmt.Sprintf("/v1/services/a/instances?index=%d&wait=1h", idx))
		if took := time.Since(start); r.status != http.StatusOK || took < 200*time.Millisecond || took > 30*time.Second {
			t.Errorf("got %d after %s, want 200 after 200ms-30s", r.status, took)
		}
	})
	t.Run("beyond the cap a blocking query is refused with 429 and a JSON error", func(t *testing.T) {
		ts := newTestServer(t, func(c *api.Config) { c.MaxBlockingQueries = 2 })
		idx := ts.register(t, inst{id: "a1", service: "a"})
		path := fmt.Sprintf("/v1/services/a/instances?index=%d&wait=1m", idx)
		ch1, ch2 := ts.blocked(t, path), ts.blocked(t, path)
		r := ts.get(t, path)
		e := r.errorBody(t)
		if r.status != http.StatusTooManyRequests || e.Code != "too_many_blocking_queries" || r.header.Get("Retry-After") == "" {
			t.Errorf("third query: %d %s (Retry-After %q), want 429 too_many_blocking_queries", r.status, r.body, r.header.Get("Retry-After"))
		}
		if got := ts.srv.BlockingStats().Rejected; got != 1 {
			t.Errorf("Rejected = %d, want 1", got)
		}
		if r := ts.get(t, "/v1/services/a/instances"); r.status != http.StatusOK {
			t.Errorf("a non-blocking read at the cap: %d, want 200", r.status)
		}
		idx2 := ts.register(t, inst{id: "a2", service: "a"})
		receive(t, ch1)
		receive(t, ch2)
		waitFor(t, func() bool { return ts.srv.BlockingStats().Active == 0 }, "the slots to free")
		ch3 := ts.blocked(t, fmt.Sprintf("/v1/services/a/instances?index=%d&wait=1m", idx2))
		ts.register(t, inst{id: "a3", service: "a"})
		if r := receive(t, ch3); r.status != http.StatusOK {
			t.Errorf("after slots freed: %d %s", r.status, r.body)
		}
	})
	t.Run("shutting down ends blocked queries with 503 shutting_down", func(t *testing.T) {
		ts := newTestServer(t, nil)
		idx := ts.register(t, inst{id: "a1", service: "a"})
		ch := ts.blocked(t, fmt.Sprintf("/v1/services/a/instances?index=%d&wait=1m", idx))
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = ts.srv.Shutdown(ctx)
		}()
		r := receive(t, ch)
		wg.Wait()
		if r.status != http.StatusServiceUnavailable || r.errorBody(t).Code != "shutting_down" {
			t.Errorf("got %d %s, want 503 shutting_down", r.status, r.body)
		}
	})
}

func TestAReadThatFindsNothingStillCarriesTheReadHeaders(t *testing.T) {
	ts := newTestServer(t, nil)
	r := ts.get(t, "/v1/services/web/instances/missing")
	if r.status != http.StatusNotFound {
		t.Fatalf("status %d, want 404", r.status)
	}
	if r.index == 0 || r.header.Get(api.HeaderKnownLeader) == "" || r.header.Get(api.HeaderLastContact) == "" {
		t.Fatalf("a 404 read lacks the read headers: %v", r.header)
	}
}

// A discovery answer larger than net/http's pre-chunking buffer (2 KB) goes
// out with its length, not chunked, and so does a small JSON answer; the
// length is the body's.
func TestAnswersCarryTheirLengthNotChunked(t *testing.T) {
	ts := newTestServer(t, nil)
	for n := 0; n < 30; n++ {
		ts.register(t, inst{id: fmt.Sprintf("big-%02d", n), service: "big", tags: []string{"a", "b"},
			meta: map[string]string{"zone": "z1"}, version: "1.0.0"})
	}
	for _, target := range []string{"/v1/services/big/instances", "/v1/services/big/instances/big-03", "/v1/services"} {
		resp, err := ts.hc.Get(ts.base + target)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %d %v", target, resp.StatusCode, err)
		}
		if len(resp.TransferEncoding) != 0 || resp.ContentLength != int64(len(body)) {
			t.Errorf("GET %s: transfer-encoding %v, content-length %d, body %d bytes; want the body's length and no chunking",
				target, resp.TransferEncoding, resp.ContentLength, len(body))
		}
		if target == "/v1/services/big/instances" && len(body) <= 2048 {
			t.Fatalf("the list is %d bytes: not larger than the 2 KB pre-chunking buffer, so the test shows nothing", len(body))
		}
	}
}

// Discovery lists are assembled in pooled buffers: concurrent reads of
// different services each get their own service's list, whole.
func TestConcurrentListsDoNotShareBuffers(t *testing.T) {
	ts := newTestServer(t, nil)
	const services, per = 8, 12
	for s := 0; s < services; s++ {
		for i := 0; i < per+s; i++ {
			ts.register(t, inst{id: fmt.Sprintf("s%d-%02d", s, i), service: fmt.Sprintf("svc%d", s), tags: []string{"a"}})
		}
	}
	var wg sync.WaitGroup
	errs := make(chan string, services*50)
	for g := 0; g < services*2; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			s := g % services
			for n := 0; n < 50; n++ {
				resp, err := ts.hc.Get(fmt.Sprintf("%s/v1/services/svc%d/instances", ts.base, s))
				if err != nil {
					errs <- err.Error()
					return
				}
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				var got []struct{ ID string }
				if err == nil {
					err = json.Unmarshal(body, &got)
				}
				if err != nil || len(got) != per+s {
					errs <- fmt.Sprintf("svc%d: %d instances, %v: %.80s", s, len(got), err, body)
					return
				}
				for i, inst := range got {
					if want := fmt.Sprintf("s%d-%02d", s, i); inst.ID != want {
						errs <- fmt.Sprintf("svc%d: instance %d is %q, want %q", s, i, inst.ID, want)
						return
					}
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

// TestFilteredReadsLeaveTheSharedListAlone: the catalog hands every reader
// of a service version the same list (fsm.List), and the whole list's
// encoding is kept with it. A filter or a page that kept its result in the
// shared list would change what the next reader of the whole list sees.
func TestFilteredReadsLeaveTheSharedListAlone(t *testing.T) {
	ts := newTestServer(t, nil)
	catalog(t, ts)
	all := []string{"w1", "w2", "w3", "w4", "w5"}
	whole := ts.get(t, "/v1/services/web/instances")
	if got := whole.ids(t); !slices.Equal(got, all) {
		t.Fatalf("whole list = %v, want %v", got, all)
	}
	for _, q := range []string{"healthy=true", "tag=v2", "tag=us", "meta=zone:a", "version=1.2.0", "tag=nope", "limit=2", "limit=2&cursor=w2", "healthy=true&limit=1"} {
		if r := ts.get(t, "/v1/services/web/instances?"+q); r.status != http.StatusOK {
			t.Fatalf("%s: status %d", q, r.status)
		}
		// A page is assembled from the list itself (the kept encoding is
		// the whole list's only).
		if got := ts.get(t, "/v1/services/web/instances?limit=4").ids(t); !slices.Equal(got, all[:4]) {
			t.Fatalf("after a read with %s, the first page is %v, want %v", q, got, all[:4])
		}
		again := ts.get(t, "/v1/services/web/instances")
		if got := again.ids(t); !slices.Equal(got, all) {
			t.Fatalf("after a read with %s, the whole list is %v, want %v", q, got, all)
		}
		if !bytes.Equal(again.body, whole.body) {
			t.Fatalf("after a read with %s, the whole list's body changed:\n%s\nwant\n%s", q, again.body, whole.body)
		}
	}
	// A new version of the service is a new list.
	ts.register(t, inst{id: "w6", service: "web"})
	if got, want := ts.get(t, "/v1/services/web/instances").ids(t), append(all, "w6"); !slices.Equal(got, want) {
		t.Fatalf("after a registration the whole list is %v, want %v", got, want)
	}
}
