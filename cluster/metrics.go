package cluster

import (
	"errors"
	"time"

	"github.com/beaconhq/beacon/fsm"
	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the node's Prometheus series (docs/metrics.md). They always
// exist, so the code that updates them needs no nil checks; they are
// exported only when Config.Metrics is set.
type metrics struct {
	raftApply    prometheus.Histogram
	groupSize    prometheus.Histogram
	writeLatency prometheus.Histogram
	forwarded    *prometheus.CounterVec
	connRejected *prometheus.CounterVec
	nudges       prometheus.Counter
	stalled      prometheus.Gauge
	stalls       prometheus.Counter
	diverged     prometheus.Gauge
	// readIndexBatches counts read index requests; with
	// beacon_http_requests_total it shows how many reads share one.
	readIndexBatches prometheus.Counter
	// readIndexServed counts the read indexes this node served as leader,
	// by how leadership was established: "vouched" by the asking voter
	// (readIndexVouched) or "verified" by a quorum round.
	readIndexServed *prometheus.CounterVec
}

// latencyBuckets span a local fsync (sub-millisecond) to a leader wait.
var latencyBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5}

func newMetrics() *metrics {
	m := &metrics{
		raftApply: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "beacon_raft_apply_duration_seconds",
			Help:    "Time the leader took to commit and apply one command through Raft.",
			Buckets: latencyBuckets,
		}),
		groupSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "beacon_raft_group_size",
			Help:    "Client writes committed per Raft log entry by this leader (group commit): 1 for a plain entry.",
			Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256},
		}),
		writeLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "beacon_write_duration_seconds",
			Help:    "Time a write took on the node that received it: forwarding to the leader, commit, and this node applying it.",
			Buckets: latencyBuckets,
		}),
		forwarded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "beacon_forwarded_requests_total",
			Help: "Requests this node forwarded to the leader over the internal RPC, by operation and outcome.",
		}, []string{"op", "outcome"}),
		connRejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "beacon_cluster_connections_rejected_total",
			Help: "Connections to the cluster port refused, by reason (tls: handshake or certificate; secret: cluster-secret handshake).",
		}, []string{"reason"}),
		nudges: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "beacon_raft_commit_nudges_total",
			Help: "Barriers the leader appended so that followers learn at once that a write committed (no later entry would have told them before CommitTimeout).",
		}),
		readIndexBatches: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "beacon_read_index_batches_total",
			Help: "Read indexes this node obtained for consistent reads; the reads waiting at the same moment share one.",
		}),
		readIndexServed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "beacon_read_index_served_total",
			Help: "Read indexes this node served as leader, by how its leadership was established: vouched (the asking follower and this leader are a majority, no extra round) or verified (a quorum round trip).",
		}, []string{"how"}),
		stalled: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "beacon_raft_replication_stalled",
			Help: "1 while this follower hears the leader's heartbeats but has not applied an index the leader committed more than the stall time ago (StallAfter, 5s).",
		}),
		stalls: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "beacon_raft_replication_stalls_total",
			Help: "Replication stalls this follower detected (see beacon_raft_replication_stalled).",
		}),
		diverged: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "beacon_raft_diverged",
			Help: "1 while this server holds a restore the cluster never committed (its leader lost its leadership before any follower received it): its catalog is not the cluster's; replace its data dir.",
		}),
	}
	// Series that alerts watch exist from the start, at zero.
	m.connRejected.WithLabelValues("tls")
	m.connRejected.WithLabelValues("secret")
	m.forwarded.WithLabelValues("apply", "ok")
	m.readIndexServed.WithLabelValues("vouched")
	m.readIndexServed.WithLabelValues("verified")
	return m
}

// register exports m and the node's state collector through reg.
func (n *Node) registerMetrics(reg prometheus.Registerer) error {
	m := n.metrics
	for _, c := range []prometheus.Collector{m.raftApply, m.groupSize, m.writeLatency, m.forwarded, m.connRejected, m.nudges, m.stalled, m.stalls, m.diverged, m.readIndexBatches, m.readIndexServed, nodeCollector{n}} {
		if err := reg.Register(c); err != nil {
			return errors.Join(errors.New("cluster: register metrics"), err)
		}
	}
	return nil
}

func opName(op Op) string {
	switch op {
	case opApply:
		return "apply"
	case opReadIndex:
		return "read_index"
	case opStatus:
		return "status"
	case opRemove, opRemoveAddr:
		return "remove_peer"
	case opRestore:
		return "restore"
	case opForceLeave:
		return "force_leave"
	case opLeaderCommit:
		return "leader_commit"
	case opTermAt:
		return "term_at"
	}
	return "agent"
}

