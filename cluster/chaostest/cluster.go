package chaostest

import (
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"sync"
	"time"

	"github.com/beaconhq/beacon/api/client"
)

// Options configure a Cluster.
type Options struct {
	// Nodes is the cluster size (default 3).
	Nodes int
	// Binary is the built beacon binary.
	Binary string
	// Dir holds each node's data dir and log file.
	Dir string
	// ExtraArgs are added to every agent's command line (e.g. --enable-pprof).
	ExtraArgs []string
	// LogLevel of the agents (default info).
	LogLevel string
}

// Cluster is a set of beacon agent processes on a private Network, with an
// API client per node. Close stops everything it started.
type Cluster struct {
	Net   *Network
	Nodes []*Node

	transport *http.Transport
	hc        *http.Client
	clients   []*client.Client
	closeOnce sync.Once
}

// StartCluster builds the network, starts every agent (bootstrap-expect N,
// each joining the others' gossip addresses) and waits until they serve HTTP
// and agree on a leader. On error everything started is stopped again.
func StartCluster(ctx context.Context, o Options) (_ *Cluster, err error) {
	if o.Nodes == 0 {
		o.Nodes = 3
	}
	if o.LogLevel == "" {
		o.LogLevel = "info"
	}
	nw, err := NewNetwork(o.Nodes)
	if err != nil {
		return nil, err
	}
	c := &Cluster{Net: nw}
	track(c)
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	c.transport = &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 2 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 32,
		IdleConnTimeout:     30 * time.Second,
	}
	c.hc = &http.Client{Transport: c.transport}
	secret := rand.Text() + rand.Text() // at least 32 bytes (cluster.MinClusterSecretLen)
	for i := 0; i < o.Nodes; i++ {
		args := []string{
			"--node", fmt.Sprintf("n%d", i+1),
			"--data-dir", filepath.Join(o.Dir, fmt.Sprintf("n%d", i+1), "data"),
			"--http-addr", fmt.Sprintf("%s:%d", nw.NodeIP(i), HTTPPort),
			"--raft-addr", fmt.Sprintf("%s:%d", nw.NodeIP(i), RaftPort),
			"--gossip-addr", fmt.Sprintf("%s:%d", nw.NodeIP(i), GossipPort),
			"--bootstrap-expect", fmt.Sprint(o.Nodes),
			"--cluster-secret", secret,
			"--log-level", o.LogLevel, "--log-json",
		}
		for j := 0; j < o.Nodes; j++ {
			if j != i {
				args = append(args, "--join", fmt.Sprintf("%s:%d", nw.NodeIP(j), GossipPort))
			}
		}
		args = append(args, o.ExtraArgs...)
		n := newNode(i, nw, o.Binary, o.Dir, args)
		if err := os.MkdirAll(filepath.Dir(n.dataDir), 0o755); err != nil {
			return nil, err
		}
		c.Nodes = append(c.Nodes, n)
		cl, err := client.New(client.Config{Addresses: []string{n.HTTPAddr()}, HTTPClient: c.hc, Timeout: 10 * time.Second})
		if err != nil {
			return nil, err
		}
		c.clients = append(c.clients, cl)
	}
	for _, n := range c.Nodes {
		if err := n.Start(); err != nil {
			return nil, err
		}
	}
	hctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for _, n := range c.Nodes {
		if err := n.WaitHealthy(hctx, c.hc); err != nil {
			return nil, err
		}
	}
	if _, err := c.WaitForLeader(ctx, 60*time.Second); err != nil {
		return nil, err
	}
	return c, nil
}

// Client returns an API client bound to node i only (no fail-over).
func (c *Cluster) Client(i int) *client.Client { return c.clients[i] }

// HTTPClient returns the HTTP client the cluster's API clients share.
func (c *Cluster) HTTPClient() *http.Client { return c.hc }

// Restart starts node i again (same arguments and data dir) and waits until
// it serves HTTP.
func (c *Cluster) Restart(ctx context.Context, i int) error {
	if err := c.Nodes[i].Start(); err != nil {
		return err
	}
	hctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return c.Nodes[i].WaitHealthy(hctx, c.hc)
}

// Status asks node i for its view of Raft, within timeout.
func (c *Cluster) Status(ctx context.Context, i int, timeout time.Duration) (*client.ClusterStatus, error) {
	sctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return c.clients[i].Status(sctx)
}

