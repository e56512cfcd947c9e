package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/beaconhq/beacon/fsm"
	"github.com/beaconhq/beacon/fsm/fsmtest"
)

// heldCluster is a 3-node cluster whose leader's log append can be held
// (gatedLogStore), so that writes queue in its grouper.
type heldCluster struct {
	tn     *testNodes
	leader *Node
	gated  *atomic.Pointer[string]
	held   chan []*raft.Log
	open   func()
}

func newHeldCluster(t *testing.T, mutate func(i int, c *Config)) *heldCluster {
	var gated atomic.Pointer[string]
	gate := make(chan struct{})
	var openOnce sync.Once
	held := make(chan []*raft.Log, 16)
	tn := newTestNodes(t, 3, func(i int, c *Config) {
		name := c.NodeName
		c.wrapLogStore = func(s raft.LogStore) raft.LogStore {
			return gatedLogStore{LogStore: s, name: name, gated: &gated, gate: gate, held: held}
		}
		if mutate != nil {
			mutate(i, c)
		}
	})
	hc := &heldCluster{tn: tn, gated: &gated, held: held}
	hc.open = func() {
		gated.Store(nil)
		openOnce.Do(func() { close(gate) })
	}
	t.Cleanup(hc.open)
	hc.leader = tn.nodes[tn.waitForLeader(30*time.Second)]
	eventually(t, 10*time.Second, hc.leader.leaderReady.Load, "leader ready")
	return hc
}

// hold makes the leader's next log append wait until open, with a write
// of its own in it, and returns once that write is held, with a channel
// that receives the blocking write's answer.
func (hc *heldCluster) hold(t *testing.T) <-chan error {
	t.Helper()
	name := hc.leader.Name()
	hc.gated.Store(&name)
	blocker := make(chan error, 1)
	go func() {
		_, err := hc.leader.Apply(context.Background(), fsmtest.Register(t, "blocker", "held"))
		blocker <- err
	}()
	select {
	case <-hc.held:
	case <-time.After(10 * time.Second):
		t.Fatal("the leader never appended the blocking write")
	}
	return blocker
}

// longWait gives forwarded writes a budget that a held log and a loaded
// machine do not use up.
func longWait(_ int, c *Config) { c.LeaderWait = 30 * time.Second }

// queued waits until n writes (besides the one hold appended) are in the
// leader's grouper: queued, or taken for an entry that waits in Raft's
// apply queue behind the held one (which writes that is depends on the
// scheduler).
func (hc *heldCluster) queued(t *testing.T, n int) {
	t.Helper()
	g := hc.leader.group
	eventually(t, 20*time.Second, func() bool { return g.waiting.Load() >= int64(n)+1 }, fmt.Sprintf("%d writes in the grouper", n))
	if hc.leader.raft.State() != raft.Leader {
		t.Skip("leadership moved while the log was held (a loaded machine); nothing to check")
	}
}

// queue sends count writes straight to the leader's grouper, each in its
// own goroutine (request ids tag, i), waits until they are all in it, and
// returns the channel their answers arrive on.
func (hc *heldCluster) queue(t *testing.T, prefix string, tag byte, count int) <-chan error {
	t.Helper()
	results := make(chan error, count)
	for i := range count {
		cmd := fsmtest.Register(t, fmt.Sprintf("%s-%d", prefix, i), "web")
		go func() {
			_, err := hc.leader.group.apply(context.Background(), [16]byte{tag, byte(i)}, 0, cmd)
			results <- err
		}()
	}
	hc.queued(t, count)
	return results
}

// groupEntries returns the members of every group entry in node i's log up
// to its commit index.
func (tn *testNodes) groupEntries(i int) [][][]byte {
	n := tn.nodes[i]
	first, _ := n.logs.FirstIndex()
	var out [][][]byte
	var l raft.Log
	for idx := max(first, 1); idx <= n.raft.CommitIndex(); idx++ {
		if n.logs.GetLog(idx, &l) != nil || l.Type != raft.LogCommand || len(l.Data) == 0 || fsm.MessageType(l.Data[0]) != fsm.GroupType {
			continue
		}
		var members [][]byte
		if err := fsm.SplitGroup(l.Data, func(_ int, _, cmd []byte) bool { members = append(members, cmd); return true }); err != nil {
			panic(err)
		}
		out = append(out, members)
	}
	return out
}

