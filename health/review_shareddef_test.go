package health

// Review of shared check definitions (32921bc): checks of a catalog that
// declare the same HTTP check but for the target share one definition; the
// prober must probe each check's own target, with its own headers, and
// probing (concurrently) must not write to what the checks share.

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/beaconhq/beacon/fsm"
	"github.com/beaconhq/beacon/fsm/fsmtest"
)

func TestReviewSharedDefProbesEachChecksOwnTarget(t *testing.T) {
	const n = 4
	var hits [n]atomic.Int64
	var hdrMu sync.Mutex
	hdrs := map[int]string{}
	var urls [n]string
	for k := range n {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			hits[k].Add(1)
			if v := r.Header.Get("X-Inst"); v != "" {
				hdrMu.Lock()
				hdrs[k] = v
				hdrMu.Unlock()
			}
			fmt.Fprint(w, "ok")
		}))
		defer srv.Close()
		urls[k] = srv.URL
	}
	f := fsm.New(nil)
	idx := uint64(1)
	apply := func(b []byte) {
		t.Helper()
		res := f.Apply(&raft.Log{Index: idx, Type: raft.LogCommand, Data: b}).(fsm.ApplyResult)
		if res.Err != nil {
			t.Fatal(res.Err)
		}
		idx++
	}
	apply(fsmtest.NodeUpdate(t, 1, fsmtest.Server("s1", fsm.NodeAlive)))
	for k := range n {
		h := fsmtest.HTTPCheck("http", urls[k]+"/plain", fsm.Passing)
		hh := fsmtest.HTTPCheck("hdr", urls[k]+"/hdr", fsm.Passing)
		hh.Header = map[string][]string{"X-Inst": {fmt.Sprint(k)}}
		apply(fsmtest.Register(t, fmt.Sprintf("i-%d", k), "web", fsmtest.WithAddress("127.0.0.1", 80), fsmtest.WithChecks(h, hh)))
	}
	first := f.Store().Check(nil, fsm.CheckID("web", "i-0", "http"))
	p := NewProber(nil, 4096)
	var wg sync.WaitGroup
	for k := range n {
		for _, name := range []string{"http", "hdr"} {
			c := f.Store().Check(nil, fsm.CheckID("web", fmt.Sprintf("i-%d", k), name))
			if name == "http" && c.CheckDefinition != first.CheckDefinition {
				t.Fatalf("the http checks do not share their definition: the test proves nothing")
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 3 {
					r := p.ProbeFor(context.Background(), c, "127.0.0.1")
					if r.Status != fsm.Passing || !strings.Contains(r.Output, urls[k]) {
						t.Errorf("check %s: %s %q, want passing from %s", c.ID, r.Status, r.Output, urls[k])
					}
				}
			}()
		}
	}
	wg.Wait()
	for k := range n {
		if got := hits[k].Load(); got != 6 {
			t.Errorf("server %d got %d probes, want 6 (3 per check of its instance)", k, got)
		}
		if hdrs[k] != fmt.Sprint(k) {
			t.Errorf("server %d saw X-Inst %q", k, hdrs[k])
		}
	}
	if c := f.Store().Check(nil, fsm.CheckID("web", "i-0", "http")); c.CheckDefinition.Target != "" || c.Header != nil {
		t.Errorf("the shared definition changed: %+v", *c.CheckDefinition)
	}
}