// Statuses asks every node in parallel; a node that does not answer has a
// nil entry.
func (c *Cluster) Statuses(ctx context.Context, timeout time.Duration) []*client.ClusterStatus {
	out := make([]*client.ClusterStatus, len(c.Nodes))
	var wg sync.WaitGroup
	for i := range c.Nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if st, err := c.Status(ctx, i, timeout); err == nil {
				out[i] = st
			}
		}()
	}
	wg.Wait()
	return out
}

// Leader returns the node that says it leads (the highest term if several
// do), or -1.
func (c *Cluster) Leader(ctx context.Context) int {
	best, term := -1, uint64(0)
	for i, st := range c.Statuses(ctx, time.Second) {
		if st != nil && st.State == "Leader" && st.Term >= term {
			best, term = i, st.Term
		}
	}
	return best
}

// Agreed reports the leader every running, unpaused node agrees on (same
// leader name and term, and the leader itself says it leads), or -1.
func (c *Cluster) Agreed(ctx context.Context) int {
	sts := c.Statuses(ctx, time.Second)
	leader, term := "", uint64(0)
	for i, st := range sts {
		n := c.Nodes[i]
		if !n.Running() || n.Paused() {
			continue
		}
		if st == nil || st.Leader == "" {
			return -1
		}
		if leader == "" {
			leader, term = st.Leader, st.Term
		}
		if st.Leader != leader || st.Term != term {
			return -1
		}
	}
	for i, n := range c.Nodes {
		if n.Name == leader && sts[i] != nil && sts[i].State == "Leader" {
			return i
		}
	}
	return -1
}

// WaitForLeader waits until every running node agrees on a leader.
func (c *Cluster) WaitForLeader(ctx context.Context, timeout time.Duration) (int, error) {
	deadline := time.Now().Add(timeout)
	for {
		if l := c.Agreed(ctx); l >= 0 {
			return l, nil
		}
		if time.Now().After(deadline) {
			return -1, fmt.Errorf("chaostest: no leader agreed on by every node within %s", timeout)
		}
		select {
		case <-ctx.Done():
			return -1, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// ProbeService is the service recovery probes write to; the workload never
// touches it.
const ProbeService = "chaos-probe"

// WaitRecovered measures recovery: it waits until every node agrees on a
// leader and then until a registration succeeds through every node, and
// returns the time since start. It gives up after timeout.
func (c *Cluster) WaitRecovered(ctx context.Context, start time.Time, timeout time.Duration) (time.Duration, error) {
	deadline := start.Add(timeout)
	if _, err := c.WaitForLeader(ctx, time.Until(deadline)); err != nil {
		return 0, err
	}
	for i, n := range c.Nodes {
		for attempt := 0; ; attempt++ {
			wctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			_, err := c.clients[i].Register(wctx, ProbeService, "probe-"+n.Name, &client.Registration{
				Address: "192.0.2.1", Port: 1 + attempt%60000, Meta: map[string]string{"at": time.Now().Format(time.RFC3339Nano)},
			})
			cancel()
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return 0, ctx.Err()
			}
			if time.Now().After(deadline) {
				return 0, fmt.Errorf("chaostest: no write succeeded through %s within %s: %w", n.Name, timeout, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return time.Since(start), nil
}

// Close kills every agent, closes the clients' connections and removes the
// network. It is safe to call twice.
func (c *Cluster) Close() {
	c.closeOnce.Do(func() {
		defer untrack(c)
		var wg sync.WaitGroup
		for _, n := range c.Nodes {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_ = n.Kill()
			}()
		}
		wg.Wait()
		if c.transport != nil {
			c.transport.CloseIdleConnections()
		}
		if c.Net != nil {
			_ = c.Net.Close()
		}
	})
}

// Unexpected lists every agent exit the harness did not cause.
func (c *Cluster) Unexpected() []string {
	var out []string
	for _, n := range c.Nodes {
		out = append(out, n.Unexpected()...)
	}
	return out
}

// BuildBinary builds ./cmd/beacon of the module containing the working
// directory into dir and returns its path. With race set, the binary is
// built with the race detector.
func BuildBinary(dir string, race bool) (string, error) {
	out := filepath.Join(dir, "beacon")
	args := []string{"build", "-o", out}
	if race {
		args = append(args, "-race")
	}
	args = append(args, "github.com/beaconhq/beacon/cmd/beacon")
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goBin); err != nil {
		goBin = "go"
	}
	cmd := exec.Command(goBin, args...)
	cmd.Env = append(os.Environ(), "CGO_ENABLED="+map[bool]string{true: "1", false: "0"}[race])
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("chaostest: go build: %w\n%s", err, b)
	}
	return out, nil
}

// sortedKeys returns m's keys in order.
func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
