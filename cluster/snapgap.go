package cluster

import (
	"bytes"
	"errors"
	"io"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// The snapshot gap: a follower whose log has no entry at the index of the
// snapshot it holds, and entries after it.
//
// hashicorp/raft (1.8.0) checks an AppendEntries' previous entry against
// the follower's last entry, and otherwise against the log store. After a
// snapshot is installed, or after an operator's restore (which leaves a
// hole in the log at the restore's index on purpose), the follower's log
// has no entry at the snapshot's index S. Raft's in-memory last index
// covers that as long as nothing follows S: it is then the snapshot's
// index, which matches a leader's "previous entry S". But a server whose
// log holds entries after S that the new leader does not have (the entries
// a leader appended after a restore and lost its leadership before they
// were replicated; or a follower's uncommitted suffix when it receives a
// snapshot) has an in-memory last index above S. The new leader's
// AppendEntries with previous entry S then looks S up in the log store,
// finds nothing, and is refused; the leader backs off, sends the snapshot
// at S again, which installs without touching the in-memory index or the
// suffix, and the next AppendEntries is refused the same way. The server
// never catches up, restarting it does not help (the suffix is in the
// store), and it recovers only once the leader takes a newer snapshot
// (seen after a restore during which the leader lost its leadership:
// hundreds of snapshot installs in minutes).
//
// The fix answers that one look-up as Raft itself would answer it with an
// empty log: the snapshot's last entry is (S, its term). When an
// AppendEntries arrives whose previous entry is (S, T), S is the index of
// the newest snapshot this server holds, T that snapshot's term, the log
// store has no entry S, and Raft's last index is above S, the log store
// answers a look-up of S, while Raft handles that one RPC, with a
// synthesized no-op entry (S, T). The previous entries then match (the
// leader's log at S and this server's snapshot end at the same entry, so
// by Raft's log matching everything up to S is the same), and Raft goes on
// to the entries after S: the conflicting suffix is deleted and the
// leader's entries stored, as for any follower with a conflicting suffix.
// The term check is what keeps it safe: a leader whose entry S has another
// term gets no synthesized entry and goes on sending snapshots (that
// server's restored state was never committed, and only a snapshot
// replaces it).
//
// The synthesized entry never leaves the server and is never stored or
// applied: it is only readable while that RPC is processed (it is at S,
// which the snapshot covers, so the FSM never asks for it), and the
// transport refuses to send any AppendEntries that carries it (a
// replication goroutine of a leadership this server just lost could read
// it while the RPC is processed).
type snapGap struct {
	logs   raft.LogStore // the store below; never answers with the synthesized entry
	snaps  raft.SnapshotStore
	raft   atomic.Pointer[raft.Raft]
	armed  atomic.Pointer[raft.Log]
	logger hclog.Logger

	bridged atomic.Uint64 // look-ups the synthesized entry answered (tests)

	// tracked, if set, knows the newest snapshot; onConflict is told of an
	// AppendEntries refused by conflictsWithSnapshot.
	tracked    *trackedSnaps
	onConflict func(index, mine, theirs uint64)
}

// snapGapMarker marks a synthesized entry in its Extensions.
var snapGapMarker = []byte("beacon: synthesized at a snapshot's index; never sent")

func newSnapGap(logs raft.LogStore, snaps raft.SnapshotStore, logger hclog.Logger) *snapGap {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	return &snapGap{logs: logs, snaps: snaps, logger: logger}
}

// isSynthesized reports whether l is the snapshot gap's entry.
func isSynthesized(l *raft.Log) bool {
	return l != nil && bytes.Equal(l.Extensions, snapGapMarker)
}

// arm checks an AppendEntries request before Raft sees it and, if it is the
// case the type comment describes, returns the entry to answer with.
func (g *snapGap) arm(req *raft.AppendEntriesRequest) *raft.Log {
	r := g.raft.Load()
	if r == nil || req.PrevLogEntry == 0 || req.Term < r.CurrentTerm() || r.LastIndex() <= req.PrevLogEntry ||
		r.AppliedIndex() < req.PrevLogEntry {
		// Raft refuses a stale leader before it looks at the log, and
		// matches the previous entry against its last entry (or has no
		// entry there at all): nothing to answer. And the snapshot must be
		// in the FSM (a snapshot file whose restore failed is not), so that
		// nothing ever applies the synthesized entry.
		return nil
	}
	var l raft.Log
	if err := g.logs.GetLog(req.PrevLogEntry, &l); !errors.Is(err, raft.ErrLogNotFound) {
		return nil // the store has it (or cannot tell): Raft reads it there
	}
	metas, err := g.snaps.List()
	if err != nil || len(metas) == 0 {
		return nil
	}
	newest := metas[0]
	if newest.Index != req.PrevLogEntry || newest.Term != req.PrevLogTerm {
		return nil
	}
	return &raft.Log{Index: newest.Index, Term: newest.Term, Type: raft.LogNoop, Extensions: snapGapMarker}
}

// store is the log store Raft sees: the store below, and the synthesized
// entry while it is armed.
type snapGapStore struct {
	raft.LogStore
	g *snapGap
}

func (s snapGapStore) GetLog(idx uint64, l *raft.Log) error {
	err := s.LogStore.GetLog(idx, l)
	if err != nil && errors.Is(err, raft.ErrLogNotFound) {
		if e := s.g.armed.Load(); e != nil && e.Index == idx {
			*l = *e
			s.g.bridged.Add(1)
			return nil
		}
	}
	return err
}

// IsMonotonic passes through the store's raft.MonotonicLogStore answer.
func (s snapGapStore) IsMonotonic() bool {
	if m, ok := s.LogStore.(raft.MonotonicLogStore); ok {
		return m.IsMonotonic()
	}
	return false
}

// errSynthesizedEntry refuses to send the synthesized entry.
var errSynthesizedEntry = errors.New("cluster: refusing to send an entry synthesized for a snapshot's index")

// gapTransport is the transport Raft sees: the network transport, with the
// RPCs it receives checked for the snapshot gap (Consumer) and the
// synthesized entry kept from the wire (AppendEntries).
type gapTransport struct {
	*raft.NetworkTransport
	g      *snapGap
	in     <-chan raft.RPC
	out    chan raft.RPC
	stop   chan struct{}
	done   chan struct{}
	closed sync.Once
	// sendFilter, when set (tests), may refuse an AppendEntries or an
	// InstallSnapshot.
	sendFilter func(target raft.ServerAddress, req any) error
}

func newGapTransport(t *raft.NetworkTransport, g *snapGap, sendFilter func(raft.ServerAddress, any) error) *gapTransport {
	gt := &gapTransport{
		NetworkTransport: t,
		g:                g,
		in:               t.Consumer(),
		out:              make(chan raft.RPC),
		stop:             make(chan struct{}),
		done:             make(chan struct{}),
		sendFilter:       sendFilter,
	}
	go gt.forward()
	return gt
}

// Consumer is where Raft reads the RPCs this server receives.
func (t *gapTransport) Consumer() <-chan raft.RPC { return t.out }

// forward hands the received RPCs to Raft in order. An AppendEntries that
// needs the synthesized entry is handed over with it armed, and the next
// RPC waits until Raft has answered that one (Raft handles RPCs one at a
// time anyway).
func (t *gapTransport) forward() {
	defer close(t.done)
	for {
		var rpc raft.RPC
		select {
		case rpc = <-t.in:
		case <-t.stop:
			return
		}
		var entry *raft.Log
		if req, ok := rpc.Command.(*raft.AppendEntriesRequest); ok {
			if s, mine, theirs, bad := t.g.conflictsWithSnapshot(req); bad {
				// Refused before Raft sees it; the leader backs off and
				// tries lower, and sends its snapshot once it lacks the
				// entries (which replaces this catalog).
				if t.g.onConflict != nil {
					t.g.onConflict(s, mine, theirs)
				}
				var cur, last uint64
				if r := t.g.raft.Load(); r != nil {
					cur, last = r.CurrentTerm(), r.LastIndex()
				}
				rpc.Respond(&raft.AppendEntriesResponse{
					RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax},
					Term:      cur, LastLog: last, Success: false,
				}, nil)
				continue
			}
			entry = t.g.arm(req)
		}
		if entry == nil {
			select {
			case t.out <- rpc:
			case <-t.stop:
				rpc.Respond(nil, raft.ErrTransportShutdown)
				return
			}
			continue
		}
		orig := rpc.RespChan
		resp := make(chan raft.RPCResponse, 1)
		rpc.RespChan = resp
		used := t.g.bridged.Load()
		t.g.armed.Store(entry)
		select {
		case t.out <- rpc:
		case <-t.stop:
			t.g.armed.Store(nil)
			orig <- raft.RPCResponse{Error: raft.ErrTransportShutdown}
			return
		}
		var r raft.RPCResponse
		select {
		case r = <-resp:
		case <-t.stop:
			t.g.armed.Store(nil)
			orig <- raft.RPCResponse{Error: raft.ErrTransportShutdown}
			return
		}
		t.g.armed.Store(nil)
		if t.g.bridged.Load() != used {
			ok := false
			if ar, isAR := r.Response.(*raft.AppendEntriesResponse); isAR && ar != nil {
				ok = ar.Success
			}
			t.g.logger.Warn("matched the leader's previous entry against this server's snapshot: its log had no entry at the snapshot's index and entries after it",
				"index", entry.Index, "term", entry.Term, "accepted", ok)
		}
		orig <- r
	}
}

