package cluster

import (
	"encoding/json"
	"fmt"
	"log"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/beaconhq/beacon/fsm"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/memberlist"
)

// Member is a cluster member as gossip sees it.
type Member struct {
	Name        string
	GossipAddr  string
	ClusterAddr string
	HTTPAddr    string
	Role        string
	// Expect is the member's bootstrap-expect setting.
	Expect  int
	Version string
	// LogFormat is the newest Raft log format the member's binary applies
	// (logFormatGroups: group entries); 0 for binaries before it.
	LogFormat int `json:"-"`
	// ClusterID is the cluster the member belongs to ("" until it knows:
	// clusterid.go).
	ClusterID string `json:"-"`
	// Incarnation identifies the member's current run: the time its node
	// started, in unix nanoseconds; 0 for a release before it. Only ever
	// compared for equality (a restart gives another).
	Incarnation uint64 `json:"-"`
	Status      fsm.NodeStatus
	// Since is when the member entered Status.
	Since time.Time
}

// memberMeta is published in gossip (memberlist caps it at 512 bytes).
type memberMeta struct {
	Role    string `json:"r"`
	Cluster string `json:"c"`
	HTTP    string `json:"h"`
	Expect  int    `json:"e,omitempty"`
	Version string `json:"v,omitempty"`
	// LogFormat: see Member.LogFormat.
	LogFormat int `json:"l,omitempty"`
	// ID: see Member.ClusterID.
	ID string `json:"i,omitempty"`
	// Incarnation: see Member.Incarnation.
	Incarnation uint64 `json:"n,omitempty"`
}

// gossip wraps memberlist: it keeps our own view of every member ever seen
// (memberlist forgets dead ones), publishes events for the leader loop, and
// remembers peers' addresses so a restarted node can rejoin by itself.
type gossip struct {
	ml   *memberlist.Memberlist
	bind string // the address memberlist bound (its port picked when 0 was asked)
	// advertised is the address memberlist advertises (addr).
	advertised string
	// meta is what NodeMeta publishes; metaMu guards it and metaVal, the
	// value it encodes (setClusterID changes it).
	metaMu  sync.Mutex
	meta    []byte
	metaVal memberMeta
	self    string
	logger  hclog.Logger
	// events receives a signal whenever membership changes. Gossip callbacks
	// only signal; the leader loop does the work.
	events chan struct{}
	// peersFile persists known gossip addresses ("" in memory mode).
	peersFile string

	mu      sync.Mutex
	members map[string]*Member
	known   map[string]struct{}
	// leaving holds members that announced a graceful leave; memberlist
	// does not tell a leave from a failure in its events.
	leaving map[string]time.Time
	saveMu  sync.Mutex // serialises writes of peersFile
}

