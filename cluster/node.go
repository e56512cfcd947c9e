package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/beaconhq/beacon/fsm"
	"github.com/hashicorp/go-hclog"
	sockaddr "github.com/hashicorp/go-sockaddr"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"
)

// Node is one Beacon server: its Raft instance, its gossip membership, the
// internal RPC on the cluster port, and the leader loop. It is safe for
// concurrent use once Start has returned.
type Node struct {
	cfg    Config
	logger hclog.Logger
	fsm    *fsm.FSM

	mux       *mux
	rpcSrv    *rpcServer
	pool      *rpcPool
	transport *raft.NetworkTransport
	raftTrans *gapTransport // what Raft sees: transport, through the snapshot gap's bridge
	gap       *snapGap
	snaps     raft.SnapshotStore
	// trackedSnaps is snaps, with the newest snapshot known (snapgap.go).
	trackedSnaps *trackedSnaps
	raft         *raft.Raft
	logs         raft.LogStore // for findRequest
	stored       *logStored    // what the log store stored, for its byte budget (nil in memory)
	logPath      string        // raft.db as /proc/self/maps names it ("" in memory)
	once         onceCalls     // forwarded writes being applied here, by request id
	leaderObs    *raft.Observer
	// leaderCh is closed (and replaced) at every leader change Raft reports.
	leaderMu sync.Mutex
	leaderCh chan struct{}
	stall    stallDetector
	restore  restoreState // a restore whose outcome is unknown (restoremark.go)
	gossip   *gossip
	closers  []io.Closer
	mark     *commitMark // the applied index kept on disk (nil in memory)
	hasState bool
	// audit logs accepted writes that carry an Actor (see audit.go).
	audit   hclog.Logger
	metrics *metrics

	notifyCh    chan bool
	restartCh   chan struct{} // restartLeaderLoop
	restoreMu   sync.Mutex    // one restore at a time
	leaderReady atomic.Bool
	// readyTerm is the term in which this node, as leader, committed the
	// barrier that made it ready (see leaderLoop); vouched read indexes
	// are served only in that term (readIndexVouched).
	readyTerm   atomic.Uint64
	leaderSince atomic.Int64
	// reconciled counts the reconcile passes this node has finished.
	reconciled  atomic.Uint64
	tasksMu     sync.Mutex
	leaderTasks []func(context.Context)
	// badNames holds the member names already logged as breaking the
	// rule of node names (badName).
	badNames sync.Map

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	// stopping is closed when Shutdown begins; it ends every wait on a
	// Raft future (await).
	stopping chan struct{}

	fresh freshness
	nudge *commitNudge
	group *grouper // group commit of the writes this node leads (group.go)
	reads readBatcher

	left atomic.Bool
	// incarnation identifies this run of the node (Member.Incarnation);
	// set by Start.
	incarnation uint64
	// leaveRemovedForTest, when set, runs in Leave once the Raft
	// configuration without this node is committed, before gossip hears
	// of the leave.
	leaveRemovedForTest func()
	shutdownOnce        sync.Once
	stopStep            atomic.Value // string: what stop is doing
	shutdownErr         error
}

// New checks cfg and returns a Node that is not yet running.
func New(cfg Config, f *fsm.FSM) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	logger := cfg.Logger
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	n := &Node{
		cfg: cfg, logger: logger, fsm: f, notifyCh: make(chan bool, 16), restartCh: make(chan struct{}, 1),
		rpcSrv:   newRPCServer(logger.Named("rpc")),
		audit:    auditLogger(cfg, logger),
		metrics:  newMetrics(),
		nudge:    newCommitNudge(),
		leaderCh: make(chan struct{}),
		stopping: make(chan struct{}),
	}
	n.group = newGrouper(n)
	if cfg.Metrics != nil {
		if err := n.registerMetrics(cfg.Metrics); err != nil {
			return nil, err
		}
	}
	return n, nil
}

// OnLeader registers fn to run, in its own goroutine, each time this node
// becomes leader and has applied everything before its term. fn's context is
// cancelled when leadership is lost or the node shuts down, and the node
// waits for fn to return. Register tasks before Start.
func (n *Node) OnLeader(fn func(ctx context.Context)) {
	n.tasksMu.Lock()
	n.leaderTasks = append(n.leaderTasks, fn)
	n.tasksMu.Unlock()
}

