package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/beaconhq/beacon/fsm"
	"github.com/hashicorp/raft"
)

// Operator actions that must run on the leader: a cluster-wide snapshot
// restore and the forced leave of a failed member.

const (
	opRestore    Op = 5
	opForceLeave Op = 6
)

// restoreIndexGap is how far past the leader's last log index a restore is
// placed. Raft puts a user restore at max(its last index, the snapshot's
// index)+1; asking for last+gap makes that exactly the index written in the
// restored stream's header (so every node's catalog reports the Raft index
// of the restore), unless more than gap entries are appended between the
// two reads, which would take a write rate far above what we measured.
const restoreIndexGap = 1024

// restoreTimeout bounds the waits to hand the restore and the no-op that
// follows it to Raft (not the restore itself).
const restoreTimeout = time.Minute

// Restore replaces the catalog of the whole cluster with the content of a
// snapshot archive (see fsm.ReadArchive): the leader checks it again, turns
// it into a Raft snapshot stream and restores it through Raft, which installs
// it on every follower as it would any snapshot. It returns the index the
// catalog has after the restore, once this node has applied it or after
// restoreApplyWaits leader-waits (a read on this node sees the restored
// catalog either way: it waits for it, or answers 503). Writes in flight on the leader
// when the restore happens fail with ErrUnknownOutcome.
func (n *Node) Restore(ctx context.Context, archive []byte) (uint64, error) {
	resp, err := n.CallLeader(ctx, opRestore, archive)
	if err != nil {
		return 0, err
	}
	idx, err := parseIndex(resp)
	if err != nil {
		return 0, fmt.Errorf("cluster: restore: %w from the leader", err)
	}
	// Committed: reads on this node wait for it (NoteAcked). The answer
	// waits for this node's own install of the restore at most
	// restoreApplyWaits leader-waits: a server cut off from the leader
	// right after the restore answers it done, which it is, and its reads
	// answer 503 not_caught_up until it has the restore.
	n.fsm.Store().NoteAcked(idx)
	wctx, cancel := context.WithTimeout(ctx, restoreApplyWaits*n.cfg.LeaderWait)
	defer cancel()
	if err := n.fsm.WaitForIndex(wctx, idx); err != nil && ctx.Err() != nil {
		return idx, err
	}
	return idx, nil
}

// restoreApplyWaits is how many leader-waits a restore sent through a
// follower waits for that follower to install it (a snapshot of the whole
// catalog) before it is answered.
const restoreApplyWaits = 10

// restoreLocal runs a restore on the leader.
func (n *Node) restoreLocal(ctx context.Context, archive []byte) ([]byte, error) {
	if !n.IsLeader() {
		return nil, ErrNotLeader
	}
	ar, err := fsm.ReadArchive(bytes.NewReader(archive), 0)
	if err != nil {
		// The API checked the archive already; this one was damaged on the way.
		return nil, &fsm.RejectError{Kind: fsm.ErrBadSnapshot, Msg: err.Error()}
	}
	n.restoreMu.Lock()
	defer n.restoreMu.Unlock()
	target := n.raft.LastIndex() + restoreIndexGap
	var stream bytes.Buffer
	if err := ar.WriteSnapshot(&stream, target); err != nil {
		return nil, fmt.Errorf("cluster: restore: %w", err)
	}
	meta := &raft.SnapshotMeta{Version: raft.SnapshotVersionMax, Index: target - 1, Size: int64(stream.Len())}
	// Recorded first, so that a restore whose outcome this server never
	// learns (leadership lost, a crash) is judged against the next leader's
	// log, here or after a restart (restoremark.go).
	if err := n.markRestore(target); err != nil {
		return nil, err
	}
	if err := n.raft.Restore(meta, &stream, restoreTimeout); err != nil {
		// Unknown: the leadership was lost or Raft stopped, or anything
		// failed once the restore was applied here (raft.Restore then
		// waits for a no-op: ErrNotLeader or a timeout can come after).
		if _, applied := n.snapshotTermAt(target); applied || errors.Is(err, raft.ErrLeadershipLost) || errors.Is(err, raft.ErrRaftShutdown) {
			n.keepRestore(target)
			return nil, fmt.Errorf("%w: restore: %v", ErrUnknownOutcome, err)
		}
		n.settleRestore("the restore failed before this server applied it")
		if errors.Is(err, raft.ErrNotLeader) {
			return nil, ErrNotLeader
		}
		return nil, fmt.Errorf("cluster: restore: %w", err)
	}
	// raft.Restore returns once a no-op after the restore committed.
	n.settleRestore("committed")
	counts, _ := ar.Counts()
	n.logger.Info("restored snapshot", "index", target, "archive_index", ar.Info.Index,
		"archive_node", ar.Info.Node, "services", counts.Services, "instances", counts.Instances)
	n.auditEvent(ctx, "snapshot-restore", target, "archive_index", ar.Info.Index, "archive_node", ar.Info.Node,
		"services", counts.Services, "instances", counts.Instances)
	// Leader tasks hold state derived from the old catalog (timers, owners):
	// start them again from the restored one, and reconcile the catalog's
	// nodes table with gossip at once.
	n.restartLeaderLoop()
	return appendIndex(nil, target), nil
}