type applied struct {
	cmd []byte
	idx uint64
	err error
}

// TestWritesQueuedBehindABusyLogShareOneEntry: writes that arrive while the
// leader's log is busy — through the leader and forwarded by both
// followers — are committed as one group entry; each is answered with its
// own result (a rejected one with its rejection, the others accepted), is
// in the log once, and reaches every node. A write re-sent after an
// unknown outcome is found inside the group: it is answered the first
// attempt's result, rejection included, and not applied again.
func TestWritesQueuedBehindABusyLogShareOneEntry(t *testing.T) {
	hc := newHeldCluster(t, longWait)
	tn, n := hc.tn, hc.leader
	eventually(t, 10*time.Second, n.groupsAllowed, "every server advertises group entries")
	hc.hold(t)

	const forwarded = 8
	results := make(chan applied, forwarded+3)
	for i := range forwarded {
		via := tn.nodes[i%len(tn.nodes)]
		cmd := fsmtest.Register(t, fmt.Sprintf("grouped-%d", i), "web")
		go func() {
			idx, err := via.Apply(context.Background(), cmd)
			results <- applied{cmd, idx, err}
		}()
	}
	// Three more with request ids of the test's own, one of them rejected
	// by the FSM (an instance without an id).
	low := n.raft.CommitIndex()
	type direct struct {
		id  [16]byte
		cmd []byte
	}
	directs := []direct{
		{[16]byte{1}, fsmtest.Register(t, "direct-1", "web")},
		{[16]byte{2}, fsmtest.Register(t, "", "web")},
		{[16]byte{3}, fsmtest.Register(t, "direct-3", "web")},
	}
	for _, d := range directs {
		go func() {
			idx, err := n.applyOnceLocal(context.Background(), d.id[:], 0, low, false, d.cmd)
			results <- applied{d.cmd, idx, err}
		}()
	}
	hc.queued(t, forwarded+len(directs))
	hc.open()

	byCmd := map[string]applied{}
	for range forwarded + len(directs) {
		select {
		case a := <-results:
			byCmd[string(a.cmd)] = a
		case <-time.After(30 * time.Second):
			t.Fatal("a write was never answered")
		}
	}
	for cmd, a := range byCmd {
		var rej *fsm.RejectError
		if cmd == string(directs[1].cmd) {
			if !errors.As(a.err, &rej) || rej.Code() != "invalid" {
				t.Errorf("the write without an id: %v, want its rejection", a.err)
			}
			continue
		}
		if a.err != nil {
			t.Errorf("write %x: %v", cmd[:8], a.err)
		}
	}
	eventually(t, 10*time.Second, func() bool { return n.raft.CommitIndex() >= n.raft.LastIndex() }, "commit")
	// The log read below is node 0's, which may be a follower: it learns the
	// commit index from the leader's next AppendEntries, after the leader.
	tn.waitCaughtUp(t, 10*time.Second, n.raft.CommitIndex())
	// The writes took at most two entries: what was taken from the queue
	// before the log was released, if anything (it depends on which entry
	// the held append was and on the scheduler), and the rest of the
	// queue, as one group.
	entries := map[uint64]int{}
	for _, a := range byCmd {
		entries[a.idx]++
	}
	if len(entries) > 2 || len(tn.groupEntries(0)) == 0 {
		t.Errorf("%d writes took %d entries (writes per index: %v), %d of them groups; want at most 2", len(byCmd), len(entries), entries, len(tn.groupEntries(0)))
	}
	for cmd, a := range byCmd {
		if c := tn.countEntries(0, []byte(cmd)); c != 1 {
			t.Errorf("write at %d is in the log %d times, want once", a.idx, c)
		}
	}
	// Every node applies every accepted write, at the index it was answered.
	for i, f := range tn.fsms {
		for cmd, a := range byCmd {
			if cmd == string(directs[1].cmd) {
				continue
			}
			var req fsm.RegisterRequest
			if _, err := fsm.Decode([]byte(cmd), &req); err != nil {
				t.Fatal(err)
			}
			eventually(t, 10*time.Second, func() bool {
				_, inst, _ := f.Store().Instance(nil, req.Service, req.ID)
				return inst != nil && inst.ModifyIndex == a.idx
			}, fmt.Sprintf("node %d has %s at index %d", i, req.ID, a.idx))
		}
	}

	// Re-sends after an unknown outcome find each direct write in its group.
	for _, d := range directs {
		first := byCmd[string(d.cmd)]
		idx, err := n.applyOnceLocal(context.Background(), d.id[:], 0, low, true, d.cmd)
		if idx != first.idx || (err == nil) != (first.err == nil) {
			t.Errorf("re-send of %x: index %d, %v; want the first attempt's %d, %v", d.id[:1], idx, err, first.idx, first.err)
		}
	}
	for _, d := range directs {
		if c := tn.countEntries(0, d.cmd); c != 1 {
			t.Errorf("after the re-sends, write %x is in the log %d times", d.id[:1], c)
		}
	}
}

