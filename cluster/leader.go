package cluster

import (
	"context"
	"sync"
	"time"

	"github.com/beaconhq/beacon/fsm"
	"github.com/hashicorp/raft"
)

// monitorLeadership follows raft's NotifyCh (LeaderCh is lossy) and runs the
// leader loop while this node leads.
func (n *Node) monitorLeadership(ctx context.Context) {
	var cancel context.CancelFunc
	var done chan struct{}
	stop := func() {
		if cancel != nil {
			cancel()
			<-done
			cancel = nil
		}
	}
	start := func() {
		lctx, lcancel := context.WithCancel(ctx)
		cancel = lcancel
		done = make(chan struct{})
		go func() {
			defer close(done)
			n.leaderLoop(lctx)
		}()
	}
	defer stop()
	for {
		select {
		case isLeader := <-n.notifyCh:
			if !isLeader {
				if cancel != nil {
					n.logger.Info("lost leadership")
				}
				stop()
				continue
			}
			if cancel != nil {
				continue
			}
			start()
		case <-n.restartCh:
			// The catalog was replaced under the leader tasks (a restore).
			if cancel != nil && n.IsLeader() {
				n.logger.Info("restarting leader tasks")
				stop()
				start()
			}
		case <-ctx.Done():
			return
		}
	}
}

