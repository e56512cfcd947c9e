package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// Every server's own view of Raft, gathered over the cluster port: what
// GET /v1/cluster/servers shows, so that an operator sees from any one
// agent which server is behind, which has lost its leader, and which does
// not answer at all (Consul's `operator raft list-peers` shows only the
// asking server's configuration; its autopilot health is the leader's
// opinion of the others, not theirs).

// opRaftView asks a server for its own view of Raft (RaftView, as JSON).
const opRaftView Op = 9

// DefaultServerViewTimeout bounds how long Servers waits for each server.
const DefaultServerViewTimeout = 2 * time.Second

// RaftView is one server's view of Raft as it reports it itself.
type RaftView struct {
	// Node is the answering server's own name (its Raft ID); empty from a
	// release before it was sent.
	Node   string `json:"node,omitempty"`
	State  string `json:"state"`
	Leader string `json:"leader"`
	Term   uint64 `json:"term"`
	// CommitIndex is the highest index the server knows to be committed,
	// AppliedIndex the last Raft has applied (handed to the catalog: every
	// kind of entry, the leader's barriers and no-ops and configuration
	// changes included, so it equals CommitIndex once the server has caught
	// up), LastIndex the last in its log (committed or not). CatalogIndex
	// is the index of the catalog's latest change (what reads on the
	// server report): below AppliedIndex when the latest entries changed
	// nothing in the catalog, such as the commit nudge's barrier after
	// every write (nudge.go). Before, AppliedIndex was this index, and an
	// idle, healthy cluster showed APPLIED one below COMMIT.
	CommitIndex  uint64 `json:"commit_index"`
	AppliedIndex uint64 `json:"applied_index"`
	CatalogIndex uint64 `json:"catalog_index"`
	LastIndex    uint64 `json:"last_index"`
	// LastContact is as Node.LastContact: 0 on a leader that holds its
	// leadership, Never when the server has not caught up with a leader
	// since it started.
	LastContact time.Duration `json:"last_contact"`
}

// Never is the LastContact of a server that has not caught up with a
// leader since it started.
const Never = never

// ServerView is what one server of the Raft configuration said about
// itself, or why it said nothing.
type ServerView struct {
	Peer
	// View is the server's answer; meaningful only when Err is nil.
	View RaftView
	// Took is how long the answer took (the asking server's own view: 0).
	Took time.Duration
	// Err is why the server did not answer: "no answer within 2s", a
	// refused connection, an older version that does not know the request.
	Err error
}

// raftView is this node's own view.
func (n *Node) raftView() RaftView {
	_, id := n.raft.LeaderWithID()
	return RaftView{
		Node:  n.cfg.NodeName,
		State: n.raft.State().String(), Leader: string(id), Term: n.raft.CurrentTerm(),
		CommitIndex: n.raft.CommitIndex(), AppliedIndex: n.raft.AppliedIndex(), CatalogIndex: n.fsm.AppliedIndex(),
		LastIndex: n.raft.LastIndex(), LastContact: n.LastContact(),
	}
}

// Servers asks every server in this node's Raft configuration for its own
// view of Raft, all at once over the cluster port, and waits at most
// timeout for each (DefaultServerViewTimeout when 0): a server that does
// not answer in time is listed with that as its error. This node answers
// for itself without a round trip. The result follows the configuration's
// order.
func (n *Node) Servers(ctx context.Context, timeout time.Duration) []ServerView {
	if timeout <= 0 {
		timeout = DefaultServerViewTimeout
	}
	st := n.Status()
	out := make([]ServerView, len(st.Peers))
	var wg sync.WaitGroup
	for i, p := range st.Peers {
		out[i].Peer = p
		if p.ID == n.cfg.NodeName {
			out[i].View = n.raftView()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i].View, out[i].Took, out[i].Err = n.askRaftView(ctx, p.Address, timeout)
			if v := out[i].View; out[i].Err == nil && v.Node != "" && v.Node != p.ID {
				// Another server answers at this one's address (the server
				// it replaced, started again there): Raft reaches servers by
				// address, so that one takes this one's place in Raft
				// unseen, and its view is not this server's.
				out[i].View = RaftView{}
				out[i].Err = fmt.Errorf("the server at %s is %s, not %s: Raft sends %s's traffic to it (stop it, or remove %s with force-leave)",
					p.Address, v.Node, p.ID, p.ID, p.ID)
			}
		}()
	}
	wg.Wait()
	return out
}

// askRaftView asks the server at addr (a cluster address) for its view.
func (n *Node) askRaftView(ctx context.Context, addr string, timeout time.Duration) (RaftView, time.Duration, error) {
	start := time.Now()
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	resp, err := n.pool.call(cctx, addr, opRaftView, nil, timeout)
	var de errDial
	if errors.Is(err, ErrConnLost) || errors.As(err, &de) {
		// The pooled connection broke (the server restarted, say): the
		// request only reads, so ask once more on a fresh connection.
		resp, err = n.pool.call(cctx, addr, opRaftView, nil, timeout)
	}
	took := time.Since(start)
	if err != nil {
		var ne net.Error
		if (cctx.Err() != nil || errors.As(err, &ne) && ne.Timeout()) && ctx.Err() == nil {
			// The bound ran out, whatever step it interrupted (a dial
			// to a paused process times out on its own deadline, an
			// instant before the context's).
			return RaftView{}, took, fmt.Errorf("no answer within %v", timeout)
		}
		if errors.Is(err, ErrConnLost) {
			err = fmt.Errorf("cluster: rpc to %s: %w", addr, err)
		}
		return RaftView{}, took, err
	}
	var v RaftView
	if err := json.Unmarshal(resp, &v); err != nil {
		return RaftView{}, took, fmt.Errorf("cluster: bad raft view from %s: %w", addr, err)
	}
	return v, took, nil
}

// serveRaftView answers opRaftView.
func (n *Node) serveRaftView(context.Context, []byte) ([]byte, error) {
	if n.raft.State() == raft.Shutdown {
		return nil, raft.ErrRaftShutdown
	}
	return json.Marshal(n.raftView())
}
