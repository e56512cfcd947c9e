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
// So the leader writes a mark (restoreMarkFile: S) in its data dir before it
// restores, and removes it once the restore committed or failed before
// anything was applied. While a mark is left (after an unknown outcome, and
// across restarts), this server asks the leader, once a second while it
// follows one, for its term at S (opTermAt):
//
//   - this server has applied past S, or below it (it followed the leader
//     past S, or installed a leader's snapshot over it), or it leads: its
//     catalog is the cluster's; the mark goes;
//   - the leader holds (S, T), the term of this server's snapshot at S: the
//     restore was committed; the mark goes;
//   - the leader holds another term at S, or nothing at S: the restore was
//     never committed; this server is diverged (Node.Diverged: /readyz and
//     catalog reads answer 503, the log says what to do) until its data is
//     replaced (or a leader's snapshot is installed over it);
//   - the leader compacted S away: no answer yet (the server cannot follow
//     from S anyway, and the leader will send it a snapshot).
//
// No other state is judged: a server that never restored is never reported
// diverged.
const restoreMarkFile = "restore-outcome-unknown"

type restoreState struct {
	mu      sync.Mutex
	pending uint64 // S of the mark, 0 for none
	// diverged is set while the leader's answer says the restore at
	// pending was never committed; msg says so for operators.
	diverged atomic.Bool
	msg      string
}

func restoreMarkPath(dir string) string { return filepath.Join(dir, restoreMarkFile) }

// writeRestoreMark durably records that a restore at idx is about to run.
func writeRestoreMark(dir string, idx uint64) error {
	tmp := restoreMarkPath(dir) + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, werr := fmt.Fprintf(f, "beacon restore v1 %d\n", idx)
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

// readRestoreMark returns the mark's index (0 if there is none).
func readRestoreMark(dir string) (uint64, error) {
	b, err := os.ReadFile(restoreMarkPath(dir))
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(b))
	if len(f) != 4 || f[0] != "beacon" || f[1] != "restore" || f[2] != "v1" {
		return 0, fmt.Errorf("cluster: %s: not a restore mark", restoreMarkPath(dir))
	}
	idx, err := strconv.ParseUint(f[3], 10, 64)
	if err != nil || idx == 0 {
		return 0, fmt.Errorf("cluster: %s: bad index %q", restoreMarkPath(dir), f[3])
	}
	return idx, nil
}

func removeRestoreMark(dir string) error {
	if err := os.Remove(restoreMarkPath(dir)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return syncDir(dir)
}

// Diverged reports whether this server applied a restore the cluster never
// committed: the API refuses catalog reads on it.
func (n *Node) Diverged() bool { return n.restore.diverged.Load() }

// divergedReport is Diverged's reason, for ReplicationStalled.
func (n *Node) divergedReport() (bool, string) {
	if !n.restore.diverged.Load() {
		return false, ""
	}
	n.restore.mu.Lock()
	defer n.restore.mu.Unlock()
	return true, n.restore.msg
}

// markRestore records a restore at idx before it runs (no-op in memory).
func (n *Node) markRestore(idx uint64) error {
	if n.cfg.InMemory {
		return nil
	}
	if err := writeRestoreMark(n.cfg.DataDir, idx); err != nil {
		return fmt.Errorf("cluster: restore: record it in the data dir: %w", err)
	}
	n.restore.mu.Lock()
	n.restore.pending = idx
	n.restore.mu.Unlock()
	return nil
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
	termAtHas       = 1 // the leader's log or snapshot has the index, at the term that follows
	termAtAbsent    = 2 // the leader has nothing at the index
	termAtCompacted = 3 // below the leader's log and not its snapshot's index: cannot tell
)

// termAtLocal answers opTermAt on the leader.
func (n *Node) termAtLocal(p []byte) ([]byte, error) {
	if n.raft.State() != raft.Leader {
		return nil, ErrNotLeader
	}
	idx, k := binary.Uvarint(p)
	if k <= 0 || idx == 0 {
		return nil, errors.New("cluster: term-at: bad index")
	}
	kind, term := byte(termAtAbsent), uint64(0)
	if t, ok := n.snapshotTermAt(idx); ok {
		kind, term = termAtHas, t
	} else {
		var l raft.Log
		switch err := n.logs.GetLog(idx, &l); {
		case err == nil:
			kind, term = termAtHas, l.Term
		case idx > n.raft.LastIndex():
			kind = termAtAbsent
		default:
			if first, ferr := n.logs.FirstIndex(); ferr == nil && idx < first {
				kind = termAtCompacted
			}
		}
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
	n.restore.mu.Lock()
	s := n.restore.pending
	n.restore.mu.Unlock()
	if s == 0 {
		return
	}
	// Not while a restore runs here: its mark is written before it is
	// applied, and this server leads while it runs.
	if !n.restoreMu.TryLock() {
		return
	}
	defer n.restoreMu.Unlock()
	mine, ok := n.snapshotTermAt(s)
	if leads {
		// A leadership won after the restore's: this server's log is the
		// cluster's. (In the restore's own term the outcome is still open.)
		if !ok || n.raft.CurrentTerm() > mine {
			n.settleRestore("this server leads: its catalog is the cluster's")
		}
		return
	}
	if applied := n.raft.AppliedIndex(); applied != s {
		n.settleRestore(fmt.Sprintf("applied index %d: it followed the leader past the restore's index, or installed the leader's snapshot", applied))
		return
	}
	if leader == "" || n.restore.diverged.Load() {
		return
	}
	if !ok {
		n.settleRestore("no snapshot at the restore's index here: the restore never reached this catalog")
		return
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	resp, err := n.pool.call(cctx, leader, opTermAt, binary.AppendUvarint(nil, s), timeout)
	cancel()
	if err != nil || len(resp) < 2 {
		return // asked again next tick (an older leader does not know the op)
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
		n.diverge(s, mine, "the leader holds nothing at that index")
	}
}

// diverge reports this server diverged (restoreState).
func (n *Node) diverge(idx, term uint64, why string) {
	msg := fmt.Sprintf("replication diverged: this server applied a restore at index %d (term %d) that the cluster never committed (%s): its catalog is not the cluster's and it cannot follow the leader; stop it, move its data dir away and start it with an empty one (docs/operations.md)", idx, term, why)
	n.restore.mu.Lock()
	n.restore.msg = msg
	n.restore.mu.Unlock()
	n.restore.diverged.Store(true)
	n.metrics.diverged.Set(1)
	n.logger.Error(msg)
}