// leaderLoop runs while this node leads: a barrier so that the catalog has
// applied every earlier entry, then the registered leader tasks, then
// reconciliation of gossip membership with Raft and the catalog, on every
// membership event and periodically.
func (n *Node) leaderLoop(ctx context.Context) {
	n.leaderSince.Store(time.Now().UnixNano())
	var start time.Time
	var term uint64
	for {
		start, term = time.Now(), n.raft.CurrentTerm()
		err := n.await(n.raft.Barrier(n.cfg.LeaderWait))
		if err == nil {
			break
		}
		n.logger.Warn("leader barrier failed", "error", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
	n.readyTerm.Store(term)
	n.leaderReady.Store(true)
	// Elected by a quorum and caught up through the barrier: current as of
	// the barrier's start (not later: the process may have been paused
	// between the barrier's commit and now, and deposed meanwhile).
	n.markSynced(start, term, true)
	n.logger.Info("leader ready", "term", n.raft.CurrentTerm(), "index", n.fsm.AppliedIndex())

	var tasks sync.WaitGroup
	n.tasksMu.Lock()
	for _, fn := range n.leaderTasks {
		tasks.Add(1)
		go func() {
			defer tasks.Done()
			fn(ctx)
		}()
	}
	n.tasksMu.Unlock()

	ticker := time.NewTicker(n.cfg.ReconcileInterval)
	defer ticker.Stop()
	n.reconcile(ctx)
	for {
		select {
		case <-ctx.Done():
			n.leaderReady.Store(false)
			tasks.Wait()
			return
		case <-n.gossip.events:
			n.reconcile(ctx)
		case <-ticker.C:
			n.reconcile(ctx)
		}
	}
}

// reconcile brings the Raft configuration and the catalog's nodes table in
// line with gossip. It reads first and writes only what differs, so running
// it again is free.
func (n *Node) reconcile(ctx context.Context) {
	defer n.reconciled.Add(1)
	members := n.gossip.snapshot()
	store := n.fsm.Store()
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		n.logger.Warn("cannot read raft configuration", "error", err)
		return
	}
	inRaft := map[string]raft.Server{}
	voters := 0
	for _, s := range f.Configuration().Servers {
		inRaft[string(s.ID)] = s
		if s.Suffrage == raft.Voter {
			voters++
		}
	}
	for _, m := range members {
		if m.Role != fsm.RoleServer || m.Name == n.cfg.NodeName || ctx.Err() != nil {
			continue
		}
		srv, ok := inRaft[m.Name]
		if store.Node(m.Name).DepartedIn(m.Incarnation) {
			// It left gracefully in this incarnation (Leave recorded it
			// before asking for its removal): whatever gossip says of it
			// now, it is never added back, and if the removal did not
			// happen (a leader change in between), it is finished here.
			// Started again, it has another incarnation and is added.
			if ok {
				n.logger.Info("removing server that left", "node", m.Name, "reason", "its leave is recorded in the catalog")
				if err := n.await(n.raft.RemoveServer(raft.ServerID(m.Name), 0, 0)); err != nil {
					n.logger.Warn("cannot remove server", "node", m.Name, "error", err)
				} else if srv.Suffrage == raft.Voter {
					voters--
				}
			}
			continue
		}
		switch m.Status {
		case fsm.NodeAlive:
			if ok && string(srv.Address) == m.ClusterAddr && srv.Suffrage == raft.Voter {
				continue
			}
			if own := n.gossip.clusterID(); !ok && m.ClusterID != "" && own != "" && m.ClusterID != own {
				// A server of another cluster, let into gossip before IDs
				// were checked there: adding it would merge two catalogs.
				n.logger.Warn("not adding server to raft: it belongs to another cluster", "node", m.Name, "their_cluster_id", m.ClusterID, "cluster_id", own)
				continue
			}
			if !ok && n.badName(m) {
				continue
			}
			if !ok && m.LogFormat < logFormatGroups && n.groupsAllowed() {
				// Every server writes and reads group entries, so the log
				// may hold some: a binary from before them would stop at
				// the first (docs/operations.md, rolling upgrades).
				n.logger.Warn("not adding server to raft: its release predates group commit, whose entries this cluster's log may hold; upgrade it", "node", m.Name, "version", m.Version)
				continue
			}
			if !ok && m.LogFormat < logFormatExternal && n.formatAllowed(logFormatExternal) {
				// The same for external nodes' entries (admit).
				n.logger.Warn("not adding server to raft: its release predates external nodes' entries, which this cluster's log may hold; upgrade it", "node", m.Name, "version", m.Version)
				continue
			}
			if err := n.probePeer(ctx, m.ClusterAddr); err != nil {
				// Gossip let it in, but it cannot pass the cluster port's TLS
				// or secret handshake: a voter we cannot reach would only
				// weaken the quorum.
				n.logger.Warn("not adding server to raft: its cluster port refused our credentials or is unreachable", "node", m.Name, "addr", m.ClusterAddr, "error", err)
				continue
			}
			n.logger.Info("adding server to raft", "node", m.Name, "addr", m.ClusterAddr)
			if err := n.await(n.raft.AddVoter(raft.ServerID(m.Name), raft.ServerAddress(m.ClusterAddr), 0, 0)); err != nil {
				n.logger.Warn("cannot add server", "node", m.Name, "error", err)
			}
		case fsm.NodeLeft:
			if !ok {
				continue
			}
			n.logger.Info("removing server that left", "node", m.Name)
			if err := n.await(n.raft.RemoveServer(raft.ServerID(m.Name), 0, 0)); err != nil {
				n.logger.Warn("cannot remove server", "node", m.Name, "error", err)
			}
		case fsm.NodeFailed:
			if !ok || !reapable(n.cfg, m, srv, voters, time.Now()) {
				continue
			}
			n.logger.Info("removing server failed for too long", "node", m.Name, "failed_for", time.Since(m.Since).Round(time.Second))
			if err := n.await(n.raft.RemoveServer(raft.ServerID(m.Name), 0, 0)); err != nil {
				n.logger.Warn("cannot remove server", "node", m.Name, "error", err)
			} else if srv.Suffrage == raft.Voter {
				voters--
			}
		}
	}
	n.syncCatalogNodes(ctx, members, n.raftServers())
}

// badName reports whether m's name breaks the rule of node names
// (fsm.ValidateName). Beacon refuses to start with such a name, but a peer
// that is not Beacon, or an older release, may still announce one; it is
// never made a Raft server: the API could not remove it once it failed,
// and its name would reach operators' terminals. Logged once per name,
// escaped.
func (n *Node) badName(m Member) bool {
	err := fsm.ValidateName(m.Name)
	if err == nil {
		return false
	}
	if _, seen := n.badNames.LoadOrStore(m.Name, true); !seen {
		n.logger.Warn("not adding server to raft: its node name breaks the rule of node names", "node", fsm.EscapeControl(m.Name),
			"error", "node name "+err.Error(), "addr", m.ClusterAddr)
	}
	return true
}

// raftServers returns the IDs in the Raft configuration, or nil when it
// cannot be read.
func (n *Node) raftServers() map[string]bool {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return nil
	}
	out := map[string]bool{}
	for _, s := range f.Configuration().Servers {
		out[string(s.ID)] = true
	}
	return out
}

