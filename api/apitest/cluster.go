package apitest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/beaconhq/beacon/api/client"
	"github.com/beaconhq/beacon/fsm"
)

// NodeName is the name the fake cluster's only node goes by.
const NodeName = "apitest"

// Cluster is a one-node cluster over a real fsm.FSM. It implements the api
// package's Cluster interface (Writer, Consistency, Membership and
// Operator). Every method is safe for concurrent use.
type Cluster struct {
	fsm *fsm.FSM

	// applyMu serialises Apply, as Raft's single FSM goroutine would.
	applyMu sync.Mutex
	index   uint64
	applies int

	mu          sync.Mutex
	consistent  int
	knownLeader bool
	lastContact time.Duration
	joinErr     error
	joined      [][]string
	left        int
	removed     []string
	forced      []string
	forceErr    error
	stalled     string
	diverged    bool
}

// NewCluster returns a cluster with an empty catalog that knows its leader
// (itself) and has a last contact of 0, as a leader does. logger may be nil.
func NewCluster(logger hclog.Logger) *Cluster {
	return &Cluster{fsm: fsm.New(logger), knownLeader: true}
}

// FSM returns the state machine writes are applied to.
func (c *Cluster) FSM() *fsm.FSM { return c.fsm }

// Store returns the catalog the API reads.
func (c *Cluster) Store() *fsm.Store { return c.fsm.Store() }

// Apply applies cmd to the FSM as the next Raft log entry and returns its
// index, or the error the FSM rejected it with, the way cluster.Node.Apply
// does once the entry is committed and applied on this node. A cancelled
// ctx fails before anything is applied. An undecodable command panics in
// the FSM, as it would on every node of a real cluster.
func (c *Cluster) Apply(ctx context.Context, cmd []byte) (uint64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	l, resp := c.applyNext(cmd)
	res, ok := resp.(fsm.ApplyResult)
	if !ok {
		return l.Index, fmt.Errorf("apitest: unexpected apply response %T", resp)
	}
	if res.Err != nil {
		return res.Index, res.Err
	}
	return res.Index, nil
}

func (c *Cluster) applyNext(cmd []byte) (*raft.Log, any) {
	c.applyMu.Lock()
	defer c.applyMu.Unlock()
	c.index++
	c.applies++
	l := &raft.Log{
		Index: c.index, Term: 1, Type: raft.LogCommand,
		// Raft hands the FSM its own copy of the entry.
		Data: slices.Clone(cmd), AppendedAt: time.Now(),
	}
	return l, c.fsm.Apply(l)
}

// Applies returns how many commands Apply has been given, accepted or not.
func (c *Cluster) Applies() int {
	c.applyMu.Lock()
	defer c.applyMu.Unlock()
	return c.applies
}

// ConsistentIndex returns the FSM's applied index: on a single node that is
// everything acknowledged.
func (c *Cluster) ConsistentIndex(ctx context.Context) (uint64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	c.mu.Lock()
	c.consistent++
	c.mu.Unlock()
	return c.fsm.AppliedIndex(), nil
}

// ConsistentReads returns how many times ConsistentIndex was called.
func (c *Cluster) ConsistentReads() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.consistent
}

// KnownLeader reports whether a leader is known (true unless SetLeader said
// otherwise).
func (c *Cluster) KnownLeader() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.knownLeader
}

// LastContact returns how long ago the leader was heard from (0 unless
// SetLeader said otherwise).
func (c *Cluster) LastContact() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lastContact
}

// LastIndex returns the last index applied: this one-node log holds nothing
// it has not applied.
func (c *Cluster) LastIndex() uint64 { return c.fsm.AppliedIndex() }

// SetLeader changes what KnownLeader and LastContact report, to simulate a
// follower that lost its leader.
func (c *Cluster) SetLeader(known bool, lastContact time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.knownLeader, c.lastContact = known, lastContact
}

// SetStalled makes ReplicationStalled report a stall with msg ("" clears it).
func (c *Cluster) SetStalled(msg string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stalled = msg
}

// SetDiverged makes Diverged report d (api.DivergenceReporter).
func (c *Cluster) SetDiverged(d bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.diverged = d
}

// Diverged reports what SetDiverged set (api.DivergenceReporter).
func (c *Cluster) Diverged() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.diverged
}

// ReplicationStalled reports what SetStalled set (api.StallReporter).
func (c *Cluster) ReplicationStalled() (bool, string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stalled != "", c.stalled
}

