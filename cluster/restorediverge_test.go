package cluster

import (
	"context"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/beaconhq/beacon/fsm/fsmtest"
)

// TestAnOldLeaderWithAnUncommittedEntryBeforeItsRestoreIsReportedDiverged:
// as TestARestoreNoFollowerReceivedLeavesItsLeaderReportedDiverged, except
// that the old leader also holds one uncommitted write appended just before
// its restore (a write in flight when the restore runs: Raft aborts its future
// but the entry stays in the log). The new leader's entry at that index
// conflicts, Raft deletes the old leader's suffix (including the entries
// after the restore's hole) and stores the new leader's entries; the old
// leader's lastLog is then below its snapshot's index S, so it keeps
// accepting entries and, once they pass S, applies the new leader's entries
// after S on top of the restored catalog it alone holds. Its applied index
// moves past S, checkRestore settles the mark, and Diverged() is false while
// its catalog is not the cluster's.
//
// Found by a review of the first restore-mark version, which let this pass
// silently (the text above says how). Now the leader's entries that conflict
// with the snapshot are refused (snapGap.conflictsWithSnapshot) and the
// server reports itself diverged (its restore mark, or the refusal).
func TestAnOldLeaderWithAnUncommittedEntryBeforeItsRestoreIsReportedDiverged(t *testing.T) {
	review2OldLeader(t, true, 0)
}

// TestAnOldLeaderThatAppliesItsOwnUncommittedSuffixIsReportedDiverged: no in-flight write.
// The new leader walks its nextIndex for the old leader down through the
// restore's hole; each AppendEntries whose entries reach the hole is refused
// (without NoRetryBackoff, so with Raft's growing backoff), and the first one
// whose entries all lie below the hole succeeds. hashicorp/raft then sets
// the commit index to min(leader's commit, its own last index) and applies
// the old leader's own uncommitted entries after S (its no-op): applied
// moves past S and the mark is settled. MaxAppendEntries 2 makes that take
// milliseconds; with the default 256 it takes ~256 backoffs (~40 min) unless
// the leader compacts past the hole first.
//
// Found by a review of the first restore-mark version, which let this pass
// silently (the text above says how). Now the leader's entries that conflict
// with the snapshot are refused (snapGap.conflictsWithSnapshot) and the
// server reports itself diverged (its restore mark, or the refusal).
func TestAnOldLeaderThatAppliesItsOwnUncommittedSuffixIsReportedDiverged(t *testing.T) {
	review2OldLeader(t, false, 2)
}