// HandleRPC serves op (16 to 127) on the internal RPC. Register before
// Start. A request sent by CallLeader with an Actor in its context reaches
// fn with that Actor in ctx (see ActorFrom).
func (n *Node) HandleRPC(op Op, fn func(ctx context.Context, payload []byte) ([]byte, error)) {
	if op < 16 || op >= opWithActor {
		panic("cluster: ops below 16 are reserved and ops from 128 up are not valid")
	}
	n.rpcSrv.handle(op, fn)
}

// Name returns this node's name (its Raft server ID).
func (n *Node) Name() string { return n.cfg.NodeName }

// ClusterAddr returns the advertised cluster (Raft and RPC) address.
func (n *Node) ClusterAddr() string { return n.mux.advertise.String() }

// GossipAddr returns the advertised gossip address.
func (n *Node) GossipAddr() string { return n.gossip.addr() }

// ClusterBindAddr returns the address the cluster port's listener bound
// (with the port the kernel picked when port 0 was asked for).
func (n *Node) ClusterBindAddr() string { return n.mux.ln.Addr().String() }

// GossipBindAddr returns the address gossip bound (TCP and UDP).
func (n *Node) GossipBindAddr() string { return n.gossip.bind }

// Start opens the stores and listeners and starts Raft, gossip and the
// background loops. On error everything started is stopped again.
func (n *Node) Start(ctx context.Context) (err error) {
	n.ctx, n.cancel = context.WithCancel(context.Background())
	defer func() {
		if err != nil {
			n.cancel()
			n.stop()
		}
	}()
	n.rpcSrv.ctx = n.ctx
	dir := n.cfg.DataDir
	if n.cfg.InMemory {
		dir = ""
	}
	if n.incarnation, err = nextIncarnation(dir); err != nil {
		return err
	}
	if err := n.startListener(); err != nil {
		return err
	}
	n.pool = &rpcPool{dial: n.mux.dial, peers: map[string]*rpcClient{}}
	n.registerRPCs()
	if err := n.startRaft(); err != nil {
		return err
	}
	// Serve the cluster port only once Raft exists: the RPC handlers use it,
	// and peers that still take a restarted node for the leader send it
	// forwarded writes and read-index requests the moment it listens.
	// Connections wait in the listen backlog until then.
	n.mux.serve(n.rpcSrv.serveConn)
	meta := memberMeta{
		Role: fsm.RoleServer, Cluster: n.ClusterAddr(), HTTP: n.cfg.HTTPAdvertise,
		Expect: n.cfg.BootstrapExpect, Version: n.version(), LogFormat: logFormatExternal,
		Incarnation: n.incarnation,
	}
	if n.cfg.legacyLogFormatForTest {
		meta.LogFormat = 0
	}
	if n.cfg.groupsOnlyLogFormatForTest {
		meta.LogFormat = logFormatGroups
	}
	if !n.cfg.InMemory {
		if meta.ID, err = loadClusterID(n.cfg.DataDir); err != nil {
			return err
		}
	}
	g, err := newGossip(n.cfg, meta, n.logger.Named("gossip"))
	if err != nil {
		return err
	}
	n.gossip = g
	n.fresh.tick = time.Now()
	n.goLoop(n.monitorLeadership)
	n.goLoop(n.syncLoop)
	n.goLoop(n.bootstrapLoop)
	n.goLoop(n.joinLoop)
	n.goLoop(n.nudgeLoop)
	n.goLoop(n.stallLoop)
	n.goLoop(n.logBudgetLoop)
	n.goLoop(n.clusterIDLoop)
	return nil
}

func (n *Node) goLoop(fn func(context.Context)) {
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		fn(n.ctx)
	}()
}

func (n *Node) startListener() error {
	ln, err := net.Listen("tcp", n.cfg.ClusterAddr)
	if err != nil {
		return fmt.Errorf("cluster: listen on %s: %w", n.cfg.ClusterAddr, err)
	}
	adv, err := advertiseAddr(n.cfg.ClusterAdvertise, n.cfg.Advertise, ln.Addr().(*net.TCPAddr))
	if err != nil {
		ln.Close()
		return err
	}
	n.mux = newMux(ln, adv, n.cfg.TLSIn, n.cfg.TLSOut, n.cfg.ClusterSecret, n.logger.Named("mux"), n.metrics)
	return nil
}