// Status describes the one node as the leader of a one-voter configuration.
func (c *Cluster) Status() client.ClusterStatus {
	applied := c.fsm.AppliedIndex()
	c.mu.Lock()
	defer c.mu.Unlock()
	st := client.ClusterStatus{
		Node: NodeName, State: "Leader", Term: 1,
		CommitIndex: applied, AppliedIndex: applied, LastIndex: applied,
		LastContactMS: c.lastContact.Milliseconds(),
		Peers:         []client.Peer{{ID: NodeName, Address: "127.0.0.1:8751", Suffrage: "Voter", Leader: true}},
	}
	if c.knownLeader {
		st.Leader, st.LeaderAddr = NodeName, "127.0.0.1:8751"
	} else {
		st.State = "Follower"
		st.Peers[0].Leader = false
	}
	return st
}

// Servers returns the one server's own view (its Status).
func (c *Cluster) Servers(context.Context) client.ClusterServers {
	st := c.Status()
	return client.ClusterServers{Node: NodeName, Servers: []client.ServerStatus{{
		ID: NodeName, Address: st.Peers[0].Address, Suffrage: st.Peers[0].Suffrage,
		View: &client.ServerView{State: st.State, Leader: st.Leader, Term: st.Term, CommitIndex: st.CommitIndex,
			AppliedIndex: st.AppliedIndex, CatalogIndex: st.AppliedIndex, LastIndex: st.LastIndex, LastContactMS: st.LastContactMS},
	}}}
}

// Members returns the one node, alive.
func (c *Cluster) Members() []client.Member {
	return []client.Member{{
		Name: NodeName, GossipAddr: "127.0.0.1:8752", ClusterAddr: "127.0.0.1:8751",
		HTTPAddr: "127.0.0.1:8750", Role: "server", Status: "alive",
	}}
}

// Join records addrs and reports them all joined, or fails with the error
// given to SetJoinError.
func (c *Cluster) Join(addrs []string) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.joinErr != nil {
		return 0, c.joinErr
	}
	c.joined = append(c.joined, slices.Clone(addrs))
	return len(addrs), nil
}

// SetJoinError makes every later Join fail with err (nil: succeed again).
func (c *Cluster) SetJoinError(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.joinErr = err
}

// Joined returns the address lists Join was called with, in order.
func (c *Cluster) Joined() [][]string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.joined)
}

// Leave records the call; a real node would leave and shut down.
func (c *Cluster) Leave(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.left++
	return nil
}

// Left returns how many times Leave was called.
func (c *Cluster) Left() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.left
}

// RemovePeer records the id; it never fails.
func (c *Cluster) RemovePeer(ctx context.Context, id string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.removed = append(c.removed, id)
	return nil
}

// RemovePeerByAddress records "address=" and addr among the removals and
// returns addr as the server's ID; it never fails.
func (c *Cluster) RemovePeerByAddress(ctx context.Context, addr string) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.removed = append(c.removed, "address="+addr)
	return addr, nil
}

// Removed returns the ids RemovePeer was called with, in order (and the
// addresses RemovePeerByAddress was called with, as "address=ADDR").
func (c *Cluster) Removed() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.removed)
}

// Restore restores a snapshot archive into the FSM as the next log index, the
// way a Raft user restore lands on every node of a real cluster, and returns
// that index. A damaged archive fails with an fsm.ErrBadSnapshot rejection.
func (c *Cluster) Restore(ctx context.Context, archive []byte) (uint64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	ar, err := fsm.ReadArchive(bytes.NewReader(archive), 0)
	if err != nil {
		return 0, &fsm.RejectError{Kind: fsm.ErrBadSnapshot, Msg: err.Error()}
	}
	c.applyMu.Lock()
	defer c.applyMu.Unlock()
	c.index++
	var stream bytes.Buffer
	if err := ar.WriteSnapshot(&stream, c.index); err != nil {
		return 0, err
	}
	if err := c.fsm.Restore(io.NopCloser(&stream)); err != nil {
		return 0, err
	}
	return c.index, nil
}

// ForceLeave records the node and returns the error set by
// SetForceLeaveError, if any.
func (c *Cluster) ForceLeave(ctx context.Context, node string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.forced = append(c.forced, node)
	return c.forceErr
}

// SetForceLeaveError makes ForceLeave fail with err (nil: succeed).
func (c *Cluster) SetForceLeaveError(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.forceErr = err
}

// ForcedOut returns the nodes ForceLeave was called with, in order.
func (c *Cluster) ForcedOut() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.forced)
}