func newGossip(cfg Config, meta memberMeta, logger hclog.Logger) (*gossip, error) {
	metaBytes, err := json.Marshal(meta)
	if err != nil {
		return nil, err
	}
	if len(metaBytes) > memberlist.MetaMaxSize {
		return nil, fmt.Errorf("cluster: gossip metadata too large (%d bytes)", len(metaBytes))
	}
	g := &gossip{
		meta: metaBytes, metaVal: meta, self: cfg.NodeName, logger: logger,
		events:  make(chan struct{}, 1),
		members: map[string]*Member{},
		known:   map[string]struct{}{},
		leaving: map[string]time.Time{},
	}
	if !cfg.InMemory {
		g.peersFile = filepath.Join(cfg.DataDir, "peers.json")
		g.loadPeers()
	}
	for _, a := range cfg.Join {
		g.known[a] = struct{}{}
	}

	host, portStr, _ := net.SplitHostPort(cfg.GossipAddr)
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("cluster: gossip port %q: %w", portStr, err)
	}
	mc := memberlist.DefaultLANConfig()
	mc.Name = cfg.NodeName
	mc.BindAddr = host
	mc.BindPort = port
	mc.AdvertisePort = port
	if cfg.Advertise != "" {
		mc.AdvertiseAddr = cfg.Advertise
	} else if ip := net.ParseIP(host); ip != nil && !ip.IsUnspecified() {
		mc.AdvertiseAddr = host
	}
	mc.ProbeInterval = cfg.ProbeInterval
	mc.ProbeTimeout = cfg.ProbeTimeout
	mc.SuspicionMult = cfg.SuspicionMult
	// A suspicion lasts SuspicionMult probe intervals from the start.
	// memberlist otherwise starts it at SuspicionMaxTimeoutMult (6) times
	// that and shortens it only as SuspicionMult-2 other members confirm
	// it: with a multiplier of 3 in a 3-node cluster, the second survivor's
	// own failed probe, so a dead node would be declared only after both
	// survivors had probed it (and a lone survivor's suspicion would last
	// 5.4 s). One multiplier keeps what a multiplier of 2 did (no
	// confirmations awaited) with a longer interval's worth of suspicion.
	mc.SuspicionMaxTimeoutMult = 1
	mc.GossipInterval = 100 * time.Millisecond
	// No compression. memberlist compresses every message it sends with
	// LZW, whose writer allocates a 64 KiB table each time: an idle node's
	// probes and acks alone made ~0.3 MB/s of garbage (half of what it
	// allocated), for messages of a few hundred bytes that LZW hardly
	// shrinks. A compressed message from a peer (an older release) is
	// still read: memberlist decodes one whatever this setting says.
	mc.EnableCompression = cfg.compressGossipForTest
	mc.PushPullInterval = 15 * time.Second
	mc.TCPTimeout = 2 * time.Second
	mc.DeadNodeReclaimTime = 10 * time.Second
	mc.SecretKey = cfg.GossipKey
	mc.Delegate = g
	mc.Events = g
	mc.Merge = g
	mc.Logger = log.New(&gossipLog{logger: logger}, "", 0)
	tr, err := newGossipNet(host, port, logger)
	if err != nil {
		return nil, err
	}
	mc.Transport = tr
	mc.BindPort, mc.AdvertisePort = tr.port, tr.port // port 0 asked for: the one bound
	ml, err := memberlist.Create(mc)
	if err != nil {
		_ = tr.Shutdown()
		return nil, fmt.Errorf("cluster: start gossip: %w", err)
	}
	g.ml = ml
	g.bind = net.JoinHostPort(host, strconv.Itoa(tr.port))
	self := ml.LocalNode()
	g.advertised = net.JoinHostPort(self.Addr.String(), strconv.Itoa(int(self.Port)))
	return g, nil
}

// addr returns the advertised gossip address: read once, after Create.
// memberlist's LocalNode is its own record, which UpdateNode (a new
// cluster ID in the metadata) rewrites under its lock: reading its fields
// later would race with that.
func (g *gossip) addr() string { return g.advertised }

func (g *gossip) update(n *memberlist.Node, status fsm.NodeStatus) {
	var meta memberMeta
	if err := json.Unmarshal(n.Meta, &meta); err != nil {
		g.logger.Warn("ignoring member with unreadable metadata", "node", n.Name, "error", err)
		return
	}
	addr := net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port)))
	g.mu.Lock()
	if status == fsm.NodeFailed {
		if t, ok := g.leaving[n.Name]; ok && time.Since(t) < time.Minute {
			status = fsm.NodeLeft
		}
	}
	if status == fsm.NodeAlive {
		delete(g.leaving, n.Name)
	}
	m := g.members[n.Name]
	if m == nil || m.Status != status {
		g.logger.Info("member "+string(status), "node", n.Name, "addr", addr)
	}
	if m == nil {
		m = &Member{Name: n.Name}
		g.members[n.Name] = m
	}
	if m.Status != status {
		m.Since = time.Now()
	}
	m.GossipAddr, m.ClusterAddr, m.HTTPAddr = addr, meta.Cluster, meta.HTTP
	m.Role, m.Expect, m.Version, m.Status = meta.Role, meta.Expect, meta.Version, status
	m.LogFormat = meta.LogFormat
	m.ClusterID = meta.ID
	m.Incarnation = meta.Incarnation
	changed := false
	if n.Name != g.self {
		switch status {
		case fsm.NodeLeft:
			if _, ok := g.known[addr]; ok {
				delete(g.known, addr)
				changed = true
			}
		default:
			if _, ok := g.known[addr]; !ok {
				g.known[addr] = struct{}{}
				changed = true
			}
		}
	}
	g.mu.Unlock()
	if changed {
		g.savePeers()
	}
	select {
	case g.events <- struct{}{}:
	default:
	}
}