// AppendEntries sends an AppendEntries, unless it carries the synthesized
// entry.
func (t *gapTransport) AppendEntries(id raft.ServerID, target raft.ServerAddress, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	for _, e := range args.Entries {
		if isSynthesized(e) {
			return errSynthesizedEntry
		}
	}
	if t.sendFilter != nil {
		if err := t.sendFilter(target, args); err != nil {
			return err
		}
	}
	return t.NetworkTransport.AppendEntries(id, target, args, resp)
}

// InstallSnapshot sends a snapshot (tests may hold it back).
func (t *gapTransport) InstallSnapshot(id raft.ServerID, target raft.ServerAddress, args *raft.InstallSnapshotRequest, resp *raft.InstallSnapshotResponse, data io.Reader) error {
	if t.sendFilter != nil {
		if err := t.sendFilter(target, args); err != nil {
			return err
		}
	}
	return t.NetworkTransport.InstallSnapshot(id, target, args, resp, data)
}

// AppendEntriesPipeline wraps the network transport's pipeline (used only
// when pipelining is turned back on, in tests) with the same refusal.
func (t *gapTransport) AppendEntriesPipeline(id raft.ServerID, target raft.ServerAddress) (raft.AppendPipeline, error) {
	p, err := t.NetworkTransport.AppendEntriesPipeline(id, target)
	if err != nil {
		return nil, err
	}
	return gapPipeline{p}, nil
}