// TestNoGroupEntriesWhileAServerCannotReadThem: with a server whose gossip
// metadata says it predates group entries, writes queued behind a busy log
// go as plain entries, one each — never a group the old server would stop
// at.
func TestNoGroupEntriesWhileAServerCannotReadThem(t *testing.T) {
	hc := newHeldCluster(t, func(i int, c *Config) {
		longWait(i, c)
		c.legacyLogFormatForTest = i == 2
	})
	tn, n := hc.tn, hc.leader
	eventually(t, 10*time.Second, func() bool {
		m, ok := n.gossip.member(tn.nodes[2].Name())
		return ok && len(n.gossip.snapshot()) == 3 && m.LogFormat == 0
	}, "gossip knows every member")
	if n.groupsAllowed() {
		t.Fatal("groupsAllowed with a legacy server in the configuration")
	}
	hc.hold(t)
	const writes = 6
	results := make(chan applied, writes)
	for i := range writes {
		cmd := fsmtest.Register(t, fmt.Sprintf("plain-%d", i), "web")
		go func() {
			idx, err := tn.nodes[i%3].Apply(context.Background(), cmd)
			results <- applied{cmd, idx, err}
		}()
	}
	hc.queued(t, writes)
	hc.open()
	seen := map[uint64]bool{}
	for range writes {
		select {
		case a := <-results:
			if a.err != nil {
				t.Errorf("write: %v", a.err)
			}
			if seen[a.idx] {
				t.Errorf("two writes answered index %d: they share an entry", a.idx)
			}
			seen[a.idx] = true
			if c := tn.countEntries(n.ownIndex(t, tn), a.cmd); c != 1 {
				t.Errorf("write at %d in the log %d times", a.idx, c)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("a write was never answered")
		}
	}
	// Every node's committed log, once each has learned the leader's commit
	// index (a follower learns it after the leader).
	tn.waitCaughtUp(t, 10*time.Second, n.raft.CommitIndex())
	for i := range tn.nodes {
		if g := tn.groupEntries(i); len(g) != 0 {
			t.Errorf("node %d's log has %d group entries", i, len(g))
		}
	}
}

// ownIndex is n's position in tn.
func (n *Node) ownIndex(t *testing.T, tn *testNodes) int {
	for i, m := range tn.nodes {
		if m == n {
			return i
		}
	}
	t.Fatal("node not in the cluster")
	return -1
}

// TestAQueuedWriteOfAnotherTermIsNotRun: the term fence holds for a write
// that waited in the grouper's queue — one sent for a term this leader is
// no longer in is refused with ErrNotLeader (certainly not run, so the
// sender may try the next leader) and never appended; its neighbours in
// the queue are committed.
func TestAQueuedWriteOfAnotherTermIsNotRun(t *testing.T) {
	hc := newHeldCluster(t, nil)
	tn, n := hc.tn, hc.leader
	hc.hold(t)
	term := n.raft.CurrentTerm()
	stale := fsmtest.Register(t, "stale-term", "web")
	cmds := [][]byte{fsmtest.Register(t, "fenced-0", "web"), stale, fsmtest.Register(t, "fenced-2", "web")}
	terms := []uint64{term, term + 1, 0}
	results := make(chan applied, len(cmds))
	for i, cmd := range cmds {
		go func() {
			idx, err := n.group.apply(context.Background(), [16]byte{byte(i + 1)}, terms[i], cmd)
			results <- applied{cmd, idx, err}
		}()
	}
	// The write of another term may be refused as soon as it is taken
	// from the queue: count it once answered.
	g := n.group
	eventually(t, 20*time.Second, func() bool { return g.waiting.Load()+int64(len(results)) >= int64(len(cmds))+1 }, "every write in the grouper or answered")
	if n.raft.State() != raft.Leader {
		t.Skip("leadership moved while the log was held (a loaded machine); nothing to check")
	}
	hc.open()
	for range cmds {
		select {
		case a := <-results:
			switch {
			case string(a.cmd) == string(stale):
				if !errors.Is(a.err, ErrNotLeader) {
					t.Errorf("the write of another term: %v, want ErrNotLeader", a.err)
				}
			case a.err != nil:
				t.Errorf("write: %v", a.err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("a write was never answered")
		}
	}
	eventually(t, 10*time.Second, func() bool { return n.raft.CommitIndex() >= n.raft.LastIndex() }, "commit")
	if c := tn.countEntries(n.ownIndex(t, tn), stale); c != 0 {
		t.Errorf("the write of another term is in the log %d times", c)
	}
}

// TestAServerFromBeforeGroupCommitIsNotAddedOnceEveryServerWritesGroups: a
// server whose gossip metadata says it predates group entries, joining a
// cluster whose servers all write them (so its log may hold some), is not
// made a Raft server: it would stop at the first group it replays.
func TestAServerFromBeforeGroupCommitIsNotAddedOnceEveryServerWritesGroups(t *testing.T) {
	testAnOlderServerIsNotAdded(t, func(c *Config) { c.legacyLogFormatForTest = true })
}

// TestAServerFromBeforeExternalNodesIsNotAdded: the same for a release that
// writes groups but not external nodes' entries.
func TestAServerFromBeforeExternalNodesIsNotAdded(t *testing.T) {
	testAnOlderServerIsNotAdded(t, func(c *Config) { c.groupsOnlyLogFormatForTest = true })
}

func testAnOlderServerIsNotAdded(t *testing.T, older func(*Config)) {
	tn := newTestNodes(t, 3, nil)
	n := tn.nodes[tn.waitForLeader(30*time.Second)]
	eventually(t, 10*time.Second, func() bool { return n.formatAllowed(logFormatExternal) }, "every server advertises the newest log format")

	cfg := DefaultConfig()
	cfg.NodeName = "old4"
	cfg.DataDir = t.TempDir()
	cfg.ClusterAddr, cfg.GossipAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.ClusterSecret = []byte("nodes-test-secret-0123456789abcdef")
	cfg.Join = []string{tn.nodes[0].GossipAddr()}
	cfg.Logger = hclog.New(&hclog.LoggerOptions{Name: cfg.NodeName, Level: hclog.Info, Output: testWriter{t}})
	older(&cfg)
	old, err := New(cfg, fsm.New(cfg.Logger.Named("fsm")))
	if err != nil {
		t.Fatal(err)
	}
	if err := old.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = old.Shutdown(ctx)
	})
	eventually(t, 20*time.Second, func() bool {
		m, ok := n.gossip.member("old4")
		return ok && m.Status == fsm.NodeAlive
	}, "the leader's gossip sees old4 alive")
	n.reconcile(context.Background()) // what the leader loop runs on gossip events
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		t.Fatal(err)
	}
	for _, s := range f.Configuration().Servers {
		if s.ID == "old4" {
			t.Fatalf("old4 was added to the Raft configuration: %+v", f.Configuration().Servers)
		}
	}
	if !n.formatAllowed(logFormatExternal) {
		t.Error("the newest log format stopped: the old server was let in")
	}
}

