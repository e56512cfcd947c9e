package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"math/rand/v2"
	"sort"
	"time"

	"github.com/beaconhq/beacon/fsm"
	"github.com/hashicorp/raft"
)

// bootstrapLoop forms a new cluster once BootstrapExpect servers have met
// through gossip. It never bootstraps a node that has Raft state, and it
// first asks every peer whether it already belongs to a cluster (then this
// node waits for the leader to add it instead): no manual step, and no
// second bootstrap of a formed cluster.
func (n *Node) bootstrapLoop(ctx context.Context) {
	expect := n.cfg.BootstrapExpect
	if expect <= 1 || n.hasState {
		return
	}
	ticker := time.NewTicker(200 * time.Millisecond)
	defer ticker.Stop()
	warned := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		if n.KnownLeader() || n.hasPeers() {
			return // added to an existing cluster
		}
		var servers []Member
		mismatch := false
		for _, m := range n.gossip.snapshot() {
			if m.Role != fsm.RoleServer || m.Status != fsm.NodeAlive || n.badName(m) {
				continue
			}
			if m.Expect != 0 && m.Expect != expect {
				mismatch = true
				if !warned {
					n.logger.Error("members disagree on bootstrap-expect; not bootstrapping", "node", m.Name, "theirs", m.Expect, "ours", expect)
					warned = true
				}
			}
			servers = append(servers, m)
		}
		if mismatch || len(servers) < expect {
			continue
		}
		existing, ok := n.peersHaveState(ctx, &servers)
		if !ok {
			continue // a peer did not answer; try again
		}
		if len(servers) < expect {
			continue // an untrusted member was dropped; wait for real ones
		}
		if existing {
			n.logger.Info("found an existing cluster; waiting to be added by its leader")
			return
		}
		// With more servers than expected, the same lowest-named set is
		// chosen by each, and only its members bootstrap.
		sort.Slice(servers, func(i, j int) bool { return servers[i].Name < servers[j].Name })
		servers = servers[:expect]
		var cfg raft.Configuration
		self := false
		for _, m := range servers {
			cfg.Servers = append(cfg.Servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(m.Name), Address: raft.ServerAddress(m.ClusterAddr)})
			self = self || m.Name == n.cfg.NodeName
		}
		if !self {
			return
		}
		n.logger.Info("bootstrapping cluster", "servers", len(cfg.Servers))
		if err := n.await(n.raft.BootstrapCluster(cfg)); err != nil {
			n.logger.Warn("bootstrap failed", "error", err)
		}
		return
	}
}

// peersHaveState asks each peer whether it has Raft state. ok is false if a
// peer could not be asked. A member whose cluster port refuses our
// credentials (or whose certificate we refuse) is not a server of this
// cluster, whatever gossip says: it is dropped from *servers, so a stranger
// on the gossip port can neither become a voter nor hold the bootstrap up.
func (n *Node) peersHaveState(ctx context.Context, servers *[]Member) (existing, ok bool) {
	kept := (*servers)[:0:0]
	defer func() { *servers = kept }()
	for _, m := range *servers {
		if m.Name == n.cfg.NodeName {
			kept = append(kept, m)
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		resp, err := n.pool.call(cctx, m.ClusterAddr, opStatus, nil, 2*time.Second)
		cancel()
		if err != nil && refusedCredentials(err) {
			n.logger.Warn("ignoring gossip member for bootstrap: its cluster port refused our credentials or we refused its certificate", "node", m.Name, "addr", m.ClusterAddr, "error", err)
			continue
		}
		kept = append(kept, m)
		if err != nil {
			n.logger.Debug("cannot ask peer for raft state", "node", m.Name, "error", err)
			return false, false
		}
		if string(resp) == "state" {
			return true, true
		}
	}
	return false, true
}

// refusedCredentials reports whether err is a definite authentication
// failure (the cluster secret, or a certificate either side refused), as
// opposed to a peer that is slow or unreachable.
func refusedCredentials(err error) bool {
	var cve *tls.CertificateVerificationError
	var alert tls.AlertError
	return errors.Is(err, ErrAuth) || errors.As(err, &cve) || errors.As(err, &alert)
}

// joinLoop joins the --join addresses at start, retrying with back-off until
// one answers, and then periodically rejoins every known peer that is not
// alive. memberlist stops probing members it declared dead, so without this
// two sides of a long partition could stay apart for ever.
func (n *Node) joinLoop(ctx context.Context) {
	self := n.gossip.addr()
	backoff := 250 * time.Millisecond
	for len(n.cfg.Join) > 0 {
		count, err := n.gossip.ml.Join(n.cfg.Join)
		if count > 0 {
			n.logger.Info("joined cluster", "contacted", count)
			break
		}
		if err != nil && keyMismatch(err.Error()) {
			n.logger.Error("join refused: "+gossipKeyHint, "addrs", n.cfg.Join, "error", err, "retry_in", backoff)
		} else {
			n.logger.Warn("join failed; retrying", "addrs", n.cfg.Join, "error", err, "retry_in", backoff)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 10*time.Second)
	}
	first := true
	for {
		wait := n.cfg.RejoinInterval/2 + rand.N(n.cfg.RejoinInterval/2+1)
		if first {
			wait = time.Second // a restarted node rejoins its remembered peers promptly
			first = false
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		if targets := n.gossip.rejoinTargets(self); len(targets) > 0 {
			if count, err := n.gossip.ml.Join(targets); count > 0 {
				n.logger.Debug("rejoined peers", "contacted", count)
			} else if err != nil {
				n.logger.Trace("rejoin found no peer", "error", err)
			}
		}
	}
}