// advertiseAddr picks the address peers use for the cluster port: the
// explicit one, else the advertise IP or the bound IP with the bound port,
// else a private IP of this host. 0.0.0.0 is never advertised.
func advertiseAddr(explicit, advertiseIP string, bound *net.TCPAddr) (net.Addr, error) {
	if explicit != "" {
		return net.ResolveTCPAddr("tcp", explicit)
	}
	ip := bound.IP
	if advertiseIP != "" {
		ip = net.ParseIP(advertiseIP)
	}
	if ip == nil || ip.IsUnspecified() {
		priv, err := sockaddr.GetPrivateIP()
		if err != nil || priv == "" {
			return nil, errors.New("cluster: no private IP to advertise; set --advertise")
		}
		ip = net.ParseIP(priv)
	}
	return &net.TCPAddr{IP: ip, Port: bound.Port}, nil
}

func (n *Node) startRaft() error {
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(n.cfg.NodeName)
	rc.HeartbeatTimeout = n.cfg.HeartbeatTimeout
	rc.ElectionTimeout = n.cfg.ElectionTimeout
	rc.LeaderLeaseTimeout = n.cfg.LeaderLeaseTimeout
	rc.MaxAppendEntries = n.cfg.MaxAppendEntries
	// No BatchApplyCh: with a buffered applyCh, raft.ApplyLog after (or
	// racing) Shutdown may leave its future in a buffer nobody reads, and
	// that future is never answered (its Error blocks for ever): the
	// grouper's commit would hold its only slot and every queued write
	// would wait for ever (TestWritesQueuedAtShutdownAreAnswered). The
	// grouper batches the leader's writes itself.
	rc.BatchApplyCh = false
	rc.CommitTimeout = n.cfg.CommitTimeout
	rc.SnapshotThreshold = n.cfg.SnapshotThreshold
	rc.SnapshotInterval = n.cfg.SnapshotInterval
	rc.TrailingLogs = n.cfg.TrailingLogs
	rc.NotifyCh = n.notifyCh
	rc.Logger = n.logger.Named("raft")
	rc.NoLegacyTelemetry = true

	var logs raft.LogStore
	var stable raft.StableStore
	var snaps raft.SnapshotStore
	if n.cfg.InMemory {
		mem := raft.NewInmemStore()
		logs, stable, snaps = mem, mem, raft.NewInmemSnapshotStore()
	} else {
		if err := os.MkdirAll(n.cfg.DataDir, 0o700); err != nil {
			return fmt.Errorf("cluster: data dir: %w", err)
		}
		if err := checkBoltFile(filepath.Join(n.cfg.DataDir, "raft.db")); err != nil {
			return err
		}
		bolt, err := raftboltdb.New(raftboltdb.Options{
			Path: filepath.Join(n.cfg.DataDir, "raft.db"),
			BoltOptions: &bbolt.Options{
				Timeout:        time.Second,
				NoFreelistSync: true,
				FreelistType:   bbolt.FreelistMapType,
			},
		})
		if errors.Is(err, bbolt.ErrTimeout) {
			// bolt waited a second for its file lock: another agent on
			// this data dir holds raft.db. "timeout" alone said nothing.
			return fmt.Errorf("cluster: data dir %s is in use by another process (is another agent running with this --data-dir?): raft.db stayed locked: %w", n.cfg.DataDir, err)
		}
		if err != nil {
			return fmt.Errorf("cluster: open raft log %s: %w", n.cfg.DataDir, err)
		}
		store, journal, err := openJournal(n.cfg.DataDir, bolt, !n.cfg.NoRaftJournal, n.cfg.journalDelayForTest, n.logger)
		if err != nil {
			bolt.Close()
			return err
		}
		if journal != nil {
			n.closers = append(n.closers, journal) // before bolt: it stores what it holds into bolt
		}
		n.closers = append(n.closers, bolt)
		cached, err := newLogCache(store, logCacheEntries, logCacheBytes)
		if err != nil {
			return err
		}
		n.stored = &logStored{}
		n.logPath = resolvedPath(filepath.Join(n.cfg.DataDir, "raft.db"))
		cached.stored = n.stored
		mark, err := openCommitMark(n.cfg.DataDir, n.fsm.AppliedIndex)
		if err != nil {
			return err
		}
		// Closed before the journal and bolt (n.closers runs in order),
		// once Raft is down: its last mark is the catalog's final index.
		n.closers = append([]io.Closer{mark}, n.closers...)
		cached.mark = mark
		n.mark = mark
		logs, stable = cached, bolt
		fss, err := raft.NewFileSnapshotStoreWithLogger(n.cfg.DataDir, 2, n.logger.Named("snapshot"))
		if err != nil {
			return fmt.Errorf("cluster: snapshot store: %w", err)
		}
		snaps = fss
	}
	if n.cfg.wrapLogStore != nil {
		logs = n.cfg.wrapLogStore(logs)
	}
	n.logs = logs
	n.trackedSnaps = newTrackedSnaps(snaps)
	snaps = n.trackedSnaps
	n.snaps = snaps
	if !n.cfg.InMemory {
		idx, term, err := readRestoreMark(n.cfg.DataDir)
		if err != nil {
			return fmt.Errorf("%w (it records a restore of unknown outcome: if this server's catalog may hold a restore the cluster did not commit, move the data dir away; else remove the file)", err)
		}
		if idx > 0 {
			n.logger.Warn("a restore's outcome is not known yet: this server asks the leader whether it was committed", "restore_index", idx)
		}
		n.restore.pending, n.restore.term = idx, term
	}
	has, err := raft.HasExistingState(logs, stable, snaps)
	if err != nil {
		return fmt.Errorf("cluster: read raft state: %w", err)
	}
	n.hasState = has
	inFlight := 1 // no pipelining: see DESIGN.md, "Replication without pipelining"
	if n.cfg.pipelineForTest {
		inFlight = 2
	}
	n.transport = raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:          raftLayer{n.mux},
		MaxPool:         4,
		Timeout:         5 * time.Second,
		MaxRPCsInFlight: inFlight,
		Logger:          quietClose{n.logger.Named("transport")},
	})
	if !n.cfg.InMemory {
		if err := n.recoverIfAsked(rc, logs, stable, snaps); err != nil {
			n.transport.Close()
			return err
		}
		// What this server applied before it stopped was committed: Raft
		// restores it from a snapshot at the mark instead of waiting for a
		// leader to say so (commitmark.go).
		if m := n.mark.get(); m > 0 {
			at, err := catchUpToMark(m, fsm.New(n.logger.Named("catch-up")), logs, snaps, n.transport)
			if err != nil {
				n.transport.Close()
				return fmt.Errorf("cluster: apply the log up to index %d, which this server had applied before it stopped: %w", m, err)
			}
			if at > 0 {
				n.logger.Info("took a raft snapshot at the index this server had applied before it stopped", "index", at)
			}
		}
	}
	// Raft sees the log store and the transport through the snapshot gap's
	// bridge (snapgap.go).
	gap := newSnapGap(logs, snaps, n.logger.Named("raft"))
	gap.tracked, gap.onConflict = n.trackedSnaps, n.divergeFromConflict
	n.gap = gap
	n.raftTrans = newGapTransport(n.transport, gap, n.cfg.sendFilterForTest)
	r, err := raft.NewRaft(rc, n.fsm, snapGapStore{LogStore: logs, g: gap}, stable, snaps, n.raftTrans)
	if err != nil {
		n.raftTrans.Close()
		return fmt.Errorf("cluster: start raft: %w", err)
	}
	n.raft = r
	gap.raft.Store(r)
	n.watchLeader()
	if n.cfg.BootstrapExpect == 1 && !has {
		f := r.BootstrapCluster(raft.Configuration{Servers: []raft.Server{{
			Suffrage: raft.Voter, ID: rc.LocalID, Address: raft.ServerAddress(n.ClusterAddr()),
		}}})
		if err := n.await(f); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
			return fmt.Errorf("cluster: bootstrap: %w", err)
		}
		n.hasState = true
	}
	return nil
}

