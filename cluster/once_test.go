package cluster

import (
	"bytes"
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/beaconhq/beacon/fsm"
	"github.com/beaconhq/beacon/fsm/fsmtest"
	"github.com/hashicorp/raft"
)

// gatedLogStore holds StoreLogs on the node named in gated until the gate
// opens: the leader's Raft loop then sits in its log append, as it does
// behind a slow fsync, and later applies wait in Raft's queue, not yet in
// the log.
type gatedLogStore struct {
	raft.LogStore
	name  string
	gated *atomic.Pointer[string]
	gate  <-chan struct{}
	held  chan<- []*raft.Log // each held batch, reported once
}

func (s gatedLogStore) StoreLogs(logs []*raft.Log) error {
	if g := s.gated.Load(); g != nil && *g == s.name {
		select {
		case s.held <- logs:
		default:
		}
		<-s.gate
	}
	return s.LogStore.StoreLogs(logs)
}

func (s gatedLogStore) StoreLog(l *raft.Log) error { return s.StoreLogs([]*raft.Log{l}) }

// TestResentWriteWhileTheFirstAttemptIsQueuedIsAppliedOnce: a re-send that
// reaches the leader while the first attempt of the same request waits in
// the grouper's queue or Raft's (not yet in the log, so the log search
// cannot find it) waits for that attempt and answers its index; the write
// is in the log once. Without onceCalls the re-send was appended a second
// time. When the held append is another entry of the leader's, the
// blocking write and the first attempt may leave the grouper's queue
// together, as one group entry: the count looks inside groups too.
func TestResentWriteWhileTheFirstAttemptIsQueuedIsAppliedOnce(t *testing.T) {
	var gated atomic.Pointer[string]
	gate := make(chan struct{})
	var openOnce sync.Once
	open := func() { openOnce.Do(func() { close(gate) }) }
	held := make(chan []*raft.Log, 16)
	tn := newTestNodes(t, 3, func(_ int, c *Config) {
		name := c.NodeName
		c.wrapLogStore = func(s raft.LogStore) raft.LogStore {
			return gatedLogStore{LogStore: s, name: name, gated: &gated, gate: gate, held: held}
		}
	})
	defer open()
	l := tn.waitForLeader(30 * time.Second)
	n := tn.nodes[l]
	eventually(t, 10*time.Second, n.leaderReady.Load, "leader ready")

	cmd := fsmtest.Register(t, "queued-once", "web")
	req := newOnceRequest(n.raft.CommitIndex(), cmd)
	term := n.raft.CurrentTerm()
	name := n.Name()
	// Hold the leader's next log append: a write of another request first,
	// so that the request under test waits in Raft's queue behind it.
	gated.Store(&name)
	type answer struct {
		idx uint64
		err error
	}
	blocker := make(chan answer, 1)
	go func() {
		idx, err := n.Apply(context.Background(), fsmtest.Register(t, "blocker", "web"))
		blocker <- answer{idx, err}
	}()
	select {
	case <-held:
	case <-time.After(10 * time.Second):
		t.Fatal("the leader never appended the blocking write")
	}
	first, second := make(chan answer, 1), make(chan answer, 1)
	go func() {
		idx, err := n.applyOnceLocal(context.Background(), req.id[:], term, req.low, false, cmd)
		first <- answer{idx, err}
	}()
	// The first attempt is registered before it reaches Raft.
	eventually(t, 10*time.Second, func() bool {
		n.once.mu.Lock()
		defer n.once.mu.Unlock()
		_, ok := n.once.m[req.id]
		return ok
	}, "first attempt registered")
	// The re-send, as a follower sends it after an unknown outcome.
	go func() {
		idx, err := n.applyOnceLocal(context.Background(), req.id[:], 0, req.low, true, cmd)
		second <- answer{idx, err}
	}()
	eventually(t, 10*time.Second, func() bool { return n.once.waiters() == 1 }, "the re-send waits for the first attempt")
	if n.raft.State() != raft.Leader {
		t.Skip("leadership moved while the log was held (a loaded machine); nothing to check")
	}
	gated.Store(nil)
	open()

	var a1, a2 answer
	for _, w := range []struct {
		ch  chan answer
		out *answer
	}{{first, &a1}, {second, &a2}} {
		select {
		case *w.out = <-w.ch:
		case <-time.After(30 * time.Second):
			t.Fatal("an attempt never answered")
		}
	}
	if b := <-blocker; b.err != nil {
		t.Logf("blocking write: %v", b.err)
	}
	if a1.err != nil {
		t.Fatalf("first attempt: %v", a1.err)
	}
	if a2.err != nil || a2.idx != a1.idx {
		t.Fatalf("re-send: index %d, err %v; want the first attempt's index %d", a2.idx, a2.err, a1.idx)
	}
	eventually(t, 10*time.Second, func() bool { return n.raft.CommitIndex() >= a1.idx }, "commit")
	if c := tn.countEntries(l, cmd); c != 1 {
		t.Fatalf("the write is in the log %d times, want 1", c)
	}
	var tagged int
	var e raft.Log
	for i := req.low + 1; i <= n.raft.LastIndex(); i++ {
		if n.logs.GetLog(i, &e) != nil || e.Type != raft.LogCommand {
			continue
		}
		// A plain entry carries its request id in Extensions; a write
		// that left the grouper's queue together with another (the
		// blocking write) is a member of a group entry.
		if bytes.HasSuffix(e.Extensions, req.id[:]) || fsm.FindInGroup(e.Data, req.id[:]) >= 0 {
			tagged++
		}
	}
	if tagged != 1 {
		t.Fatalf("%d log entries carry the request id, want 1", tagged)
	}
}
