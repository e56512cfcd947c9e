package cluster

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// A restore whose outcome is unknown.
//
// raft.Restore applies the archive to the leader's FSM as a snapshot at
// index S (with the leader's term T), then waits for a no-op after it to
// commit. If the leader loses its leadership first, the restore may be
// committed (the followers installed the snapshot: the next leader holds
// (S, T) and the old leader follows it, snapgap.go) or not (no follower got
// it: the next leader's log has no (S, T), and the old leader holds a
// catalog the cluster never committed and cannot take back). Only the next
// leader can tell which.
//
// So the leader writes a mark (restoreMarkFile: S, then T once the restore
// applied) in its data dir before it restores, and removes it once the
// restore committed or failed before anything was applied. While a mark is
// left (after an unknown outcome, and across restarts), this server, once a
// second:
//
//   - leads in a term above T and has committed a barrier in it: its log,
//     with the restore, is the cluster's; the mark goes;
//   - follows a leader it hears: asks it (opTermAt, answered only once that
//     leader has committed in its own term) for its term at S: T: the
//     restore was committed, the mark goes; another term, or its log ends
//     before S: this server is diverged (Node.Diverged: /readyz and catalog
//     reads answer 503, the log says what to do) until its data is replaced;
//     compacted, a hole or an error: no answer yet.
//
// The transport's check of the leader's entries against the newest snapshot
// (snapGap.conflictsWithSnapshot) reports the same state on any server once
// the leader's log reaches S; the mark covers the time before, and the
// restoring leader after a restart. Nothing else is judged: a server that
// never held an uncommitted restore is never reported diverged.
const restoreMarkFile = "restore-outcome-unknown"

type restoreState struct {
	mu      sync.Mutex
	pending uint64 // S of the mark, 0 for none
	term    uint64 // T: the term of this server's snapshot at S, 0 until known
	// diverged is set while the leader's answer says the restore at
	// pending was never committed; msg says so for operators.
	diverged atomic.Bool
	msg      string
	// conflictAt is set while the leader's entries conflict with this
	// server's newest snapshot (snapGap.conflictsWithSnapshot): the
	// snapshot's index, cleared once a newer snapshot replaces it.
	conflictAt  atomic.Uint64
	conflictMsg string
}

func restoreMarkPath(dir string) string { return filepath.Join(dir, restoreMarkFile) }

// writeRestoreMark durably records a restore at idx (term 0: not applied
// yet, or not known).
func writeRestoreMark(dir string, idx, term uint64) error {
	tmp := restoreMarkPath(dir) + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, werr := fmt.Fprintf(f, "beacon restore v1 %d %d\n", idx, term)
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		_ = os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, restoreMarkPath(dir)); err != nil {
		return err
	}
	return syncDir(dir)
}

// readRestoreMark returns the mark's index (0 if there is none) and term
// (0 if not recorded).
func readRestoreMark(dir string) (idx, term uint64, err error) {
	b, err := os.ReadFile(restoreMarkPath(dir))
	if errors.Is(err, os.ErrNotExist) {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, err
	}
	f := strings.Fields(string(b))
	if len(f) != 5 || f[0] != "beacon" || f[1] != "restore" || f[2] != "v1" {
		return 0, 0, fmt.Errorf("cluster: %s: not a restore mark", restoreMarkPath(dir))
	}
	idx, err = strconv.ParseUint(f[3], 10, 64)
	if err != nil || idx == 0 {
		return 0, 0, fmt.Errorf("cluster: %s: bad index %q", restoreMarkPath(dir), f[3])
	}
	term, err = strconv.ParseUint(f[4], 10, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("cluster: %s: bad term %q", restoreMarkPath(dir), f[4])
	}
	return idx, term, nil
}