// defaultShutdownTimeout is Config.ShutdownTimeout's default.
const defaultShutdownTimeout = 5 * time.Second

// Shutdown stops the node: gossip first (peers see it leave or fail), then
// the loops, Raft, the transport and the stores. It is safe to call twice.
// It returns within Config.ShutdownTimeout (or when ctx ends, if sooner):
// a step still running then (Raft waiting on a stuck replication goroutine,
// say) is logged and abandoned, with the stores it would have closed after
// it left open, and Shutdown returns an error naming it.
func (n *Node) Shutdown(ctx context.Context) error {
	n.shutdownOnce.Do(func() {
		if n.cancel != nil {
			n.cancel()
		}
		close(n.stopping)
		timeout := n.cfg.ShutdownTimeout
		if timeout <= 0 {
			timeout = defaultShutdownTimeout
		}
		done := make(chan error, 1)
		go func() { done <- n.stop() }()
		t := time.NewTimer(timeout)
		defer t.Stop()
		select {
		case n.shutdownErr = <-done:
		case <-t.C:
			n.shutdownErr = n.abandon(timeout)
		case <-ctx.Done():
			n.shutdownErr = n.abandon(timeout)
		}
	})
	return n.shutdownErr
}

// abandon reports a shutdown that did not finish.
func (n *Node) abandon(timeout time.Duration) error {
	step, _ := n.stopStep.Load().(string)
	n.logger.Error("shutdown did not finish in time; abandoning it (the goroutines of this step and the stores closed after it stay open)",
		"step", step, "timeout", timeout)
	return fmt.Errorf("cluster: shutdown abandoned after %s while %s", timeout, step)
}

