package cluster

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	"github.com/beaconhq/beacon/fsm"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
)

// Config is everything a Node needs. Build it from DefaultConfig.
type Config struct {
	// NodeName is this server's unique name; it is also its Raft server ID.
	NodeName string
	// DataDir holds raft.db (log and stable store), snapshots/ and peers.json.
	// Ignored when InMemory is set.
	DataDir string
	// InMemory keeps the Raft log, stable store and snapshots in memory (dev mode).
	InMemory bool
	// NoRaftJournal stores Raft log entries straight into raft.db (a bolt
	// commit, two fdatasyncs, per store) instead of through the journal
	// in front of it (one fdatasync; journal.go). Journal files an earlier
	// run left are replayed either way.
	NoRaftJournal bool

	// ClusterAddr is the bind address of the cluster port (Raft and internal RPC).
	ClusterAddr string
	// ClusterAdvertise is the address peers dial; defaults to ClusterAddr's
	// host (or Advertise) and bound port.
	ClusterAdvertise string
	// GossipAddr is memberlist's bind address (TCP and UDP).
	GossipAddr string
	// Advertise is the IP peers should use for this node when binds are 0.0.0.0.
	Advertise string
	// HTTPAdvertise is this node's public API address, published in gossip.
	HTTPAdvertise string

	// BootstrapExpect forms a new cluster once this many servers have met
	// through gossip. 0 means never bootstrap (join an existing cluster).
	BootstrapExpect int
	// Join lists gossip addresses to join at start, retried with back-off,
	// and rejoined periodically so that gossip heals after partitions.
	Join []string
	// RejoinInterval is how often known peers that are not alive are rejoined.
	RejoinInterval time.Duration

	// ClusterSecret authenticates the internal RPC between nodes; at least
	// MinClusterSecretLen bytes.
	ClusterSecret []byte
	// TLSIn and TLSOut, when set, wrap the cluster port in TLS (server and
	// client side), for Raft and RPC alike.
	TLSIn, TLSOut *tls.Config
	// GossipKey, when set, encrypts gossip (16, 24 or 32 bytes).
	GossipKey []byte

	// Raft timing. Defaults are tuned for a LAN.
	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	// MaxAppendEntries bounds how many log entries go in one batch (and one
	// fsync); larger batches raise write throughput under concurrency.
	MaxAppendEntries int
	// CommitTimeout is how long the leader waits without new entries before
	// sending followers an AppendEntries anyway; it carries the commit index,
	// so it bounds how late a follower learns that its forwarded write committed.
	CommitTimeout time.Duration
	// Raft checks every SnapshotInterval (randomly up to twice that)
	// whether SnapshotThreshold entries were appended since the last
	// snapshot, and then snapshots and truncates the log to TrailingLogs
	// entries. The log grows by a whole interval's writes between checks,
	// and raft.db (mmapped: its touched pages count in RSS) never shrinks
	// below the largest log it held: at 4,000 writes/s a 30 s interval lets
	// it reach 120,000-240,000 entries. 2 s: with the journal a fill to
	// 100,000 instances runs ~40 % faster than before it, and at 5 s
	// raft.db ended 26-30 MB (file-backed RSS up to 41 MB) against 21-23
	// MB (28-33 MB) at 2 s; a snapshot of 100,000 instances costs ~90 ms
	// of CPU (docs/benchmarks.md).
	SnapshotThreshold uint64
	SnapshotInterval  time.Duration
	TrailingLogs      uint64
	// LogSnapshotBytes and LogTrailingBytes bound the same in bytes: with
	// large entries each node lowers SnapshotThreshold and TrailingLogs to
	// what holds about this much (logbudget.go). 0: 64 MiB and 4 MiB.
	LogSnapshotBytes, LogTrailingBytes int64

	// Gossip timing. Defaults notice a dead node in under two seconds on a
	// LAN: 300ms/200ms/3 measured p50 1.39-1.44s, worst 1.73-1.81s over
	// 15 kills of a 3-node cluster, against p50 1.51-1.63s, worst
	// 1.99-2.14s with 400ms/200ms/2 in the same turns (go run
	// ./scripts/bench -phases detect -trials 15; cluster/DESIGN.md
	// "Timing"). The suspicion timeout is SuspicionMult probe intervals
	// (times log10 of the cluster's size past 10 nodes), never stretched by
	// Lifeguard's confirmations (gossip.go): 900 ms, so a stalled node is
	// still declared failed only after ~1.2 s (a failed probe plus the
	// suspicion), as with 400ms/2.
	ProbeInterval time.Duration
	ProbeTimeout  time.Duration
	SuspicionMult int

	// LeaderWait bounds how long a write waits for a leader before failing
	// with ErrNoLeader.
	LeaderWait time.Duration
	// StallAfter is how long a follower that hears the leader may leave an
	// index the leader committed unapplied before it reports its
	// replication stalled (metric, log, the API's /readyz). 0: 5s.
	StallAfter time.Duration
	// ShutdownTimeout bounds Shutdown's wait for Raft, the transport and
	// the loops; what is still running then is logged and abandoned. 0: 5s.
	ShutdownTimeout time.Duration
	// ReconcileInterval is how often the leader reconciles membership with
	// the Raft configuration and the catalog, besides reacting to events.
	ReconcileInterval time.Duration
	// ReapFailedAfter removes a server from Raft once gossip has reported it
	// failed for this long (0 disables); never below MinQuorum voters.
	ReapFailedAfter time.Duration
	MinQuorum       int

	Logger hclog.Logger
	// AuditLogger receives one line per accepted client write this node
	// commits as leader (default: Logger.Named("audit")), at Info level;
	// the line is built only when its IsInfo() reports true, so a logger
	// whose sinks take more than its own level says (an InterceptLogger)
	// must be set to Info itself.
	AuditLogger hclog.Logger
	// Metrics, when set, receives the node's Prometheus collectors
	// (docs/metrics.md). Pass a per-agent registry, never a global one.
	Metrics prometheus.Registerer
	// Version is the build's version, reported in gossip metadata
	// (default "dev").
	Version string

	// compressGossipForTest turns memberlist's message compression back on
	// (a peer of an older release compresses).
	compressGossipForTest bool

	// journalDelayForTest replaces journalFlushDelay.
	journalDelayForTest time.Duration
	// pipelineForTest turns hashicorp/raft's pipelined replication back on
	// (MaxRPCsInFlight 2), for the test that shows the stall it causes.
	pipelineForTest bool
	// legacyLogFormatForTest makes the node advertise no log format in
	// gossip, as a binary from before group entries does.
	legacyLogFormatForTest bool
	// groupsOnlyLogFormatForTest makes the node advertise logFormatGroups,
	// as a binary from before external nodes' entries does.
	groupsOnlyLogFormatForTest bool
	// wrapLogStore, when set (tests), wraps the Raft log store.
	wrapLogStore func(raft.LogStore) raft.LogStore
	// sendFilterForTest, when set, may refuse an AppendEntries or an
	// InstallSnapshot (*raft.AppendEntriesRequest, *raft.InstallSnapshotRequest)
	// this node is about to send (the error is what Raft's replication sees).
	sendFilterForTest func(target raft.ServerAddress, req any) error
}