// trustedRole is the role recorded for a member: a member alive in gossip
// that says it is a server but is not in the Raft configuration (inRaft) is
// untrusted. A server that left or failed keeps its role: a graceful leave,
// a force-leave or a reaping took it out of Raft, not a refused credential
// (before, every server that left was listed as untrusted) — unless the
// catalog's record (prev) already says this run of it was untrusted: a
// refused member that stops was never a server.
func trustedRole(m Member, inRaft map[string]bool, prev *fsm.Node) string {
	if m.Role != fsm.RoleServer || inRaft == nil || inRaft[m.Name] {
		return m.Role
	}
	if m.Status == fsm.NodeAlive ||
		(prev != nil && prev.Role == fsm.RoleUntrusted && prev.Incarnation == m.Incarnation) {
		return fsm.RoleUntrusted
	}
	return m.Role
}

// reapable reports whether the leader removes failed server m (srv in the
// Raft configuration, which has voters voters) from Raft now: reaping is on
// (ReapFailedAfter > 0), m has been failed for at least ReapFailedAfter,
// and removing it leaves at least MinQuorum voters (a non-voter can always
// go).
func reapable(cfg Config, m Member, srv raft.Server, voters int, now time.Time) bool {
	if cfg.ReapFailedAfter <= 0 || m.Status != fsm.NodeFailed || now.Sub(m.Since) < cfg.ReapFailedAfter {
		return false
	}
	return srv.Suffrage != raft.Voter || voters-1 >= cfg.MinQuorum
}

// syncCatalogNodes writes gossip's view of the members into the catalog,
// where it drives instance health (an instance on a failed node is critical).
//
// Only alive members in the Raft configuration are alive servers, so only
// they are given checks: an alive member gossip let in whose cluster port
// refused the leader's credentials (or never answered) is recorded as
// untrusted; a server that left or failed keeps its role, with that status.
func (n *Node) syncCatalogNodes(ctx context.Context, members []Member, inRaft map[string]bool) {
	_, nodes := n.fsm.Store().Nodes(nil)
	have := make(map[string]*fsm.Node, len(nodes))
	for _, nd := range nodes {
		have[nd.Name] = nd
	}
	var req fsm.NodeUpdateRequest
	for _, m := range members {
		cur := have[m.Name]
		want := fsm.NodeState{Name: m.Name, Address: m.HTTPAddr, Role: trustedRole(m, inRaft, cur), Status: m.Status, Incarnation: m.Incarnation}
		delete(have, m.Name)
		if cur.DepartedIn(m.Incarnation) {
			continue // recorded as left by its leave; the catalog keeps that
		}
		if cur != nil && cur.Address == want.Address && cur.Role == want.Role && cur.Status == want.Status &&
			cur.Incarnation == want.Incarnation && !cur.Departed {
			continue
		}
		req.Upserts = append(req.Upserts, want)
	}
	// Nodes the catalog knows but gossip has not seen since this node took
	// office: after a grace period, they are taken to have failed.
	if time.Since(time.Unix(0, n.leaderSince.Load())) > 2*n.cfg.ReconcileInterval {
		for _, nd := range have {
			// An external node (the Consul catalog API's) is no member:
			// gossip never reports it, and it stays as registered.
			if nd.Status == fsm.NodeAlive && !nd.External() {
				req.Upserts = append(req.Upserts, fsm.NodeState{Name: nd.Name, Address: nd.Address, Role: nd.Role, Status: fsm.NodeFailed})
			}
		}
	}
	if len(req.Upserts) == 0 {
		return
	}
	req.Time = time.Now().UnixNano()
	cmd, err := fsm.Encode(fsm.NodeUpdateType, &req)
	if err != nil {
		n.logger.Error("cannot encode node update", "error", err)
		return
	}
	if _, err := n.ApplyLeader(ctx, cmd); err != nil {
		n.logger.Warn("cannot record node states", "error", err)
	}
}

// probePeer checks that this node can open an authenticated connection to
// a peer's cluster port (TLS as configured, then the cluster-secret
// handshake) and get an answer.
func (n *Node) probePeer(ctx context.Context, addr string) error {
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	_, err := n.pool.call(cctx, addr, opStatus, nil, 2*time.Second)
	return err
}
