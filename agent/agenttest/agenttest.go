// Package agenttest starts real Beacon agents in-process on loopback for
// tests: real Raft over TCP, raft-boltdb files in t.TempDir(), real
// memberlist gossip and real HTTP. Every port is bound by the component
// that uses it (port 0) and read back from it, never picked beforehand. Logs
// go to t.Log, so they show only when a test fails.
package agenttest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/beaconhq/beacon/agent"
	"github.com/beaconhq/beacon/api/client"
	"github.com/beaconhq/beacon/fsm/fsmtest/wait"
	"github.com/hashicorp/go-hclog"
)

// Cluster is a set of in-process agents. Its methods must be called from the
// test goroutine.
type Cluster struct {
	t      testing.TB
	nodes  []*Node
	secret string
	logs   *testLog
	// root holds the agents' data dirs (dataDir); "" for a Cluster not made by New.
	root   string
	mutate func(*agent.Config)
	// clientCfg adjusts the API clients handed out (a token, TLS).
	clientCfg func(*client.Config)
}

// Node is one agent of the cluster, with the config it runs with. The
// bound ports are kept so a restart comes back at the same addresses.
type Node struct {
	Name   string
	Config agent.Config
	Agent  *agent.Agent
	client *client.Client
}

// Option changes how a cluster is started.
type Option func(*Cluster)

// WithConfig lets a test adjust every agent's configuration before start.
func WithConfig(fn func(*agent.Config)) Option { return func(c *Cluster) { c.mutate = fn } }

// WithClient lets a test adjust the configuration of the API clients the
// cluster hands out (Client, Node.Client), e.g. to add a token or TLS. The
// addresses it receives are host:port.
func WithClient(fn func(*client.Config)) Option { return func(c *Cluster) { c.clientCfg = fn } }

// WithLogWriter copies every agent's log lines to w as well as to t.Log
// (for tests that read the logs). w must be safe for concurrent use.
func WithLogWriter(w io.Writer) Option { return func(c *Cluster) { c.logs.tee = w } }

// New starts n agents that bootstrap a cluster together (bootstrap-expect n,
// each joining the first's gossip address) and waits for a leader. The
// cluster is shut down when the test ends.
func New(t testing.TB, n int, opts ...Option) *Cluster {
	t.Helper()
	if testing.Short() {
		t.Skip("cluster test: skipped with -short")
	}
	c := &Cluster{t: t, secret: "clustertest-secret-0123456789abcdef", logs: &testLog{t: t}}
	for _, o := range opts {
		o(c)
	}
	// The agents' data dirs live under one directory made before the
	// shutdown is registered: cleanups run last-registered first, so the
	// agents stop before their files are removed (an agent still running
	// writes files, such as its cluster ID, into a directory being removed,
	// and the removal fails the test).
	c.root = t.TempDir()
	t.Cleanup(c.shutdown)
	// The first agent binds its gossip port itself; the others join the
	// address it reports.
	var seed string
	for i := 0; i < n; i++ {
		cfg := c.baseConfig(fmt.Sprintf("node%d", i+1))
		cfg.BootstrapExpect = n
		if i > 0 {
			cfg.Join = []string{seed}
		}
		nd := c.start(cfg)
		if i == 0 {
			seed = nd.Config.GossipAddr
			nd.Config.Join = []string{seed} // a restart rejoins its old address
		}
	}
	c.WaitForLeader()
	return c
}

// dataDir makes a fresh data dir for an agent named name: under the
// cluster's root when New made one, else in t.TempDir().
func (c *Cluster) dataDir(name string) string {
	if c.root == "" {
		return c.t.TempDir()
	}
	dir, err := os.MkdirTemp(c.root, name+"-")
	if err != nil {
		c.t.Fatal(err)
	}
	return dir
}

// baseConfig is the agent's documented defaults with loopback addresses on
// ports the kernel picks, a data dir in t.TempDir(), and a faster rejoin and
// longer leader wait, which loaded test machines need.
func (c *Cluster) baseConfig(name string) agent.Config {
	cfg := agent.DefaultConfig()
	cfg.Node = name
	cfg.DataDir = c.dataDir(name)
	cfg.HTTPAddr, cfg.RaftAddr, cfg.GossipAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	cfg.ClusterSecret = c.secret
	cfg.LogLevel = "debug"
	cfg.RejoinInterval = 2 * time.Second
	cfg.LeaderWait = 5 * time.Second
	if c.mutate != nil {
		c.mutate(&cfg)
	}
	return cfg
}