func removeRestoreMark(dir string) error {
	if err := os.Remove(restoreMarkPath(dir)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return syncDir(dir)
}

// Diverged reports whether this server applied a restore the cluster never
// committed: the API refuses catalog reads on it.
func (n *Node) Diverged() bool {
	return n.restore.diverged.Load() || n.restore.conflictAt.Load() != 0
}

// divergedReport is Diverged's reason, for ReplicationStalled.
func (n *Node) divergedReport() (bool, string) {
	n.restore.mu.Lock()
	defer n.restore.mu.Unlock()
	if n.restore.diverged.Load() {
		return true, n.restore.msg
	}
	if n.restore.conflictAt.Load() != 0 {
		return true, n.restore.conflictMsg
	}
	return false, ""
}

// divergeFromConflict reports this server diverged: the leader sent an
// entry at the index of its newest snapshot with another term
// (snapGap.conflictsWithSnapshot).
func (n *Node) divergeFromConflict(idx, mine, theirs uint64) {
	msg := fmt.Sprintf("replication diverged: the leader's entry at index %d has term %d, and this server's catalog holds a snapshot at that index of term %d that the cluster never committed (a restore whose leader lost its leadership): it refuses the leader's entries; stop it, move its data dir away and start it with an empty one (docs/operations.md)", idx, theirs, mine)
	n.restore.mu.Lock()
	n.restore.conflictMsg = msg
	n.restore.mu.Unlock()
	if n.restore.conflictAt.Swap(idx) != idx {
		n.metrics.diverged.Set(1)
		n.logger.Error(msg)
	}
}

// clearConflict ends a divergence divergeFromConflict reported once a newer
// snapshot (the leader's, installed) replaced the one that conflicted.
func (n *Node) clearConflict() {
	at := n.restore.conflictAt.Load()
	if at == 0 || n.trackedSnaps == nil {
		return
	}
	// A newer snapshot, or an applied index below the one that conflicted
	// (the leader's snapshot installed over it).
	idx, _ := n.trackedSnaps.latest()
	if (idx != at || n.raft.AppliedIndex() < at) && n.restore.conflictAt.CompareAndSwap(at, 0) {
		n.logger.Info("no longer diverged: a newer snapshot replaced the one that conflicted with the leader's log", "snapshot_index", idx)
		if !n.restore.diverged.Load() {
			n.metrics.diverged.Set(0)
		}
	}
}

// markRestore records a restore at idx before it runs (no-op in memory).
func (n *Node) markRestore(idx uint64) error {
	if n.cfg.InMemory {
		return nil
	}
	if err := writeRestoreMark(n.cfg.DataDir, idx, 0); err != nil {
		return fmt.Errorf("cluster: restore: record it in the data dir: %w", err)
	}
	n.restore.mu.Lock()
	n.restore.pending, n.restore.term = idx, 0
	n.restore.mu.Unlock()
	return nil
}

// keepRestore records, after a restore at idx whose outcome is unknown, the
// term of the snapshot it left here; without one, nothing was applied and
// the mark goes.
func (n *Node) keepRestore(idx uint64) {
	term, ok := n.snapshotTermAt(idx)
	if !ok {
		n.settleRestore("the restore left no snapshot here: it was never applied")
		return
	}
	n.restore.mu.Lock()
	defer n.restore.mu.Unlock()
	n.restore.term = term
	if n.cfg.InMemory {
		return
	}
	if err := writeRestoreMark(n.cfg.DataDir, idx, term); err != nil {
		n.logger.Error("could not record the restore's term in its mark; it is looked up again at the next start", "error", err)
	}
}

// settleRestore removes the mark: the restore's outcome is known, or this
// server's catalog is the cluster's (why says which, for the log).
func (n *Node) settleRestore(why string) {
	n.restore.mu.Lock()
	defer n.restore.mu.Unlock()
	if n.restore.pending == 0 {
		return
	}
	if !n.cfg.InMemory {
		if err := removeRestoreMark(n.cfg.DataDir); err != nil {
			n.logger.Error("could not remove the restore mark; it is checked again at the next start", "error", err)
		}
	}
	if n.restore.diverged.Load() {
		n.logger.Info("no longer diverged", "restore_index", n.restore.pending, "reason", why)
		n.metrics.diverged.Set(0)
	} else {
		n.logger.Info("restore outcome settled", "restore_index", n.restore.pending, "reason", why)
	}
	n.restore.pending = 0
	n.restore.diverged.Store(false)
	n.restore.msg = ""
}

// Answers of opTermAt.
const (
	termAtHas     = 1 // the leader's log or snapshot has the index, at the term that follows
	termAtAbsent  = 2 // the index is past the leader's last
	termAtUnknown = 3 // compacted away, a hole, or an error: cannot tell
)

// termAtLocal answers opTermAt on the leader.
func (n *Node) termAtLocal(p []byte) ([]byte, error) {
	// Only a leader that has committed in its own term answers: before
	// that its log is not yet the cluster's (it may be deposed with it).
	if n.raft.State() != raft.Leader || n.readyTerm.Load() != n.raft.CurrentTerm() {
		return nil, ErrNotLeader
	}
	idx, k := binary.Uvarint(p)
	if k <= 0 || idx == 0 {
		return nil, errors.New("cluster: term-at: bad index")
	}
	kind, term := byte(termAtUnknown), uint64(0)
	if t, ok := n.snapshotTermAt(idx); ok {
		kind, term = termAtHas, t
	} else {
		var l raft.Log
		switch err := n.logs.GetLog(idx, &l); {
		case err == nil:
			kind, term = termAtHas, l.Term
		case idx > n.raft.LastIndex():
			kind = termAtAbsent
		}
		// Otherwise compacted, a hole (a snapshot installed here), or an
		// error: cannot tell.
	}
	return binary.AppendUvarint([]byte{kind}, term), nil
}

// snapshotTermAt returns the term of a snapshot this server holds at idx.
func (n *Node) snapshotTermAt(idx uint64) (uint64, bool) {
	if n.snaps == nil {
		return 0, false
	}
	metas, err := n.snaps.List()
	if err != nil {
		return 0, false
	}
	for _, m := range metas {
		if m.Index == idx {
			return m.Term, true
		}
	}
	return 0, false
}

// checkRestore settles or judges a restore mark (restoreMarkFile): called
// once a tick by the stall loop, with leader the address of the leader this
// server follows and hears ("" if none), or leads set.
func (n *Node) checkRestore(ctx context.Context, leads bool, leader string, timeout time.Duration) {
	// Not while a restore runs here: its mark is written before it is
	// applied, and this server leads while it runs.
	if !n.restoreMu.TryLock() {
		return
	}
	defer n.restoreMu.Unlock()
	n.restore.mu.Lock()
	s, mine := n.restore.pending, n.restore.term
	n.restore.mu.Unlock()
	if s == 0 {
		return
	}
	if mine == 0 {
		// Not known yet (a mark left by a process that stopped during
		// the restore): the restore's snapshot, or nothing was applied.
		n.keepRestore(s)
		return
	}
	if leads {
		// Leading in a later term, and ready (a barrier committed in it):
		// this server's log, with the restore, is the cluster's. In the
		// restore's own term, or before the barrier, it is still open.
		if t := n.raft.CurrentTerm(); t > mine && n.readyTerm.Load() == t {
			n.settleRestore("this server leads in a later term and committed in it: the restore is the cluster's")
		}
		return
	}
	if leader == "" {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	resp, err := n.pool.call(cctx, leader, opTermAt, binary.AppendUvarint(nil, s), timeout)
	cancel()
	if err != nil || len(resp) < 2 {
		return // asked again next tick (a leader not ready yet, or an older one without the op)
	}
	term, k := binary.Uvarint(resp[1:])
	if k <= 0 {
		return
	}
	switch resp[0] {
	case termAtHas:
		if term == mine {
			n.settleRestore("the leader holds the restore: it was committed")
			return
		}
		n.diverge(s, mine, fmt.Sprintf("the leader's entry at that index has term %d", term))
	case termAtAbsent:
		n.diverge(s, mine, "the leader's log ends before that index")
	}
}

// diverge reports this server diverged (restoreState).
func (n *Node) diverge(idx, term uint64, why string) {
	msg := fmt.Sprintf("replication diverged: this server applied a restore at index %d (term %d) that the cluster never committed (%s): its catalog is not the cluster's and it cannot follow the leader; stop it, move its data dir away and start it with an empty one (docs/operations.md)", idx, term, why)
	n.restore.mu.Lock()
	n.restore.msg = msg
	n.restore.mu.Unlock()
	if !n.restore.diverged.Swap(true) {
		n.metrics.diverged.Set(1)
		n.logger.Error(msg)
	}
}