// TestExternalNodesWaitForEveryServersRelease: with a server whose gossip
// metadata says it predates external nodes' entries, a catalog register
// sent through any node is refused (409) before it reaches the log; once
// every server advertises them, it is applied.
func TestExternalNodesWaitForEveryServersRelease(t *testing.T) {
	tn := newTestNodes(t, 3, func(i int, c *Config) { c.groupsOnlyLogFormatForTest = i == 2 })
	leader := tn.waitForLeader(30 * time.Second)
	n := tn.nodes[leader]
	eventually(t, 10*time.Second, func() bool {
		m, ok := n.gossip.member(tn.nodes[2].Name())
		return ok && len(n.gossip.snapshot()) == 3 && m.LogFormat == logFormatGroups
	}, "gossip knows every member")
	cmd, err := fsm.Encode(fsm.CatalogRegisterType, &fsm.CatalogRegisterRequest{Node: "ext-db", Address: "127.0.0.5", Time: 1})
	if err != nil {
		t.Fatal(err)
	}
	last := n.raft.LastIndex()
	for i, nd := range tn.nodes {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := nd.Apply(ctx, cmd)
		cancel()
		if !errors.Is(err, fsm.ErrConflict) || !strings.Contains(err.Error(), "upgrade every server") {
			t.Errorf("through node %d (leader %d): %v, want a conflict asking for the upgrade", i, leader, err)
		}
	}
	for idx := last + 1; idx <= n.raft.LastIndex(); idx++ {
		var l raft.Log
		if err := n.logs.GetLog(idx, &l); err == nil && bytes.Contains(l.Data, []byte("ext-db")) {
			t.Fatalf("the refused command is in the log at %d", idx)
		}
	}
	if n.fsm.Store().Node("ext-db") != nil {
		t.Fatal("ext-db was applied")
	}
}

