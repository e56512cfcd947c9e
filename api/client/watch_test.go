package client_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/beaconhq/beacon/api/client"
	"github.com/beaconhq/beacon/fsm/fsmtest/wait"
)

// catalog is the state fake agents share: one service's instances at an index.
type catalog struct {
	mu      sync.Mutex
	index   uint64
	insts   []client.Instance
	changed chan struct{}
}

func newCatalog() *catalog { return &catalog{index: 1, changed: make(chan struct{})} }

// set replaces the instances at a new index (or at the same one with same).
func (c *catalog) set(index uint64, ids ...string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.index = index
	c.insts = nil
	for _, id := range ids {
		c.insts = append(c.insts, client.Instance{ID: id, Service: "web", Address: "10.0.0.1", Port: 80, Status: "passing", Healthy: true})
	}
	close(c.changed)
	c.changed = make(chan struct{})
}

// fakeAgent is a fake Beacon agent serving GET /v1/services/web/instances with
// blocking-query semantics over a shared catalog, or failing on demand.
type fakeAgent struct {
	*httptest.Server
	cat      *catalog
	failWith atomic.Int32 // HTTP status to answer instead, 0 for none
	queries  atomic.Int64
	blocked  atomic.Int64
}

func newAgent(t *testing.T, cat *catalog) *fakeAgent {
	a := &fakeAgent{cat: cat}
	a.Server = httptest.NewServer(http.HandlerFunc(a.serve))
	t.Cleanup(a.Close)
	return a
}

func (a *fakeAgent) serve(w http.ResponseWriter, r *http.Request) {
	a.queries.Add(1)
	// A healthy agent knows its leader (the client moves off one that
	// does not).
	w.Header().Set("X-Beacon-Known-Leader", "true")
	w.Header().Set(client.HeaderAgent, "1") // as every agent's answer
	if code := a.failWith.Load(); code != 0 {
		w.WriteHeader(int(code))
		_ = json.NewEncoder(w).Encode(client.ErrorBody{Error: "failing on purpose", Code: "test_" + strconv.Itoa(int(code))})
		return
	}
	if r.URL.Query().Get("version") == "bad" {
		w.WriteHeader(http.StatusBadRequest)
		_ = json.NewEncoder(w).Encode(client.ErrorBody{Error: "bad version", Code: "invalid", Field: "version"})
		return
	}
	min, _ := strconv.ParseUint(r.URL.Query().Get("index"), 10, 64)
	wait, _ := time.ParseDuration(r.URL.Query().Get("wait"))
	if wait == 0 {
		wait = time.Minute
	}
	timeout := time.After(wait)
	for {
		a.cat.mu.Lock()
		idx, insts, changed := a.cat.index, a.cat.insts, a.cat.changed
		a.cat.mu.Unlock()
		if min == 0 || idx != min {
			w.Header().Set("X-Beacon-Index", strconv.FormatUint(idx, 10))
			if insts == nil {
				insts = []client.Instance{}
			}
			_ = json.NewEncoder(w).Encode(insts)
			return
		}
		a.blocked.Add(1)
		select {
		case <-changed:
			a.blocked.Add(-1)
		case <-timeout:
			a.blocked.Add(-1)
			w.Header().Set("X-Beacon-Index", strconv.FormatUint(idx, 10))
			_ = json.NewEncoder(w).Encode(insts)
			return
		case <-r.Context().Done():
			a.blocked.Add(-1)
			return
		}
	}
}

func (a *fakeAgent) host() string { return strings.TrimPrefix(a.URL, "http://") }