func review2OldLeader(t *testing.T, inflight bool, maxAppend int) {
	var hold atomic.Bool
	tn := newTestNodes(t, 3, func(i int, c *Config) {
		if maxAppend > 0 {
			c.MaxAppendEntries = maxAppend
		}
		c.sendFilterForTest = holdBack(&hold, true)
	})
	old := tn.waitForLeader(30 * time.Second)
	ln := tn.nodes[old]
	apply := func(n *Node, id, service string) uint64 { t.Helper(); return registerThrough(t, n, id, service) }
	idx := apply(ln, "web-1", "web")
	archive := archiveOf(t, tn, old, idx)
	idx = apply(ln, "api-1", "api")
	tn.waitCaughtUp(t, 30*time.Second, idx)

	hold.Store(true)
	// A write in flight when the restore runs: appended on the leader only.
	last := ln.LastIndex()
	if inflight {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			_, err := ln.Apply(ctx, fsmtest.Register(t, "db-1", "db"))
			t.Logf("in-flight write: %v", err)
		}()
		eventually(t, 10*time.Second, func() bool { return ln.LastIndex() > last }, "the in-flight write appended on the leader")
	}

	restored, restoreIdx := restoreInBackground(t, ln, archive.Bytes())
	resume := tn.pause(old)
	hold.Store(false)
	leader := tn.waitForLeader(30 * time.Second)
	wantRestoreFailed(t, restored)
	if idx, _, err := readRestoreMark(ln.cfg.DataDir); idx != restoreIdx || err != nil {
		t.Fatalf("restore mark on the old leader: %d, %v; want %d", idx, err, restoreIdx)
	}
	nl := tn.nodes[leader]
	for nl.raft.CommitIndex() <= restoreIdx+5 {
		if err := nl.raft.Barrier(10 * time.Second).Error(); err != nil {
			t.Fatal(err)
		}
	}
	after := apply(nl, "api-2", "api")
	resume()

	// Correct outcomes: the old leader reports itself diverged, or its
	// catalog becomes the leader's. Wait for one of them to hold while the
	// old leader has applied the leader's write.
	var sawDiverged bool
	deadline := time.Now().Add(45 * time.Second)
	for time.Now().Before(deadline) {
		sawDiverged = sawDiverged || ln.Diverged()
		if ln.Diverged() || ln.raft.AppliedIndex() >= after {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(2 * time.Second) // a few stall-loop ticks
	mark, _, _ := readRestoreMark(ln.cfg.DataDir)
	oldAPI, newAPI := instanceIDs(tn.fsms[old], "api"), instanceIDs(tn.fsms[leader], "api")
	oldWeb, newWeb := instanceIDs(tn.fsms[old], "web"), instanceIDs(tn.fsms[leader], "web")
	t.Logf("old leader: applied %d (restore %d, leader's write %d), diverged %v (seen diverged: %v), mark %d; api old %v new %v; web old %v new %v",
		ln.raft.AppliedIndex(), restoreIdx, after, ln.Diverged(), sawDiverged, mark, oldAPI, newAPI, oldWeb, newWeb)
	if !ln.Diverged() && (!slices.Equal(oldAPI, newAPI) || !slices.Equal(oldWeb, newWeb)) {
		t.Fatalf("%s serves a catalog that is not the cluster's (api %v, the leader's %v) and does not report itself diverged (mark %d)",
			ln.Name(), oldAPI, newAPI, mark)
	}
}

// TestAFollowerThatInstalledAnUncommittedRestoreIsReportedDiverged: five
// voters. The leader restores; one follower (a minority) installs the
// restore's snapshot, nothing after it reaches anyone, and the leader loses
// its leadership. The other three elect a leader without the restore (the
// restore was never committed) and move past its index. The follower that
// installed the snapshot holds (S, T) as a snapshot and its log ends below S,
// so Raft accepts the new leader's entries after its last log entry, never
// applies those at or below S, and applies those after S on top of the
// restored catalog. It never restored, so it has no mark: nothing reports it.
//
// Found by a review of the first restore-mark version, which let this pass
// silently (the text above says how). Now the leader's entries that conflict
// with the snapshot are refused (snapGap.conflictsWithSnapshot) and the
// server reports itself diverged (its restore mark, or the refusal).
func TestAFollowerThatInstalledAnUncommittedRestoreIsReportedDiverged(t *testing.T) {
	var hold atomic.Bool
	var snapTo atomic.Value // raft.ServerAddress allowed to receive snapshots while held
	snapTo.Store(raft.ServerAddress(""))
	tn := newTestNodes(t, 5, func(i int, c *Config) {
		c.sendFilterForTest = func(target raft.ServerAddress, req any) error {
			if !hold.Load() {
				return nil
			}
			// Snapshots go to snapTo alone.
			return holdBackRequest(req, target != snapTo.Load().(raft.ServerAddress))
		}
	})
	old := tn.waitForLeader(30 * time.Second)
	ln := tn.nodes[old]
	m := (old + 1) % len(tn.nodes)
	mn := tn.nodes[m]
	apply := func(n *Node, id, service string) uint64 { t.Helper(); return registerThrough(t, n, id, service) }
	idx := apply(ln, "web-1", "web")
	archive := archiveOf(t, tn, old, idx)
	idx = apply(ln, "api-1", "api")
	tn.waitCaughtUp(t, 30*time.Second, idx)

	snapTo.Store(raft.ServerAddress(mn.ClusterAddr()))
	hold.Store(true)
	restored, restoreIdx := restoreInBackground(t, ln, archive.Bytes())
	eventually(t, 30*time.Second, func() bool { return mn.raft.AppliedIndex() == restoreIdx }, mn.Name()+" installing the restore's snapshot")
	resumeOld := tn.pause(old)
	resumeM := tn.pause(m)
	hold.Store(false)
	leader := tn.waitForLeader(30 * time.Second)
	<-restored
	nl := tn.nodes[leader]
	for nl.raft.CommitIndex() <= restoreIdx+5 {
		if err := nl.raft.Barrier(10 * time.Second).Error(); err != nil {
			t.Fatal(err)
		}
	}
	after := apply(nl, "api-2", "api")
	resumeM()
	defer resumeOld()

	eventually(t, 45*time.Second, func() bool { return mn.Diverged() || mn.raft.AppliedIndex() >= after }, mn.Name()+" applying the new leader's write or reporting itself diverged")
	time.Sleep(2 * time.Second)
	mAPI, lAPI := instanceIDs(tn.fsms[m], "api"), instanceIDs(tn.fsms[leader], "api")
	t.Logf("%s: applied %d (restore %d, write %d), diverged %v; api %v, leader %s's %v", mn.Name(), mn.raft.AppliedIndex(), restoreIdx, after, mn.Diverged(), mAPI, nl.Name(), lAPI)
	if !mn.Diverged() {
		t.Fatalf("%s installed a restore the cluster never committed and is not reported diverged (api %v, the leader's %v)", mn.Name(), mAPI, lAPI)
	}
	if !mn.Diverged() && !slices.Equal(mAPI, lAPI) {
		t.Fatalf("%s serves a catalog that is not the cluster's (api %v, the leader's %v) and is not reported diverged", mn.Name(), mAPI, lAPI)
	}
}