// SetSendFilterForTest sets the filter of the AppendEntries and
// InstallSnapshot requests (*raft.AppendEntriesRequest,
// *raft.InstallSnapshotRequest) a node sends: an error refuses the request,
// and Raft's replication sees that error. Tests outside this package use it
// (through agent.Config.ClusterForTest) to cut a server off the leader's
// entries; never used outside tests.
func SetSendFilterForTest(c *Config, f func(target string, req any) error) {
	c.sendFilterForTest = func(target raft.ServerAddress, req any) error { return f(string(target), req) }
}

// CutOffForTest is a send filter (SetSendFilterForTest) that refuses every
// AppendEntries carrying entries, and every snapshot, sent to the server
// whose cluster address to holds (a string; "" or unset: none). The leader
// then commits without that server, which never receives what it commits.
// Never used outside tests.
func CutOffForTest(to *atomic.Value) func(target string, req any) error {
	return func(target string, req any) error {
		if addr, _ := to.Load().(string); addr == "" || target != addr {
			return nil
		}
		return holdBackRequest(req, true)
	}
}

// holdBackRequest is what the tests' send filters refuse: an AppendEntries
// that carries entries (heartbeats and commit notices go through) and, with
// snapshots, an InstallSnapshot.
func holdBackRequest(req any, snapshots bool) error {
	switch r := req.(type) {
	case *raft.AppendEntriesRequest:
		if len(r.Entries) > 0 {
			return errors.New("test: entries held back")
		}
	case *raft.InstallSnapshotRequest:
		if snapshots {
			return errors.New("test: snapshot held back")
		}
	}
	return nil
}