type gapPipeline struct{ raft.AppendPipeline }

func (p gapPipeline) AppendEntries(args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) (raft.AppendFuture, error) {
	for _, e := range args.Entries {
		if isSynthesized(e) {
			return nil, errSynthesizedEntry
		}
	}
	return p.AppendPipeline.AppendEntries(args, resp)
}

// Close stops the forwarding and closes the network transport. Raft calls
// it at its shutdown; the node calls it again (harmless).
func (t *gapTransport) Close() error {
	t.closed.Do(func() { close(t.stop) })
	<-t.done
	return t.NetworkTransport.Close()
}

// trackedSnaps is the snapshot store with the newest snapshot's index and
// term kept in memory (every snapshot Raft makes, installs or restores goes
// through Create), for the check of each AppendEntries in forward.
type trackedSnaps struct {
	raft.SnapshotStore
	newest atomic.Pointer[[2]uint64]
}

func newTrackedSnaps(s raft.SnapshotStore) *trackedSnaps {
	t := &trackedSnaps{SnapshotStore: s}
	if metas, err := s.List(); err == nil && len(metas) > 0 {
		t.newest.Store(&[2]uint64{metas[0].Index, metas[0].Term})
	}
	return t
}

// latest returns the newest snapshot's index and term (0, 0 for none).
func (t *trackedSnaps) latest() (uint64, uint64) {
	if p := t.newest.Load(); p != nil {
		return p[0], p[1]
	}
	return 0, 0
}

func (t *trackedSnaps) Create(version raft.SnapshotVersion, index, term uint64, configuration raft.Configuration,
	configurationIndex uint64, trans raft.Transport) (raft.SnapshotSink, error) {
	sink, err := t.SnapshotStore.Create(version, index, term, configuration, configurationIndex, trans)
	if err != nil {
		return nil, err
	}
	return &trackedSink{SnapshotSink: sink, t: t, index: index, term: term}, nil
}

type trackedSink struct {
	raft.SnapshotSink
	t           *trackedSnaps
	index, term uint64
}

func (s *trackedSink) Close() error {
	if err := s.SnapshotSink.Close(); err != nil {
		return err
	}
	// Newer as raft's file store orders snapshots: by term, then index. A
	// leader's snapshot installed over a longer uncommitted log (after an
	// outage recovery, say) is newer at a lower index (third review).
	for {
		old := s.t.newest.Load()
		if old != nil && (old[1] > s.term || old[1] == s.term && old[0] > s.index) {
			return nil
		}
		if s.t.newest.CompareAndSwap(old, &[2]uint64{s.index, s.term}) {
			return nil
		}
	}
}

// conflictsWithSnapshot reports whether req carries an entry at the index
// of the newest snapshot this server has applied, with another term: the
// leader's history differs from what this server's catalog holds at that
// index. A snapshot of committed entries cannot differ from a leader's log
// (Raft keeps committed entries); one that does is a restore the cluster
// never committed, installed here or run here (finding of the second
// review): accepting the leader's entries would apply them on top of it.
func (g *snapGap) conflictsWithSnapshot(req *raft.AppendEntriesRequest) (s, mine, theirs uint64, conflict bool) {
	if g.tracked == nil || len(req.Entries) == 0 {
		return 0, 0, 0, false
	}
	s, mine = g.tracked.latest()
	if s == 0 || s <= req.PrevLogEntry || s > req.PrevLogEntry+uint64(len(req.Entries)) {
		return 0, 0, 0, false
	}
	e := req.Entries[s-req.PrevLogEntry-1]
	if e.Index != s || e.Term == mine {
		return 0, 0, 0, false
	}
	r := g.raft.Load()
	if r == nil || r.AppliedIndex() < s || req.Term < r.CurrentTerm() {
		return 0, 0, 0, false
	}
	return s, mine, e.Term, true
}