func (n *Node) stop() error {
	var errs []error
	n.stopStep.Store("stopping gossip")
	if n.gossip != nil {
		// Without a prior Leave, peers see this node fail rather than leave.
		if err := n.gossip.ml.Shutdown(); err != nil {
			errs = append(errs, err)
		}
	}
	n.stopStep.Store("waiting for the node's loops")
	n.wg.Wait()
	if n.raft != nil {
		n.stopStep.Store("stopping raft (replication and apply goroutines)")
		if n.leaderObs != nil {
			n.raft.DeregisterObserver(n.leaderObs)
		}
		if err := n.raft.Shutdown().Error(); err != nil {
			errs = append(errs, err)
		}
		n.group.stop()
	}
	n.stopStep.Store("closing connections")
	if n.pool != nil {
		n.pool.close()
	}
	if n.rpcSrv != nil {
		n.rpcSrv.closeAll()
	}
	if n.raftTrans != nil {
		n.raftTrans.Close()
	} else if n.transport != nil {
		n.transport.Close()
	} else if n.mux != nil {
		n.mux.close()
	}
	if n.mux != nil {
		n.mux.wait()
	}
	n.stopStep.Store("closing the stores")
	for _, c := range n.closers {
		if err := c.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Status is a point-in-time view of this node's Raft state.
type Status struct {
	Node        string
	State       string
	Leader      string
	LeaderAddr  string
	Term        uint64
	CommitIndex uint64
	// AppliedIndex is the last index this node's catalog has applied.
	AppliedIndex uint64
	LastIndex    uint64
	// LastContact is how long ago this node heard from the leader (0 on the leader).
	LastContact time.Duration
	Peers       []Peer
}

// Peer is one server in the Raft configuration.
type Peer struct {
	ID       string
	Address  string
	Suffrage string
	Leader   bool
}

// Status reports this node's Raft state and the Raft configuration.
func (n *Node) Status() Status {
	addr, id := n.raft.LeaderWithID()
	s := Status{
		Node: n.cfg.NodeName, State: n.raft.State().String(),
		Leader: string(id), LeaderAddr: string(addr),
		Term: n.raft.CurrentTerm(), CommitIndex: n.raft.CommitIndex(),
		AppliedIndex: n.fsm.AppliedIndex(), LastIndex: n.raft.LastIndex(),
		LastContact: n.LastContact(),
	}
	if f := n.raft.GetConfiguration(); f.Error() == nil {
		for _, srv := range f.Configuration().Servers {
			s.Peers = append(s.Peers, Peer{
				ID: string(srv.ID), Address: string(srv.Address),
				Suffrage: srv.Suffrage.String(), Leader: srv.ID == id,
			})
		}
	}
	return s
}

// IsLeader reports whether this node is the Raft leader.
func (n *Node) IsLeader() bool { return n.raft.State() == raft.Leader }

// KnownLeader reports whether this node knows of a current leader.
func (n *Node) KnownLeader() bool {
	addr, _ := n.raft.LeaderWithID()
	return addr != ""
}

// LastIndex returns the index of the last entry in this node's Raft log,
// committed or not.
func (n *Node) LastIndex() uint64 { return n.raft.LastIndex() }

// Members returns every member gossip has seen, sorted by name.
// An alive member that says it is a server but is not in the Raft
// configuration is listed with the role "untrusted" (fsm.RoleUntrusted);
// one that left or failed keeps its role, unless the catalog recorded this
// run of it as untrusted. A member whose
// graceful leave the catalog records (for its current incarnation) is
// listed as left, even where gossip has not heard of the leave (a server
// that restarted meanwhile sees it failed) or not yet.
func (n *Node) Members() []Member {
	ms := n.gossip.snapshot()
	inRaft := n.raftServers()
	store := n.fsm.Store()
	for i := range ms {
		rec := store.Node(ms[i].Name)
		if ms[i].Status != fsm.NodeLeft && rec.DepartedIn(ms[i].Incarnation) {
			ms[i].Status = fsm.NodeLeft
		}
		ms[i].Role = trustedRole(ms[i], inRaft, rec)
	}
	return ms
}

// Join asks gossip to contact the given addresses and remembers them for
// rejoining. It returns how many were contacted.
func (n *Node) Join(addrs []string) (int, error) {
	count, err := n.gossip.ml.Join(addrs)
	if count > 0 {
		n.gossip.remember(addrs)
	}
	if err != nil && count == 0 {
		err = flattenJoinError(err)
		if strings.Contains(err.Error(), ErrForeignCluster.Error()) {
			return 0, fmt.Errorf("cluster: join %v: %w (%w): %s", addrs, ErrForeignCluster, fsm.ErrConflict, err)
		}
		if keyMismatch(err.Error()) {
			return 0, fmt.Errorf("cluster: join %v: %s: %w", addrs, gossipKeyHint, err)
		}
		return 0, fmt.Errorf("cluster: join %v: %w", addrs, err)
	}
	return count, nil
}

// Leave leaves the cluster gracefully: a leader first hands leadership to a
// peer; the node then asks the leader to remove it from Raft and announces
// its departure through gossip. The caller shuts the node down afterwards.
func (n *Node) Leave(ctx context.Context) error {
	voters, aliveAfter := 0, 0
	var down []string
	if f := n.raft.GetConfiguration(); f.Error() == nil {
		for _, s := range f.Configuration().Servers {
			if s.Suffrage != raft.Voter {
				continue
			}
			voters++
			if string(s.ID) == n.cfg.NodeName {
				continue
			}
			// Down only when gossip says so: a server just restarted has
			// not heard of every peer yet, and not knowing is no reason to
			// refuse.
			if m, ok := n.gossip.member(string(s.ID)); ok && m.Status != fsm.NodeAlive {
				down = append(down, string(s.ID))
			} else {
				aliveAfter++
			}
		}
	}
	// Leaving takes this server's vote away. With another voter down, the
	// voters left may be too few to elect a leader: the cluster would stop
	// taking writes until the dead one came back (QA took a 3-node cluster
	// down so, with one server dead and a leave on a healthy one). Refuse;
	// the operator removes the dead server first (force-leave).
	if after := voters - 1; after > 0 && aliveAfter < after/2+1 {
		return fmt.Errorf("cluster: leave refused: without this server the Raft configuration keeps %d voters, of which only %d are alive (down: %s), short of the %d a quorum needs; remove the dead servers first (beacon force-leave NODE) or bring them back: %w",
			after, aliveAfter, strings.Join(down, ", "), after/2+1, fsm.ErrConflict)
	}
	n.left.Store(true)
	if voters > 1 {
		if n.IsLeader() {
			if err := n.await(n.raft.LeadershipTransfer()); err != nil {
				n.logger.Warn("leadership transfer before leave failed", "error", err)
			}
		}
		if n.IsLeader() {
			// Nothing is changed yet: the leader cannot remove itself.
			return fmt.Errorf("cluster: leave refused: this server still leads (the leadership transfer to a peer did not happen); try again: %w", fsm.ErrConflict)
		}
		// The departure goes into the catalog before the removal: whichever
		// server leads next, its reconcile reads it there and does not add
		// this server back while gossip still shows it alive (or failed
		// rather than left). A restart brings another incarnation, which
		// the leader adds as it would any server.
		if err := n.recordDeparture(ctx); err != nil {
			return fmt.Errorf("cluster: leave: record the departure: %w", err)
		}
		if _, err := n.CallLeader(ctx, opRemove, []byte(n.cfg.NodeName)); err != nil && !errors.Is(err, fsm.ErrNotFound) {
			// ErrNotFound: not a Raft peer any more (a leave tried again
			// after one that failed past this point, or a leader that
			// finished it from the departure).
			return fmt.Errorf("cluster: leave: remove from raft: %w", err)
		}
		if n.leaveRemovedForTest != nil {
			n.leaveRemovedForTest()
		}
	}
	n.gossip.announceLeave()
	if err := n.gossip.ml.Leave(5 * time.Second); err != nil {
		return fmt.Errorf("cluster: leave: gossip: %w", err)
	}
	n.logger.Info("left the cluster")
	return nil
}

// recordDeparture writes this node's graceful leave into the catalog's
// nodes table, through the leader: left, with this run's incarnation, as a
// departure (fsm.NodeState.Departed).
func (n *Node) recordDeparture(ctx context.Context) error {
	cmd, err := fsm.Encode(fsm.NodeUpdateType, &fsm.NodeUpdateRequest{
		Upserts: []fsm.NodeState{{
			Name: n.cfg.NodeName, Address: n.cfg.HTTPAdvertise, Role: fsm.RoleServer, Status: fsm.NodeLeft,
			Incarnation: n.incarnation, Departed: true,
		}},
		Time: time.Now().UnixNano(),
	})
	if err != nil {
		return err
	}
	// Committed by the leader is what the leave needs (the removal that
	// follows runs there); this server's own apply is not waited for.
	_, err = n.ApplyAcked(ctx, cmd)
	return err
}

// RemovePeer removes a server from the Raft configuration (through the
// leader). Use it for a server that is gone for good. id is taken as it is:
// a server whose name breaks the rule of node names (an older release's, or
// one added before the rule) can still be removed.
func (n *Node) RemovePeer(ctx context.Context, id string) error {
	_, err := n.CallLeader(ctx, opRemove, []byte(id))
	return err
}

// opRemoveAddr removes the server that has a cluster address.
const opRemoveAddr Op = 10

// RemovePeerByAddress removes the server whose cluster address is addr from
// the Raft configuration (through the leader) and returns its ID, as Raft
// holds it. It is how an operator removes a server whose ID cannot be typed
// (one with control characters, from before the rule of node names). A
// leader of an older release answers "unknown rpc op".
func (n *Node) RemovePeerByAddress(ctx context.Context, addr string) (string, error) {
	resp, err := n.CallLeader(ctx, opRemoveAddr, []byte(addr))
	if err != nil {
		return "", err
	}
	return string(resp), nil
}

// removePeerLocal removes server id from the Raft configuration, on the
// leader.
func (n *Node) removePeerLocal(ctx context.Context, id raft.ServerID) error {
	if id == raft.ServerID(n.cfg.NodeName) {
		return errors.New("cluster: the leader cannot remove itself; transfer leadership first")
	}
	f := n.raft.RemoveServer(id, 0, 0)
	if err := n.await(f); err != nil {
		return err
	}
	// The ID is escaped: it may be a name from before the rule of node
	// names, with terminal escapes in it.
	n.logger.Info("removed server from raft", "node", fsm.EscapeControl(string(id)))
	n.auditRemove(ctx, string(id), f.Index())
	return nil
}

// peerByAddress returns the ID of the server whose address is addr.
func (n *Node) peerByAddress(addr raft.ServerAddress) (raft.ServerID, error) {
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return "", err
	}
	for _, s := range f.Configuration().Servers {
		if s.Address == addr { // Raft refuses two servers with one address
			return s.ID, nil
		}
	}
	return "", &fsm.RejectError{Kind: fsm.ErrNotFound,
		Msg: fmt.Sprintf("cluster: no Raft peer has the address %q (beacon operator raft list-peers shows them)", string(addr))}
}

// AddVoterForTest adds a voter to the Raft configuration as it is, id and
// address unchecked, on the leader: how tests outside this package put in a
// server that a release from before the rule of node names could have added
// (the leader adds only members whose name follows it). Never used outside
// tests.
func (n *Node) AddVoterForTest(id, addr string) error {
	if !n.IsLeader() {
		return ErrNotLeader
	}
	return n.await(n.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(addr), 0, 0))
}