// DefaultConfig returns a configuration for a LAN cluster on the default ports.
func DefaultConfig() Config {
	return Config{
		ClusterAddr:        "0.0.0.0:8751",
		GossipAddr:         "0.0.0.0:8752",
		RejoinInterval:     15 * time.Second,
		HeartbeatTimeout:   400 * time.Millisecond,
		ElectionTimeout:    400 * time.Millisecond,
		LeaderLeaseTimeout: 400 * time.Millisecond,
		MaxAppendEntries:   256,
		CommitTimeout:      10 * time.Millisecond,
		SnapshotThreshold:  8192,
		SnapshotInterval:   2 * time.Second,
		TrailingLogs:       4096,
		ProbeInterval:      300 * time.Millisecond,
		ProbeTimeout:       200 * time.Millisecond,
		SuspicionMult:      3,
		LeaderWait:         3 * time.Second,
		ReconcileInterval:  5 * time.Second,
		MinQuorum:          3,
	}
}

// MinClusterSecretLen is the shortest cluster secret accepted: 32 bytes
// (e.g. head -c 32 /dev/urandom | base64, 44 characters).
const MinClusterSecretLen = 32

// Validate reports the first problem with c.
func (c Config) Validate() error {
	// The rule the API applies to node names: a server whose name broke it
	// could not be removed through the API (fsm.ValidateName).
	if err := fsm.ValidateName(c.NodeName); err != nil {
		return fmt.Errorf("cluster: node name %q %w", c.NodeName, err)
	}
	if !c.InMemory && c.DataDir == "" {
		return errors.New("cluster: data dir is required (or in-memory mode)")
	}
	for _, a := range []struct{ name, v string }{{"cluster address", c.ClusterAddr}, {"gossip address", c.GossipAddr}} {
		if _, _, err := net.SplitHostPort(a.v); err != nil {
			return fmt.Errorf("cluster: %s %q: %w", a.name, a.v, err)
		}
	}
	if c.Advertise != "" && net.ParseIP(c.Advertise) == nil {
		return fmt.Errorf("cluster: advertise address %q is not an IP", c.Advertise)
	}
	if c.BootstrapExpect < 0 {
		return errors.New("cluster: bootstrap-expect must be >= 0")
	}
	if len(c.ClusterSecret) < MinClusterSecretLen {
		return fmt.Errorf("cluster: the cluster secret must be at least %d bytes (got %d): it is the only key of the cluster port's handshake", MinClusterSecretLen, len(c.ClusterSecret))
	}
	if n := len(c.GossipKey); n != 0 && n != 16 && n != 24 && n != 32 {
		return fmt.Errorf("cluster: gossip key must be 16, 24 or 32 bytes, got %d", n)
	}
	if c.HeartbeatTimeout <= 0 || c.ElectionTimeout <= 0 || c.LeaderLeaseTimeout <= 0 {
		return errors.New("cluster: raft timeouts must be positive")
	}
	if c.LeaderLeaseTimeout > c.HeartbeatTimeout {
		return errors.New("cluster: leader lease timeout must not exceed the heartbeat timeout")
	}
	if c.MaxAppendEntries <= 0 || c.MaxAppendEntries > 1024 {
		return errors.New("cluster: max append entries must be in 1..1024")
	}
	if c.ProbeInterval <= 0 || c.ProbeTimeout <= 0 || c.SuspicionMult <= 0 {
		return errors.New("cluster: gossip timings must be positive")
	}
	if c.LeaderWait <= 0 || c.ReconcileInterval <= 0 || c.RejoinInterval <= 0 {
		return errors.New("cluster: leader wait, reconcile and rejoin intervals must be positive")
	}
	return nil
}