// restartLeaderLoop asks monitorLeadership to stop and start the leader loop.
func (n *Node) restartLeaderLoop() {
	select {
	case n.restartCh <- struct{}{}:
	default:
	}
}

// ForceLeave marks a failed member as left and removes it from the Raft
// configuration, through the leader. It is for a member that is gone for
// good without having left gracefully: the leader records it as left in its
// gossip view (and so in the catalog's nodes table), stops rejoining its
// address, tells every alive member to do the same, and removes it from
// Raft. A member that is alive is refused (ErrConflict: run leave on it); a
// name neither gossip nor Raft knows is ErrNotFound. A force-left member
// that comes back is alive again and is re-added like any returning server.
func (n *Node) ForceLeave(ctx context.Context, name string) error {
	_, err := n.CallLeader(ctx, opForceLeave, []byte(name))
	return err
}

func (n *Node) forceLeaveLocal(ctx context.Context, name string) ([]byte, error) {
	if !n.IsLeader() {
		return nil, ErrNotLeader
	}
	m, known := n.gossip.member(name)
	inRaft := false
	if f := n.raft.GetConfiguration(); f.Error() == nil {
		for _, s := range f.Configuration().Servers {
			inRaft = inRaft || string(s.ID) == name
		}
	}
	switch {
	case !known && !inRaft:
		return nil, &fsm.RejectError{Kind: fsm.ErrNotFound, Msg: fmt.Sprintf("cluster: no member named %q", name)}
	case known && m.Status == fsm.NodeAlive:
		return nil, &fsm.RejectError{Kind: fsm.ErrConflict,
			Msg: fmt.Sprintf("cluster: member %q is alive; force-leave is for failed members (make it leave with `beacon leave`)", name)}
	}
	if known {
		n.gossip.forceLeft(name)
		n.gossip.announceForceLeave(name)
	}
	var index uint64
	if inRaft {
		f := n.raft.RemoveServer(raft.ServerID(name), 0, 0)
		if err := n.await(f); err != nil {
			if errors.Is(err, raft.ErrNotLeader) {
				return nil, ErrNotLeader
			}
			return nil, fmt.Errorf("cluster: force-leave %q: remove from raft: %w", name, err)
		}
		index = f.Index()
		n.logger.Info("removed server from raft", "node", name, "reason", "force-leave")
	}
	n.logger.Info("forced member to leave", "node", name, "was", string(m.Status))
	n.auditEvent(ctx, "force-leave", index, "node", name, "was", string(m.Status))
	return nil, nil
}