// NotifyJoin implements memberlist.EventDelegate.
func (g *gossip) NotifyJoin(n *memberlist.Node) { g.update(n, fsm.NodeAlive) }

// NotifyUpdate implements memberlist.EventDelegate.
func (g *gossip) NotifyUpdate(n *memberlist.Node) { g.update(n, fsm.NodeAlive) }

// NotifyLeave implements memberlist.EventDelegate: a graceful leave (if the
// member announced it) or a failure.
func (g *gossip) NotifyLeave(n *memberlist.Node) {
	if n.Name == g.self {
		g.update(n, fsm.NodeLeft)
		return
	}
	g.update(n, fsm.NodeFailed)
}

// User messages between members (sent over TCP with SendReliable).
const (
	// leaveMsg + name: the sender is about to leave gracefully.
	leaveMsg = 'L'
	// forceLeaveMsg + name: an operator forced that failed member out.
	forceLeaveMsg = 'F'
)

// announceLeave tells every alive member, over TCP, that this node is
// about to leave, so they record it as left rather than failed.
func (g *gossip) announceLeave() {
	msg := append([]byte{leaveMsg}, g.self...)
	for _, n := range g.ml.Members() {
		if n.Name == g.self {
			continue
		}
		if err := g.ml.SendReliable(n, msg); err != nil {
			g.logger.Debug("cannot announce leave", "node", n.Name, "error", err)
		}
	}
}

// NodeMeta implements memberlist.Delegate.
func (g *gossip) NodeMeta(limit int) []byte {
	g.metaMu.Lock()
	defer g.metaMu.Unlock()
	return g.meta
}

// NotifyMsg implements memberlist.Delegate: leave and force-leave
// announcements.
func (g *gossip) NotifyMsg(b []byte) {
	if len(b) < 2 {
		return
	}
	switch b[0] {
	case leaveMsg:
		g.mu.Lock()
		g.leaving[string(b[1:])] = time.Now()
		g.mu.Unlock()
	case forceLeaveMsg:
		g.forceLeft(string(b[1:]))
	}
}

// forceLeft records a member that is not alive as left: it is no longer
// rejoined, and the leader's reconcile treats it as gone for good. A member
// that is still alive in this node's view (gossip has not noticed its
// failure yet) is recorded as leaving instead, so that the failure, when
// noticed, counts as a leave. If a force-left member comes back, memberlist
// reports it alive again.
func (g *gossip) forceLeft(name string) {
	g.mu.Lock()
	m := g.members[name]
	if m == nil || name == g.self {
		g.mu.Unlock()
		return
	}
	if m.Status == fsm.NodeAlive {
		g.leaving[name] = time.Now()
		g.mu.Unlock()
		return
	}
	if m.Status != fsm.NodeLeft {
		g.logger.Info("member left (forced)", "node", name, "addr", m.GossipAddr)
		m.Status, m.Since = fsm.NodeLeft, time.Now()
	}
	_, changed := g.known[m.GossipAddr]
	delete(g.known, m.GossipAddr)
	g.mu.Unlock()
	if changed {
		g.savePeers()
	}
	select {
	case g.events <- struct{}{}:
	default:
	}
}

// announceForceLeave tells every alive member that name was forced out.
func (g *gossip) announceForceLeave(name string) {
	msg := append([]byte{forceLeaveMsg}, name...)
	for _, n := range g.ml.Members() {
		if n.Name == g.self || n.Name == name {
			continue
		}
		if err := g.ml.SendReliable(n, msg); err != nil {
			g.logger.Warn("cannot announce force-leave", "node", n.Name, "left", name, "error", err)
		}
	}
}

// GetBroadcasts implements memberlist.Delegate.
func (g *gossip) GetBroadcasts(overhead, limit int) [][]byte { return nil }

// LocalState implements memberlist.Delegate.
func (g *gossip) LocalState(join bool) []byte { return nil }

// MergeRemoteState implements memberlist.Delegate.
func (g *gossip) MergeRemoteState(buf []byte, join bool) {}