// start runs an agent and records the ports it bound, so that Restart can
// bring it back at the same addresses.
func (c *Cluster) start(cfg agent.Config) *Node {
	c.t.Helper()
	cfg.Logger = c.logs.logger(cfg.Node)
	a, err := agent.New(cfg)
	if err != nil {
		c.t.Fatalf("new agent %s: %v", cfg.Node, err)
	}
	if err := a.Start(context.Background()); err != nil {
		c.t.Fatalf("start agent %s: %v", cfg.Node, err)
	}
	cfg.HTTPAddr = a.HTTPAddr()
	cfg.RaftAddr = a.Node().ClusterAddr()
	cfg.GossipAddr = a.Node().GossipAddr()
	// A generous attempt timeout: on a loaded machine a commit may take
	// longer than the default 2 s, and with one address a timed-out write
	// is not re-sent.
	ccfg := client.Config{Addresses: []string{cfg.HTTPAddr}, AttemptTimeout: 10 * time.Second}
	if c.clientCfg != nil {
		c.clientCfg(&ccfg)
	}
	cl, err := client.New(ccfg)
	if err != nil {
		c.t.Fatal(err)
	}
	for _, n := range c.nodes {
		if n.Name == cfg.Node {
			n.Config, n.Agent, n.client = cfg, a, cl
			return n
		}
	}
	n := &Node{Name: cfg.Node, Config: cfg, Agent: a, client: cl}
	c.nodes = append(c.nodes, n)
	return n
}

// AddNode starts one more agent that neither bootstraps nor joins: the test
// joins it (as `beacon join` would).
func (c *Cluster) AddNode(name string) *Node {
	c.t.Helper()
	return c.start(c.baseConfig(name))
}

// AddNodeWith is AddNode with a last change to the node's configuration
// (another certificate, another gossip key).
func (c *Cluster) AddNodeWith(name string, fn func(*agent.Config)) *Node {
	c.t.Helper()
	cfg := c.baseConfig(name)
	fn(&cfg)
	return c.start(cfg)
}

// Nodes returns every node started, running or not.
func (c *Cluster) Nodes() []*Node { return c.nodes }

// Node returns the i-th node (0-based).
func (c *Cluster) Node(i int) *Node { return c.nodes[i] }

// Client returns an API client bound to the i-th node only.
func (c *Cluster) Client(i int) *client.Client { return c.nodes[i].client }

// Running reports whether the node's agent runs.
func (n *Node) Running() bool { return n.Agent != nil }

// HTTPAddr returns the node's API address.
func (n *Node) HTTPAddr() string { return n.Config.HTTPAddr }

// Client returns an API client bound to this node only.
func (n *Node) Client() *client.Client { return n.client }

// Stop shuts the i-th agent down (as SIGTERM would, without leaving).
func (c *Cluster) Stop(i int) {
	c.t.Helper()
	n := c.nodes[i]
	if n.Agent == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := n.Agent.Shutdown(ctx); err != nil {
		c.t.Logf("stop %s: %v", n.Name, err)
	}
	n.Agent = nil
}

// Restart starts a stopped node again with the same data dir and addresses.
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	n := c.nodes[i]
	if n.Agent != nil {
		c.t.Fatalf("restart %s: still running", n.Name)
	}
	c.start(n.Config)
}

// Leader returns the index of the leader, waiting (up to 30 s, then failing
// the test) while no running node leads, as during an election.
func (c *Cluster) Leader() int {
	c.t.Helper()
	l := c.LeaderNow()
	if l >= 0 {
		return l
	}
	wait.Until(c.t, 30*time.Second, "a leader", func() bool { l = c.LeaderNow(); return l >= 0 })
	return l
}

// LeaderNow returns the index of the node that is leader now, or -1.
func (c *Cluster) LeaderNow() int {
	for i, n := range c.nodes {
		if n.Agent != nil && n.Agent.Node().IsLeader() {
			return i
		}
	}
	return -1
}

// Follower returns the index of a running node that does not lead, other
// than those in not, waiting for a leader first; it fails the test if there
// is none.
func (c *Cluster) Follower(not ...int) int {
	c.t.Helper()
	l := c.Leader()
	for i, n := range c.nodes {
		if i != l && n.Running() && !slices.Contains(not, i) {
			return i
		}
	}
	c.t.Fatalf("no running follower (leader %d, excluded %v)", l, not)
	return -1
}

// WaitForLeader waits until one running node leads and every running voter
// agrees on it, and returns its index.
func (c *Cluster) WaitForLeader() int {
	c.t.Helper()
	var leader int
	wait.For(c.t, 30*time.Second, wait.Interval, func() (bool, string) {
		leader = c.LeaderNow()
		if leader < 0 {
			return false, "no running node leads"
		}
		name := c.nodes[leader].Name
		for _, n := range c.nodes {
			if n.Agent == nil {
				continue
			}
			st := n.Agent.Node().Status()
			inConfig := false
			for _, p := range st.Peers {
				inConfig = inConfig || p.ID == n.Name
			}
			if inConfig && st.Leader != name {
				return false, fmt.Sprintf("%s leads, %s knows leader %q", name, n.Name, st.Leader)
			}
		}
		return true, ""
	})
	return leader
}