// TestWritesQueuedAtShutdownAreAnswered: writes waiting in the grouper when
// Raft shuts down, and writes that reach the grouper after it (a forwarded
// write arriving between raft.Shutdown and the RPC server's close), are all
// answered. With BatchApplyCh, raft.ApplyLog after Shutdown picks at random
// between refusing (ErrRaftShutdown) and putting the future in the buffered
// applyCh that nobody reads any more; such a future is never answered, its
// commit holds the grouper's only slot, and every write behind it waits
// forever (<-m.done ignores ctx).
func TestWritesQueuedAtShutdownAreAnswered(t *testing.T) {
	hc := newHeldCluster(t, func(_ int, c *Config) { c.LeaderWait = time.Second })
	n := hc.leader
	blocker := hc.hold(t)
	const queued = 4
	results := hc.queue(t, "at-shutdown", 0xa0, queued)
	f := n.raft.Shutdown() // the leader loop is held in its log append
	hc.open()
	if err := f.Error(); err != nil {
		t.Fatal(err)
	}
	for range queued {
		select {
		case err := <-results:
			t.Logf("queued write: %v", err)
		case <-time.After(10 * time.Second):
			t.Fatal("a write queued at shutdown was never answered")
		}
	}
	for i := range 12 {
		cmd := fsmtest.Register(t, fmt.Sprintf("after-shutdown-%d", i), "web")
		done := make(chan error, 1)
		go func() {
			_, err := n.group.apply(context.Background(), [16]byte{0xb0, byte(i)}, 0, cmd)
			done <- err
		}()
		select {
		case err := <-done:
			if err == nil {
				t.Fatalf("write %d after shutdown accepted", i)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("write %d sent after raft shut down was never answered", i)
		}
	}
	// hold's blocking write retries until its LeaderWait ends (no leader).
	select {
	case <-blocker:
	case <-time.After(n.cfg.LeaderWait + 10*time.Second):
		t.Fatal("the blocking write was never answered")
	}
}

// TestWritesWaitingInTheGrouperAreAnsweredWhenTheNodeStops: hashicorp/raft
// does not answer the futures of committed entries its FSM had not applied
// when it shut down, so the node's shutdown answers the writes still
// waiting in the grouper (in flight or queued) with ErrUnknownOutcome
// rather than leave them, and the RPC handlers serving them, waiting for
// ever.
func TestWritesWaitingInTheGrouperAreAnsweredWhenTheNodeStops(t *testing.T) {
	hc := newHeldCluster(t, nil)
	n := hc.leader
	_ = hc.hold(t)
	const queued = 3
	results := hc.queue(t, "at-stop", 0xc0, queued)
	n.group.stop() // as Node.stop does once Raft has shut down
	for range queued {
		select {
		case err := <-results:
			if !errors.Is(err, ErrUnknownOutcome) {
				t.Errorf("a write waiting at stop: %v, want ErrUnknownOutcome", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a write waiting at stop was never answered")
		}
	}
	if _, err := n.group.apply(context.Background(), [16]byte{0xc1}, 0, fsmtest.Register(t, "after-stop", "web")); !errors.Is(err, ErrUnknownOutcome) {
		t.Errorf("a write after stop: %v, want ErrUnknownOutcome", err)
	}
	hc.open()
}