// isPeer reports whether id is in the Raft configuration.
func (n *Node) isPeer(id raft.ServerID) bool {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return true // let RemoveServer decide
	}
	for _, s := range f.Configuration().Servers {
		if s.ID == id {
			return true
		}
	}
	return false
}

func (n *Node) registerRPCs() {
	n.rpcSrv.handle(opApply, func(ctx context.Context, p []byte) ([]byte, error) {
		idx, err := n.applyLocal(ctx, p)
		return appendIndex(nil, idx), err
	})
	n.rpcSrv.handle(opApplyOnce, func(ctx context.Context, p []byte) ([]byte, error) {
		id, term, low, resend, cmd, err := decodeOnce(p)
		if err != nil {
			return nil, err
		}
		idx, err := n.applyOnceLocal(ctx, id, term, low, resend, cmd)
		return appendIndex(nil, idx), err
	})
	n.rpcSrv.handle(opTermAt, func(ctx context.Context, p []byte) ([]byte, error) {
		return n.termAtLocal(p)
	})
	n.rpcSrv.handle(opLeaderCommit, func(ctx context.Context, _ []byte) ([]byte, error) {
		if n.raft.State() != raft.Leader {
			return nil, ErrNotLeader
		}
		return appendIndex(nil, n.raft.CommitIndex()), nil
	})
	n.rpcSrv.handle(opReadIndex, func(ctx context.Context, p []byte) ([]byte, error) {
		idx, err := n.serveReadIndex(ctx, p)
		return appendIndex(nil, idx), err
	})
	n.rpcSrv.handle(opStatus, func(ctx context.Context, _ []byte) ([]byte, error) {
		if n.raft.LastIndex() > 0 || n.hasPeers() {
			return []byte("state"), nil
		}
		return []byte("empty"), nil
	})
	n.rpcSrv.handle(opRemove, func(ctx context.Context, p []byte) ([]byte, error) {
		if !n.IsLeader() {
			return nil, ErrNotLeader
		}
		id := raft.ServerID(p)
		if id != raft.ServerID(n.cfg.NodeName) && !n.isPeer(id) {
			// Raft would append a configuration that changes nothing and
			// report success; an operator who typed a wrong ID must hear it.
			return nil, &fsm.RejectError{Kind: fsm.ErrNotFound, Msg: fmt.Sprintf("cluster: %q is not a Raft peer (beacon operator raft list-peers shows them)", id)}
		}
		return nil, n.removePeerLocal(ctx, id)
	})
	n.rpcSrv.handle(opRemoveAddr, func(ctx context.Context, p []byte) ([]byte, error) {
		if !n.IsLeader() {
			return nil, ErrNotLeader
		}
		id, err := n.peerByAddress(raft.ServerAddress(p))
		if err != nil {
			return nil, err
		}
		if err := n.removePeerLocal(ctx, id); err != nil {
			return nil, err
		}
		return []byte(id), nil
	})
	n.rpcSrv.handle(opRaftView, n.serveRaftView)
	n.rpcSrv.handle(opRestore, n.restoreLocal)
	n.rpcSrv.handle(opForceLeave, func(ctx context.Context, p []byte) ([]byte, error) {
		return n.forceLeaveLocal(ctx, string(p))
	})
}

func (n *Node) hasPeers() bool {
	f := n.raft.GetConfiguration()
	return f.Error() == nil && len(f.Configuration().Servers) > 0
}

// version is the build version reported in gossip metadata.
func (n *Node) version() string {
	if n.cfg.Version == "" {
		return "dev"
	}
	return n.cfg.Version
}
