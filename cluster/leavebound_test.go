package cluster

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/beaconhq/beacon/fsm/fsmtest"
)

// newCutOffNodes starts three nodes with a leader-wait of 2 s whose leader
// sends nothing but heartbeats to the server whose cluster address the
// returned value is set to (CutOffForTest).
func newCutOffNodes(t *testing.T) (*testNodes, *atomic.Value) {
	to := new(atomic.Value)
	f := CutOffForTest(to)
	tn := newTestNodes(t, 3, func(_ int, c *Config) {
		c.LeaderWait = 2 * time.Second
		c.sendFilterForTest = func(target raft.ServerAddress, req any) error { return f(string(target), req) }
	})
	return tn, to
}

// within runs fn and returns its error, failing the test if fn has not
// returned after two minutes.
func within(t *testing.T, what string, fn func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- fn() }()
	select {
	case err := <-done:
		return err
	case <-time.After(2 * time.Minute):
		t.Fatalf("%s still waits after 2 minutes", what)
		return nil
	}
}

// TestAWriteOnAServerCutOffAfterTheCommitEnds: a write through a follower
// that the leader commits without it, and never sends it, is answered done
// (it is committed) once the leader-wait has passed, and the follower's
// reads wait for it.
// Until 2026-12-08 Node.Apply waited for the follower's own apply with the
// caller's context alone: a health check's proposal, or a leave, could wait
// for ever.
func TestAWriteOnAServerCutOffAfterTheCommitEnds(t *testing.T) {
	tn, to := newCutOffNodes(t)
	l := tn.waitForLeader(30 * time.Second)
	f := tn.other(l)
	tn.waitCaughtUp(t, 30*time.Second, registerThrough(t, tn.nodes[l], "web-0", "web"))
	to.Store(tn.nodes[f].ClusterAddr())

	var idx uint64
	cmd := fsmtest.Register(t, "web-1", "web")
	err := within(t, "a write through a server cut off from the leader's entries", func() (err error) {
		idx, err = tn.nodes[f].Apply(context.Background(), cmd)
		return err
	})
	if err != nil {
		t.Fatalf("write through the cut-off server: %v", err)
	}
	// It is committed: the leader has it.
	eventually(t, 30*time.Second, func() bool { return tn.fsms[l].AppliedIndex() >= idx }, "the leader applying the write")
	if got := instanceIDs(tn.fsms[l], "web"); len(got) != 2 {
		t.Fatalf("leader's web instances %v, want web-0 and web-1", got)
	}
	if tn.fsms[f].AppliedIndex() >= idx {
		t.Fatalf("the cut-off server applied index %d: the test did not cut it off", idx)
	}
	if tn.fsms[f].Store().WaitAcked(context.Background(), 10*time.Millisecond) {
		t.Fatal("the cut-off server's reads do not wait for the write it answered")
	}
}

// TestALeaveOfAServerCutOffFromTheLeaderEnds: a follower that receives no
// entries from the leader still leaves: its departure is committed by the
// leader and the other server, and the leave does not wait for its own
// apply of it (it never comes). Before 2026-12-08 this leave never
// returned.
func TestALeaveOfAServerCutOffFromTheLeaderEnds(t *testing.T) {
	tn, to := newCutOffNodes(t)
	l := tn.waitForLeader(30 * time.Second)
	tn.waitRaftServers(t, 3)
	f := tn.other(l)
	name := tn.nodes[f].Name()
	to.Store(tn.nodes[f].ClusterAddr())

	if err := within(t, "the leave", func() error { return tn.nodes[f].Leave(context.Background()) }); err != nil {
		t.Fatalf("leave: %v", err)
	}
	// Whoever leads now (a leadership change is allowed) has it out of
	// the configuration, recorded as departed.
	eventually(t, 30*time.Second, func() bool {
		for i, n := range tn.nodes {
			if i == f || !n.IsLeader() {
				continue
			}
			s := n.raftServers()
			nd := tn.fsms[i].Store().Node(name)
			return !s[name] && len(s) == 2 && nd != nil && nd.Departed
		}
		return false
	}, "a leader without "+name+" in its configuration and with its departure in the catalog")
	if nd := tn.fsms[f].Store().Node(name); nd != nil && nd.Departed {
		t.Fatalf("the leaving server applied its own departure (%+v): the test did not cut it off", nd)
	}
}

// TestARestoreThroughAServerCutOffFromTheLeaderEnds: a restore sent through
// a follower the leader stops replicating to (entries and snapshots) is
// restored by the leader and the other server, and the follower answers it
// once it has waited restoreApplyWaits leader-waits for its own install
// (which never comes), not for ever.
func TestARestoreThroughAServerCutOffFromTheLeaderEnds(t *testing.T) {
	tn, to := newCutOffNodes(t)
	l := tn.waitForLeader(30 * time.Second)
	f := tn.other(l)
	idx := registerThrough(t, tn.nodes[l], "web-1", "web")
	archive := archiveOf(t, tn, l, idx)
	idx = registerThrough(t, tn.nodes[l], "api-1", "api")
	tn.waitCaughtUp(t, 30*time.Second, idx)
	to.Store(tn.nodes[f].ClusterAddr())

	var restored uint64
	if err := within(t, "a restore through a server cut off from the leader", func() (err error) {
		restored, err = tn.nodes[f].Restore(context.Background(), archive.Bytes())
		return err
	}); err != nil {
		t.Fatalf("restore through the cut-off server: %v", err)
	}
	eventually(t, 30*time.Second, func() bool {
		for i, n := range tn.nodes {
			if i != f && n.IsLeader() {
				return tn.fsms[i].AppliedIndex() >= restored && len(instanceIDs(tn.fsms[i], "api")) == 0 && len(instanceIDs(tn.fsms[i], "web")) == 1
			}
		}
		return false
	}, "a leader with the restored catalog (web-1, no api-1)")
	if tn.fsms[f].AppliedIndex() >= restored {
		t.Fatalf("the cut-off server applied the restore (index %d): the test did not cut it off", restored)
	}
	if got := tn.fsms[f].Store().WaitAcked(context.Background(), 10*time.Millisecond); got {
		t.Fatal("the cut-off server's reads do not wait for the restore it answered")
	}
}