// forwardOutcome labels the result of one forwarded request.
func forwardOutcome(err error) string {
	var re *RemoteError
	var de errDial
	switch {
	case err == nil:
		return "ok"
	case errors.As(err, &de):
		return "unreachable"
	case errors.Is(err, ErrConnLost):
		return "lost"
	case errors.As(err, &re):
		if re.Code == "not_leader" || re.Code == "no_leader" || re.Code == "unknown_outcome" {
			return re.Code
		}
		return "rejected"
	}
	return "error"
}

var (
	descRaftState = prometheus.NewDesc("beacon_raft_state",
		"1 for this node's current Raft state, 0 for the others.", []string{"state"}, nil)
	descRaftTerm = prometheus.NewDesc("beacon_raft_term",
		"This node's current Raft term.", nil, nil)
	descRaftCommit = prometheus.NewDesc("beacon_raft_commit_index",
		"The highest log index this node knows to be committed.", nil, nil)
	descRaftApplied = prometheus.NewDesc("beacon_raft_applied_index",
		"The last log index Raft has applied on this node (every kind of entry: equals the commit index once caught up; beacon_catalog_index is the catalog's).", nil, nil)
	descRaftLast = prometheus.NewDesc("beacon_raft_last_index",
		"The last index in this node's Raft log.", nil, nil)
	descRaftContact = prometheus.NewDesc("beacon_raft_last_contact_seconds",
		"Seconds since this node last heard from the leader (0 on the leader, -1 if never).", nil, nil)
	descRaftPeers = prometheus.NewDesc("beacon_raft_peers",
		"Servers in the Raft configuration, by suffrage.", []string{"suffrage"}, nil)
	descRaftSnapshotThreshold = prometheus.NewDesc("beacon_raft_snapshot_threshold",
		"Log entries appended since the last snapshot that make this node take one: the configured count, or fewer when the log's entries are large (its byte budget).", nil, nil)
	descRaftTrailing = prometheus.NewDesc("beacon_raft_trailing_logs",
		"Log entries this node keeps after a snapshot: the configured count, or fewer when the log's entries are large (its byte budget).", nil, nil)
	descGossip = prometheus.NewDesc("beacon_gossip_members",
		"Members gossip knows, by status.", []string{"status"}, nil)
)

// nodeCollector reads the node's Raft and gossip state at scrape time.
type nodeCollector struct{ n *Node }

// Describe implements prometheus.Collector.
func (c nodeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descRaftState, descRaftTerm, descRaftCommit, descRaftApplied, descRaftLast, descRaftContact, descRaftPeers, descRaftSnapshotThreshold, descRaftTrailing, descGossip} {
		ch <- d
	}
}

// Collect implements prometheus.Collector. It reports nothing before Start.
func (c nodeCollector) Collect(ch chan<- prometheus.Metric) {
	n := c.n
	if n.raft == nil || n.gossip == nil {
		return
	}
	st := n.Status()
	for _, s := range []raft.RaftState{raft.Follower, raft.Candidate, raft.Leader, raft.Shutdown} {
		v := 0.0
		if s.String() == st.State {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(descRaftState, prometheus.GaugeValue, v, s.String())
	}
	ch <- prometheus.MustNewConstMetric(descRaftTerm, prometheus.GaugeValue, float64(st.Term))
	ch <- prometheus.MustNewConstMetric(descRaftCommit, prometheus.GaugeValue, float64(st.CommitIndex))
	// Raft's applied index, as `operator raft servers` shows it (RaftView):
	// st.AppliedIndex is the catalog's, beacon_catalog_index.
	ch <- prometheus.MustNewConstMetric(descRaftApplied, prometheus.GaugeValue, float64(n.raft.AppliedIndex()))
	ch <- prometheus.MustNewConstMetric(descRaftLast, prometheus.GaugeValue, float64(st.LastIndex))
	lc := st.LastContact.Seconds()
	if st.LastContact == time.Duration(1<<63-1) {
		lc = -1
	}
	ch <- prometheus.MustNewConstMetric(descRaftContact, prometheus.GaugeValue, lc)
	rc := n.raft.ReloadableConfig()
	ch <- prometheus.MustNewConstMetric(descRaftSnapshotThreshold, prometheus.GaugeValue, float64(rc.SnapshotThreshold))
	ch <- prometheus.MustNewConstMetric(descRaftTrailing, prometheus.GaugeValue, float64(rc.TrailingLogs))
	peers := map[string]int{raft.Voter.String(): 0, raft.Nonvoter.String(): 0}
	for _, p := range st.Peers {
		peers[p.Suffrage]++
	}
	for s, v := range peers {
		ch <- prometheus.MustNewConstMetric(descRaftPeers, prometheus.GaugeValue, float64(v), s)
	}
	members := map[fsm.NodeStatus]int{fsm.NodeAlive: 0, fsm.NodeFailed: 0, fsm.NodeLeft: 0}
	for _, m := range n.gossip.snapshot() {
		members[m.Status]++
	}
	for s, v := range members {
		ch <- prometheus.MustNewConstMetric(descGossip, prometheus.GaugeValue, float64(v), string(s))
	}
}