// snapshot returns a copy of every member, sorted by name.
func (g *gossip) snapshot() []Member {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]Member, 0, len(g.members))
	for _, m := range g.members {
		out = append(out, *m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func (g *gossip) member(name string) (Member, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if m := g.members[name]; m != nil {
		return *m, true
	}
	return Member{}, false
}

// rejoinTargets returns known addresses of peers that are not alive now.
func (g *gossip) rejoinTargets(self string) []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	alive := map[string]bool{}
	for _, m := range g.members {
		if m.Status == fsm.NodeAlive {
			alive[m.GossipAddr] = true
		}
	}
	var out []string
	for a := range g.known {
		if !alive[a] && a != self {
			out = append(out, a)
		}
	}
	sort.Strings(out)
	return out
}

func (g *gossip) remember(addrs []string) {
	g.mu.Lock()
	for _, a := range addrs {
		g.known[a] = struct{}{}
	}
	g.mu.Unlock()
	g.savePeers()
}

func (g *gossip) loadPeers() {
	b, err := os.ReadFile(g.peersFile)
	if err != nil {
		return
	}
	var addrs []string
	if err := json.Unmarshal(b, &addrs); err != nil {
		g.logger.Warn("ignoring unreadable peers file", "path", g.peersFile, "error", err)
		return
	}
	for _, a := range addrs {
		g.known[a] = struct{}{}
	}
}

func (g *gossip) savePeers() {
	if g.peersFile == "" {
		return
	}
	g.saveMu.Lock()
	defer g.saveMu.Unlock()
	g.mu.Lock()
	addrs := make([]string, 0, len(g.known))
	for a := range g.known {
		addrs = append(addrs, a)
	}
	g.mu.Unlock()
	slices.Sort(addrs)
	b, _ := json.Marshal(addrs)
	tmp := g.peersFile + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		g.logger.Warn("cannot save peers", "error", err)
		return
	}
	if err := os.Rename(tmp, g.peersFile); err != nil {
		g.logger.Warn("cannot save peers", "error", err)
	}
}

// keyMismatch reports whether a memberlist error or log line says that a
// peer's gossip encryption differs from ours: another key, or encryption on
// one side only.
func keyMismatch(msg string) bool {
	for _, s := range []string{
		"No installed keys could decrypt", "no installed keys could decrypt",
		"Decrypt packet failed",
		"encryption is configured but remote state is not encrypted",
		"remote state is encrypted and encryption is not configured",
	} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

// gossipKeyHint is what an operator reads when gossip keys differ.
const gossipKeyHint = "gossip encryption key mismatch: a peer uses another --gossip-key (or none); every node needs the same key"

// gossipLog receives memberlist's log lines, each with memberlist's level
// in front ("[DEBUG] memberlist: ..."), and logs each at that level with
// the prefix taken off. A line that shows a gossip key mismatch becomes one
// clear line, at the line's level: an error for what the node that refused
// a peer logs ("[ERR] memberlist: failed to receive: no installed keys could
// decrypt ..."), debug for a failed join, which memberlist returns to the
// caller too (the joiner logs "join refused" itself). Before, the hint was
// logged as an error whatever the line's level, with memberlist's prefix
// kept in its detail ("[ERROR] ... detail=\"[DEBUG] memberlist: ...\"").
type gossipLog struct {
	logger hclog.Logger
}

func (g *gossipLog) Write(p []byte) (int, error) {
	level, msg := memberlistLevel(strings.TrimSpace(string(p)))
	if keyMismatch(msg) {
		// memberlist ends its lines with "from=ADDR" or the connection.
		g.logger.Log(level, gossipKeyHint, "detail", strings.TrimPrefix(msg, "memberlist: "))
		return len(p), nil
	}
	g.logger.Log(level, msg)
	return len(p), nil
}

// memberlistLevel splits a memberlist log line into its level, from the
// "[LEVEL]" that starts it ([TRACE], [DEBUG], [INFO], [WARN], [ERR] or
// [ERROR]), and the rest. A line without one is logged at info.
func memberlistLevel(line string) (hclog.Level, string) {
	if !strings.HasPrefix(line, "[") {
		return hclog.Info, line
	}
	tag, rest, ok := strings.Cut(line[1:], "]")
	if !ok {
		return hclog.Info, line
	}
	var level hclog.Level
	switch tag {
	case "TRACE":
		level = hclog.Trace
	case "DEBUG":
		level = hclog.Debug
	case "INFO":
		level = hclog.Info
	case "WARN":
		level = hclog.Warn
	case "ERR", "ERROR":
		level = hclog.Error
	default:
		return hclog.Info, line
	}
	return level, strings.TrimSpace(rest)
}