// WaitForIndex waits until every running node has applied index. index
// must be one the catalog sees — the index a write returned, or a read's
// X-Beacon-Index — not a Raft index such as Status().LastIndex, which may be
// a no-op entry that no FSM ever applies.
func (c *Cluster) WaitForIndex(index uint64) {
	c.t.Helper()
	wait.For(c.t, 30*time.Second, wait.Interval, func() (bool, string) {
		for _, n := range c.nodes {
			if n.Agent == nil {
				continue
			}
			if got := n.Agent.Node().Status().AppliedIndex; got < index {
				return false, fmt.Sprintf("%s applied index %d, want %d", n.Name, got, index)
			}
		}
		return true, ""
	})
}

// WaitForVoters waits until the leader's Raft configuration has exactly n voters.
func (c *Cluster) WaitForVoters(n int) {
	c.t.Helper()
	wait.For(c.t, 30*time.Second, wait.Interval, func() (bool, string) {
		l := c.LeaderNow()
		if l < 0 {
			return false, "no leader"
		}
		var voters []string
		for _, p := range c.nodes[l].Agent.Node().Status().Peers {
			if p.Suffrage == "Voter" {
				voters = append(voters, p.ID)
			}
		}
		return len(voters) == n, fmt.Sprintf("leader %s has %d voters %v, want %d", c.nodes[l].Name, len(voters), voters, n)
	})
}

func (c *Cluster) shutdown() {
	var wg sync.WaitGroup
	for _, n := range c.nodes {
		if n.Agent == nil {
			continue
		}
		wg.Add(1)
		go func(a *agent.Agent) {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_ = a.Shutdown(ctx)
		}(n.Agent)
		n.Agent = nil
	}
	wg.Wait()
	c.logs.close()
}

// Retry503 runs fn until it succeeds, failing the test at once on an error
// that a loaded machine does not explain, and after 30 s of those it does
// (Retryable: a 503 during an election, a 504 or an attempt timeout when a
// commit took too long) with the last one. fn must be safe to repeat
// (registrations are idempotent).
func Retry503(t testing.TB, what string, fn func() error) {
	t.Helper()
	wait.For(t, 30*time.Second, 100*time.Millisecond, func() (bool, string) {
		err := fn()
		if err == nil {
			return true, ""
		}
		if !Retryable(err) {
			t.Fatalf("%s: %v", what, err)
		}
		return false, fmt.Sprintf("%s: %v", what, err)
	})
}

// Retryable reports whether err is what the API answers for a while on a
// loaded machine: 503 Service Unavailable (no leader, not caught up), 504
// Gateway Timeout (the commit took longer than the leader wait), or no
// answer within the client's attempt timeout. A write that failed so may
// or may not have been applied: repeat only idempotent ones.
func Retryable(err error) bool {
	var ce *client.Error
	if errors.As(err, &ce) {
		return ce.Status == http.StatusServiceUnavailable || ce.Status == http.StatusGatewayTimeout
	}
	return errors.Is(err, client.ErrAttemptTimeout)
}

// Register registers an instance through cl, retrying 503s like Retry503,
// and returns the index of the write.
func Register(t testing.TB, cl *client.Client, service, id string, r *client.Registration) uint64 {
	t.Helper()
	var idx uint64
	Retry503(t, "register "+service+"/"+id, func() (err error) {
		idx, err = cl.Register(context.Background(), service, id, r)
		return err
	})
	return idx
}

// Deregister deregisters an instance through cl, retrying 503s like
// Retry503, and returns the index of the write.
func Deregister(t testing.TB, cl *client.Client, service, id string) uint64 {
	t.Helper()
	var idx uint64
	Retry503(t, "deregister "+service+"/"+id, func() (err error) {
		idx, err = cl.Deregister(context.Background(), service, id)
		return err
	})
	return idx
}

// Eventually polls cond every 10ms until it holds, failing the test with
// what after timeout (wait.Until; wait.For when the failure should say why).
func Eventually(t testing.TB, timeout time.Duration, cond func() bool, what string) {
	t.Helper()
	wait.Until(t, timeout, what, cond)
}

// testLog sends agent logs to t.Log until the cluster shuts down.
type testLog struct {
	t      testing.TB
	tee    io.Writer
	mu     sync.Mutex
	closed bool
}

func (l *testLog) logger(name string) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Name: name, Level: hclog.Debug, Output: l, TimeFormat: "15:04:05.000"})
}

func (l *testLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.tee != nil {
		_, _ = l.tee.Write(p)
	}
	if !l.closed {
		l.t.Log(string(p[:len(p)-1]))
	}
	return len(p), nil
}

func (l *testLog) close() {
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
}
