package cluster

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// TestServersBoundsAServerThatDoesNotAnswer pauses a follower's cluster
// traffic (connections stay open, nothing answers, as with a paused
// process): asked through another server, it is listed with "no answer
// within" the bound, the others with their own views, and the call
// returns after about the bound rather than hanging.
func TestServersBoundsAServerThatDoesNotAnswer(t *testing.T) {
	tn := newTestNodes(t, 3, nil)
	leader := tn.waitForLeader(30 * time.Second)
	paused := tn.other(leader)
	asker := tn.other(paused)
	// Every server answers first (so the paused one has an open
	// connection from the asker, as a paused process would).
	eventually(t, 30*time.Second, func() bool {
		// A node that has not yet received the cluster's configuration
		// from the leader knows no servers (seen at load 25).
		views := tn.nodes[asker].Servers(context.Background(), 2*time.Second)
		if len(views) != 3 {
			return false
		}
		for _, v := range views {
			if v.Err != nil || v.View.LastContact == Never {
				return false
			}
		}
		return true
	}, "every server answering, caught up")
	tn.pause(paused)

	const bound = 500 * time.Millisecond
	start := time.Now()
	views := tn.nodes[asker].Servers(context.Background(), bound)
	took := time.Since(start)
	if len(views) != 3 {
		t.Fatalf("%d servers: %+v", len(views), views)
	}
	for _, v := range views {
		if v.ID != tn.nodes[paused].Name() {
			if v.Err != nil || v.View.Term == 0 {
				t.Errorf("%s: %+v", v.ID, v)
			}
			continue
		}
		if v.Err == nil || v.Err.Error() != "no answer within 500ms" {
			t.Errorf("the paused %s: error %v, want no answer within 500ms", v.ID, v.Err)
		}
		if v.Took < bound {
			t.Errorf("the paused %s failed after %v, before the bound", v.ID, v.Took)
		}
	}
	t.Logf("the call returned after %v (bound %v per server)", took, bound)
	// The caller's own context still wins over the bound.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for _, v := range tn.nodes[asker].Servers(ctx, time.Minute) {
		if v.ID == tn.nodes[paused].Name() && (v.Err == nil || strings.Contains(v.Err.Error(), "no answer within")) {
			t.Errorf("a cancelled call reports %v for the paused server", v.Err)
		}
	}
}

// TestServersSaysWhenAnotherServerAnswersAtAnAddress: when the server at a
// peer's cluster address is another one (the server a replacement took the
// address of, started again there while the replacement is down), Raft
// sends the peer's traffic to it and it follows the leader as that peer;
// `beacon operator raft servers` listed its view as the peer's, a follower
// in good health. It now says which server answered instead. Here the
// follower's answer is made to name another node, as that server's would.
func TestServersSaysWhenAnotherServerAnswersAtAnAddress(t *testing.T) {
	tn := newTestNodes(t, 3, nil)
	leader := tn.waitForLeader(30 * time.Second)
	other := tn.other(leader)
	tn.nodes[other].rpcSrv.handle(opRaftView, func(context.Context, []byte) ([]byte, error) {
		b, err := json.Marshal(tn.nodes[other].raftView())
		if err != nil {
			return nil, err
		}
		var v map[string]any
		if err := json.Unmarshal(b, &v); err != nil {
			return nil, err
		}
		v["node"] = "node9"
		return json.Marshal(v)
	})
	want := "is node9, not " + tn.nodes[other].Name()
	eventually(t, 30*time.Second, func() bool {
		views := tn.nodes[leader].Servers(context.Background(), 2*time.Second)
		if len(views) != 3 {
			return false
		}
		ok := true
		for _, v := range views {
			if v.ID == tn.nodes[other].Name() {
				ok = ok && v.Err != nil && strings.Contains(v.Err.Error(), want)
			} else {
				ok = ok && v.Err == nil
			}
		}
		return ok
	}, "the impostor reported by name, the others' views as they are")
}