func newClient(t *testing.T, agents ...*fakeAgent) *client.Client {
	t.Helper()
	var addrs []string
	for _, a := range agents {
		addrs = append(addrs, a.URL)
	}
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	c, err := client.New(client.Config{Addresses: addrs, HTTPClient: &http.Client{Transport: tr}})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func next(t *testing.T, ch <-chan client.WatchUpdate) client.WatchUpdate {
	t.Helper()
	select {
	case u, ok := <-ch:
		if !ok {
			t.Fatal("watch channel closed")
		}
		return u
	case <-time.After(10 * time.Second):
		t.Fatal("no update within 10s")
		return client.WatchUpdate{}
	}
}

func ids(u client.WatchUpdate) string {
	var out []string
	for _, i := range u.Instances {
		out = append(out, i.ID)
	}
	return strings.Join(out, ",")
}

func waitUntil(t *testing.T, cond func() bool, what string) {
	t.Helper()
	wait.Until(t, 30*time.Second, what, cond)
}

func TestWatch(t *testing.T) {
	defer goleak.VerifyNone(t)
	t.Run("delivers the first result and then only changes", func(t *testing.T) {
		cat := newCatalog()
		cat.set(5, "w1")
		a := newAgent(t, cat)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		ch, err := newClient(t, a).Watch(ctx, "web", &client.QueryOptions{WaitTime: 50 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		if u := next(t, ch); ids(u) != "w1" || u.Meta.Index != 5 || u.Meta.Agent != a.host() {
			t.Fatalf("first update %s %+v", ids(u), u.Meta)
		}
		// Several waits end with nothing new, then the index moves with the
		// same instances: neither is a change.
		waitUntil(t, func() bool { return a.queries.Load() >= 4 }, "waits to end")
		cat.set(6, "w1")
		waitUntil(t, func() bool { return a.queries.Load() >= 6 }, "the new index to be seen")
		cat.set(7, "w1", "w2")
		if u := next(t, ch); ids(u) != "w1,w2" || u.Meta.Index != 7 {
			t.Fatalf("second update %s at %d, want w1,w2 at 7", ids(u), u.Meta.Index)
		}
		cat.set(8)
		if u := next(t, ch); len(u.Instances) != 0 || u.Instances == nil || u.Meta.Index != 8 {
			t.Fatalf("third update %#v at %d, want an empty list at 8", u.Instances, u.Meta.Index)
		}
	})
	t.Run("moves to another agent when the one it talks to fails, and keeps going", func(t *testing.T) {
		cat := newCatalog()
		cat.set(3, "w1")
		a, b := newAgent(t, cat), newAgent(t, cat)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		ch, err := newClient(t, a, b).Watch(ctx, "web", nil)
		if err != nil {
			t.Fatal(err)
		}
		first := next(t, ch)
		cur, other := a, b
		if first.Meta.Agent == b.host() {
			cur, other = b, a
		}
		waitUntil(t, func() bool { return cur.blocked.Load() == 1 }, "the watch to block")
		// The agent answers errors from now on, and ends the blocked query.
		cur.failWith.Store(http.StatusServiceUnavailable)
		cur.CloseClientConnections()
		waitUntil(t, func() bool { return other.blocked.Load() == 1 }, "the watch to block on the other agent")
		cat.set(4, "w1", "w2")
		if u := next(t, ch); ids(u) != "w1,w2" || u.Meta.Agent != other.host() {
			t.Fatalf("update %s from %s, want w1,w2 from %s", ids(u), u.Meta.Agent, other.host())
		}
	})
	t.Run("an agent answering 429 is left for another", func(t *testing.T) {
		cat := newCatalog()
		cat.set(3, "w1")
		a, b := newAgent(t, cat), newAgent(t, cat)
		a.failWith.Store(http.StatusTooManyRequests)
		b.failWith.Store(http.StatusTooManyRequests)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		ch, err := newClient(t, a, b).Watch(ctx, "web", nil)
		if err != nil {
			t.Fatalf("429 is not permanent: %v", err)
		}
		waitUntil(t, func() bool { return a.queries.Load() >= 2 && b.queries.Load() >= 2 }, "both agents to be tried")
		b.failWith.Store(0)
		if u := next(t, ch); ids(u) != "w1" || u.Meta.Agent != b.host() {
			t.Fatalf("update %s from %s", ids(u), u.Meta.Agent)
		}
	})
	t.Run("with every agent down it retries with back-off until one returns", func(t *testing.T) {
		cat := newCatalog()
		cat.set(2, "w1")
		a := newAgent(t, cat)
		a.failWith.Store(http.StatusBadGateway)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		ch, err := newClient(t, a).Watch(ctx, "web", nil)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		waitUntil(t, func() bool { return a.queries.Load() >= 5 }, "retries")
		// Back-off doubles from 50ms (jittered to at least half): the first
		// four retries take at least 25+50+100+200 ms. Not a timing test: a
		// tight loop would make hundreds of queries in that time.
		if n := a.queries.Load(); time.Since(start) < 300*time.Millisecond && n > 5 {
			t.Errorf("%d queries in %s: no back-off", n, time.Since(start))
		}
		a.failWith.Store(0)
		if u := next(t, ch); ids(u) != "w1" {
			t.Fatalf("update %s", ids(u))
		}
	})
	t.Run("a query the agent refuses as invalid is an error from Watch", func(t *testing.T) {
		a := newAgent(t, newCatalog())
		_, err := newClient(t, a).Watch(context.Background(), "web", &client.QueryOptions{Version: "bad"})
		var e *client.Error
		if !asError(err, &e) || e.Status != http.StatusBadRequest || e.Field != "version" {
			t.Fatalf("err = %v, want the 400", err)
		}
	})
	t.Run("an index that goes back starts the watch over from it", func(t *testing.T) {
		cat := newCatalog()
		cat.set(50, "w1")
		a := newAgent(t, cat)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		ch, err := newClient(t, a).Watch(ctx, "web", nil)
		if err != nil {
			t.Fatal(err)
		}
		next(t, ch)
		cat.set(10, "w9") // a restore
		if u := next(t, ch); ids(u) != "w9" || u.Meta.Index != 10 {
			t.Fatalf("after restore %s at %d", ids(u), u.Meta.Index)
		}
		cat.set(11, "w9", "w10")
		if u := next(t, ch); ids(u) != "w9,w10" || u.Meta.Index != 11 {
			t.Fatalf("after restore %s at %d", ids(u), u.Meta.Index)
		}
	})
	t.Run("the channel closes when the context ends", func(t *testing.T) {
		cat := newCatalog()
		a := newAgent(t, cat)
		ctx, cancel := context.WithCancel(context.Background())
		ch, err := newClient(t, a).Watch(ctx, "web", nil)
		if err != nil {
			t.Fatal(err)
		}
		next(t, ch)
		waitUntil(t, func() bool { return a.blocked.Load() == 1 }, "the watch to block")
		cancel()
		select {
		case _, ok := <-ch:
			if ok {
				t.Fatal("update after cancel")
			}
		case <-time.After(10 * time.Second):
			t.Fatal("channel not closed")
		}
	})
}

func asError(err error, target **client.Error) bool {
	e, ok := err.(*client.Error)
	if ok {
		*target = e
	}
	return ok
}
