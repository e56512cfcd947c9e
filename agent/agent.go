// Package agent is a Beacon server as a library: Config, New, Start, Ready,
// Err and Shutdown, like etcd's server/embed. `beacon agent` (cmd) builds a
// Config from flags, environment and file and runs one.
package agent

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/beaconhq/beacon/api"
	"github.com/beaconhq/beacon/api/client"
	"github.com/beaconhq/beacon/api/consul"
	"github.com/beaconhq/beacon/api/dns"
	"github.com/beaconhq/beacon/cluster"
	"github.com/beaconhq/beacon/fsm"
	"github.com/beaconhq/beacon/health"
	"github.com/beaconhq/beacon/lb"
	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
)

// defaultClusterSecret is used when none is configured, so that a cluster
// started by hand works; production clusters must set their own
// (docs/operations.md).
const defaultClusterSecret = "beacon-default-cluster-secret-change-me"

// Agent is a Beacon server as a library: the composition root that wires
// the catalog, the cluster node and the HTTP API. main and the end-to-end
// tests both use it.
type Agent struct {
	cfg    Config
	logger hclog.Logger

	fsm    *fsm.FSM
	node   *cluster.Node
	health *health.Health
	api    *api.Server
	httpLn net.Listener
	// wroteAddrFile is set once Config.AddrFile was written (Start), so
	// that stop removes it.
	wroteAddrFile bool
	dns           *dns.Server
	lb            *lb.Server // nil without LBAddr
	// lbAdmin is the embedded balancer's bound admin address, for the web
	// UI (read by HTTP handlers while the balancer starts).
	lbAdmin atomic.Pointer[string]
	// stopChecks ends the health runner; checksDone closes when it returned.
	stopChecks context.CancelFunc
	checksDone chan struct{}
	// metrics is the agent's own Prometheus registry (metrics.go).
	metrics *prometheus.Registry
	// memLimit owns the runtime's soft memory limit (memory.go), or is nil.
	memLimit *memoryLimiter
	// memIdle is the agent's use of the process's idle releaser
	// (memidle.go), or nil.
	memIdle *idleHandle

	ready        chan struct{}
	stopping     chan struct{} // closed when the agent begins to stop
	errCh        chan error
	wg           sync.WaitGroup
	shutdownOnce sync.Once
	shutdownErr  error
}

// New checks cfg (with Dev, after turning it into a single in-memory node
// on loopback) and builds an agent that is not running yet.
func New(cfg Config) (*Agent, error) {
	var exposed []string
	if cfg.Dev {
		exposed = cfg.applyDev()
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	logger := cfg.Logger
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	if len(exposed) > 0 {
		if cfg.ManagementToken == "" {
			logger.Warn("dev mode: listening beyond loopback, as asked: a dev agent has no authentication (no --management-token), so anyone who can reach it can read and change its catalog",
				"addresses", strings.Join(exposed, " "))
		} else {
			logger.Warn("dev mode: listening beyond loopback, as asked (requests need a token)", "addresses", strings.Join(exposed, " "))
		}
	}
	return &Agent{cfg: cfg, logger: logger, ready: make(chan struct{}), stopping: make(chan struct{}), errCh: make(chan error, 4)}, nil
}

// applyDev turns the config into a single in-memory node. Raft and gossip
// bind 127.0.0.1 (keeping the port given). The HTTP API and DNS (when on)
// do too, unless their address names a host that is not loopback: such an
// address was asked for (the defaults are loopback), as `--http-addr
// 0.0.0.0:8750` in a container, and is kept, as Consul's -dev keeps its
// -client. applyDev returns those, for a warning ("http=0.0.0.0:8750").
func (c *Config) applyDev() (exposed []string) {
	if c.Node == "" || c.Node == DefaultConfig().Node {
		c.Node = "dev"
	}
	c.BootstrapExpect = 1
	c.Join = nil
	var beyond bool
	if c.HTTPAddr, beyond = devAddr(c.HTTPAddr, "8750"); beyond {
		exposed = append(exposed, "http="+c.HTTPAddr)
	}
	c.RaftAddr = loopback(c.RaftAddr, "8751")
	c.GossipAddr = loopback(c.GossipAddr, "8752")
	if c.DNSAddr != "" {
		if c.DNSAddr, beyond = devAddr(c.DNSAddr, dns.DefaultPort); beyond {
			exposed = append(exposed, "dns="+c.DNSAddr)
		}
	}
	if c.ClusterSecret == "" {
		c.ClusterSecret = rand.Text() + rand.Text() // 52 characters, 260 random bits
	}
	return exposed
}

// devAddr is addr (defPort if it has no port) when it names a host other
// than loopback, and reports so (beyond); else addr's port on 127.0.0.1. An
// empty host (":8750") binds every interface, so it counts as beyond; an
// empty addr is the loopback default.
func devAddr(addr, defPort string) (_ string, beyond bool) {
	if addr == "" {
		return loopback(addr, defPort), false
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		host, port = addr, "" // a bare host: "0.0.0.0"
	}
	if port == "" {
		port = defPort
	}
	if isLoopbackHost(host) {
		return net.JoinHostPort("127.0.0.1", port), false
	}
	return net.JoinHostPort(host, port), true
}

// isLoopbackHost: localhost (or *.localhost) or a loopback IP.
func isLoopbackHost(host string) bool {
	h := strings.ToLower(strings.TrimSuffix(host, "."))
	if h == "localhost" || strings.HasSuffix(h, ".localhost") {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback()
}

// loopback keeps addr's port but binds it to 127.0.0.1.
func loopback(addr, defPort string) string {
	_, port, err := net.SplitHostPort(addr)
	if err != nil || port == "" {
		port = defPort
	}
	return net.JoinHostPort("127.0.0.1", port)
}

// Start opens the stores, starts Raft, gossip and the HTTP API. On error
// everything started is stopped.
func (a *Agent) Start(ctx context.Context) (err error) {
	defer func() {
		if err != nil {
			_ = a.Shutdown(context.Background())
		}
	}()
	mp, err := parseMemoryLimit(a.cfg.MemoryLimit)
	if err != nil {
		return err
	}
	a.memLimit = startMemoryLimit(mp, "/sys/fs/cgroup", autoPeriod, a.logger.Named("memory"))
	a.fsm = fsm.New(a.logger.Named("fsm"))
	if a.metrics, err = newAgentRegistry(a.fsm); err != nil {
		return err
	}
	a.memIdle = startIdleRelease(a.cfg.MemoryIdleRelease, a.logger.Named("memory"))
	for _, c := range a.memIdle.collectors() {
		if err := a.metrics.Register(c); err != nil {
			return err
		}
	}
	tlsc, err := a.cfg.tlsConfigs()
	if err != nil {
		return err
	}

	ln, err := net.Listen("tcp", a.cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("agent: listen on %s: %w", a.cfg.HTTPAddr, err)
	}
	a.httpLn = ln
	httpAdv, err := advertised(ln.Addr().(*net.TCPAddr), a.cfg.Advertise)
	if err != nil {
		return err
	}

	secret := a.cfg.ClusterSecret
	if secret == "" {
		a.logger.Warn("no cluster secret set: node-to-node RPC uses a well-known default; set --cluster-secret")
		secret = defaultClusterSecret
	}
	cc := cluster.DefaultConfig()
	cc.NodeName = a.cfg.Node
	cc.DataDir = a.cfg.DataDir
	cc.InMemory = a.cfg.Dev
	cc.NoRaftJournal = a.cfg.RaftNoJournal
	cc.ClusterAddr = a.cfg.RaftAddr
	cc.GossipAddr = a.cfg.GossipAddr
	cc.Advertise = a.cfg.Advertise
	cc.HTTPAdvertise = httpAdv
	cc.BootstrapExpect = a.cfg.BootstrapExpect
	cc.Join = a.cfg.Join
	cc.ClusterSecret = []byte(secret)
	cc.RejoinInterval = a.cfg.RejoinInterval
	cc.LeaderWait = a.cfg.LeaderWait
	cc.ReapFailedAfter = a.cfg.ReapFailedAfter
	cc.MinQuorum = a.cfg.MinQuorum
	if a.cfg.RaftCommitTimeout > 0 {
		cc.CommitTimeout = a.cfg.RaftCommitTimeout
	}
	cc.Logger = a.logger
	cc.Version = a.cfg.Version
	if a.cfg.Dev {
		cc.ProbeInterval, cc.ProbeTimeout = time.Second, 500*time.Millisecond
	}
	if err := a.secureCluster(&cc, tlsc); err != nil {
		return err
	}
	if a.cfg.ClusterForTest != nil {
		a.cfg.ClusterForTest(&cc)
	}
	node, err := cluster.New(cc, a.fsm)
	if err != nil {
		return err
	}
	a.node = node

	hc, err := a.cfg.healthConfig()
	if err != nil {
		return err
	}
	hc.Logger = a.logger.Named("health")
	hc.AuditTTL = a.auditTTL
	hc.Metrics = a.metrics
	h, err := health.New(hc, a.fsm, healthAdapter{node})
	if err != nil {
		return err
	}
	a.health = h
	node.OnLeader(h.Lead)
	node.HandleRPC(opHealth, func(ctx context.Context, p []byte) ([]byte, error) {
		resp, err := h.ServeRPC(ctx, p)
		if errors.Is(err, health.ErrNotLeader) {
			err = cluster.ErrNotLeader // CallLeader retries on the leader
		}
		return resp, err
	})

	if err := node.Start(ctx); err != nil {
		return err
	}
	hctx, stopChecks := context.WithCancel(context.Background())
	a.stopChecks, a.checksDone = stopChecks, make(chan struct{})
	go func() {
		defer close(a.checksDone)
		h.Run(hctx)
	}()

	ac := api.DefaultConfig()
	ac.Logger = a.logger.Named("http")
	if a.cfg.MaxBlockingQueries > 0 {
		ac.MaxBlockingQueries = a.cfg.MaxBlockingQueries
	}
	ac.CheckDenyCIDRs = hc.DenyCIDRs
	ac.TTL = h
	ac.UILoadBalancers = a.uiLoadBalancers
	a.secureAPI(&ac, tlsc)
	if err := a.hardenAPI(&ac, hc); err != nil {
		return err
	}
	if err := ac.Validate(); err != nil {
		return err
	}
	cadapter := &clusterAdapter{node: node, leave: a.leaveAndStop}
	a.api = api.New(ac, a.fsm.Store(), cadapter)
	if err := a.mountConsul(cadapter, h, hc.DenyCIDRs, httpAdv); err != nil {
		return err
	}
	if a.cfg.DNSAddr != "" {
		dc := dns.DefaultConfig()
		dc.Addr = a.cfg.DNSAddr
		if a.cfg.DNSDomain != "" {
			dc.Domain = a.cfg.DNSDomain
		}
		dc.TTL, dc.AllowStale = a.cfg.DNSTTL, a.cfg.DNSAllowStale
		if a.cfg.DNSMaxStale > 0 {
			dc.MaxStale = a.cfg.DNSMaxStale
		}
		dc.Logger = a.logger.Named("dns")
		dc.Authorize = a.dnsAuthorize()
		ds, err := dns.New(dc, a.fsm.Store(), node)
		if err != nil {
			return err
		}
		if err := ds.Start(); err != nil {
			return err
		}
		a.dns = ds
	}
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		if err := a.api.Serve(ln); err != nil {
			a.errCh <- fmt.Errorf("agent: http api: %w", err)
		}
	}()
	if err := a.startLB(ctx); err != nil {
		return err
	}
	if err := a.writeAddrFile(httpAdv); err != nil {
		return err
	}
	close(a.ready)
	a.logger.Info("agent started", "node", a.cfg.Node, "http", ln.Addr().String(),
		"cluster", node.ClusterAddr(), "gossip", node.GossipAddr(), "dns", a.DNSAddr(), "dev", a.cfg.Dev)
	return nil
}

// mountConsul serves the Consul-compatible API (api/consul) on the API's
// listener.
func (a *Agent) mountConsul(cl consul.Cluster, ttl consul.TTLReporter, deny []netip.Prefix, httpAdv string) error {
	cc := consul.DefaultConfig()
	if a.cfg.ConsulDatacenter != "" {
		cc.Datacenter = a.cfg.ConsulDatacenter
	}
	cc.NodeName = a.cfg.Node
	cc.NodeAddress, _, _ = net.SplitHostPort(httpAdv)
	if a.cfg.MaxBlockingQueries > 0 {
		cc.MaxBlockingQueries = a.cfg.MaxBlockingQueries
	}
	cc.CheckDenyCIDRs = deny
	cc.TTL = ttl
	cc.Auth = a.api
	cc.Logger = a.logger.Named("consul")
	cs, err := consul.New(cc, a.fsm.Store(), cl)
	if err != nil {
		return err
	}
	for _, p := range consul.Prefixes {
		a.api.MountWithToken(p, cs.Handler(), consul.RequestToken)
	}
	return nil
}

// advertised returns the address others should use for a bound listener.
func advertised(bound *net.TCPAddr, advertise string) (string, error) {
	ip := bound.IP
	if advertise != "" {
		ip = net.ParseIP(advertise)
		if ip == nil {
			return "", fmt.Errorf("agent: advertise address %q is not an IP", advertise)
		}
	}
	if ip.IsUnspecified() {
		// Peers learn a reachable address from gossip; publish the port with
		// an empty host so clients combine it with the member's address.
		return net.JoinHostPort(HostIP(), strconv.Itoa(bound.Port)), nil
	}
	return net.JoinHostPort(ip.String(), strconv.Itoa(bound.Port)), nil
}

// HostIP returns a non-loopback IPv4 address of this host, or 127.0.0.1.
func HostIP() string {
	addrs, err := net.InterfaceAddrs()
	if err == nil {
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && !ipn.IP.IsLoopback() && ipn.IP.To4() != nil {
				return ipn.IP.String()
			}
		}
	}
	return "127.0.0.1"
}

// Ready is closed once the agent serves its API.
func (a *Agent) Ready() <-chan struct{} { return a.ready }

// Err delivers errors that stop the agent while it runs.
func (a *Agent) Err() <-chan error { return a.errCh }

// HTTPAddr returns the bound address of the HTTP API.
func (a *Agent) HTTPAddr() string { return a.httpLn.Addr().String() }

// DNSAddr returns the bound address of the DNS server (UDP and TCP), or ""
// when DNS is off.
func (a *Agent) DNSAddr() string {
	if a.dns == nil {
		return ""
	}
	return a.dns.Addr()
}

// API returns the agent's HTTP API server (for its blocking-query counters).
func (a *Agent) API() *api.Server { return a.api }

// Node returns the agent's cluster node.
func (a *Agent) Node() *cluster.Node { return a.node }

// Metrics returns the agent's Prometheus registry (what GET /metrics serves).
func (a *Agent) Metrics() *prometheus.Registry { return a.metrics }

// Store returns the agent's replicated catalog.
func (a *Agent) Store() *fsm.Store { return a.fsm.Store() }

// leaveAndStop runs for POST /v1/cluster/leave: leave the cluster, then shut
// the agent down once the response has been written.
func (a *Agent) leaveAndStop(ctx context.Context) error {
	if err := a.node.Leave(ctx); err != nil {
		return err
	}
	go func() {
		// Bounded as a signal's shutdown is (cmd): a proxied stream on
		// the agent's balancer would otherwise hold it for ever, and the
		// signal's own shutdown waits behind this one.
		sctx, cancel := context.WithTimeout(context.Background(), leaveShutdownTimeout)
		defer cancel()
		_ = a.Shutdown(sctx)
		a.errCh <- ErrLeft
	}()
	return nil
}

// leaveShutdownTimeout bounds the shutdown that follows a leave: past it,
// what is still open is closed.
const leaveShutdownTimeout = 30 * time.Second

// ErrLeft is delivered on Err after the agent left the cluster on request.
var ErrLeft = errors.New("agent: left the cluster")

// Shutdown stops the agent outside-in: DNS and the HTTP API (ending
// blocking queries with 503 shutting_down), the health checks, then the
// cluster node (gossip, Raft, stores).
func (a *Agent) Shutdown(ctx context.Context) error {
	a.shutdownOnce.Do(func() { a.shutdownErr = a.stop(ctx) })
	return a.shutdownErr
}

func (a *Agent) stop(ctx context.Context) error {
	close(a.stopping)
	var errs []error
	if a.dns != nil {
		if err := a.dns.Shutdown(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if a.api != nil {
		if err := a.api.Shutdown(ctx); err != nil {
			errs = append(errs, err)
		}
	} else if a.httpLn != nil {
		a.httpLn.Close()
	}
	if err := a.stopLB(ctx); err != nil {
		errs = append(errs, err)
	}
	a.wg.Wait()
	if a.stopChecks != nil {
		a.stopChecks()
		<-a.checksDone
	}
	if a.node != nil {
		if err := a.node.Shutdown(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	a.memLimit.close()
	a.memIdle.close()
	a.removeAddrFile()
	return errors.Join(errs...)
}

// opHealth is the internal RPC op of the health subsystem (TTL reports
// travelling to the leader). Ops of the agent's packages are numbered here.
const opHealth cluster.Op = 16

// healthConfig builds the health subsystem's configuration (without its
// logger).
func (c Config) healthConfig() (hc health.Config, err error) {
	hc = health.DefaultConfig()
	hc.Node = c.Node
	if c.CheckDenyCIDR != nil {
		hc.DenyCIDRs = nil
		for _, s := range c.CheckDenyCIDR {
			if s == "none" {
				continue
			}
			p, err := netip.ParsePrefix(s)
			if err != nil {
				return hc, fmt.Errorf("agent: check deny CIDR %q: %w", s, err)
			}
			hc.DenyCIDRs = append(hc.DenyCIDRs, p.Masked())
		}
	}
	hc.Flap = health.FlapPolicy{
		Threshold: c.FlapThreshold, Window: c.FlapWindow,
		HoldDown: c.FlapHoldDown, MaxHoldDown: c.FlapMaxHoldDown,
	}
	hc.TTLGrace = c.TTLGrace
	if hc.AllowCIDRs, err = parseCIDRs("check allow", c.CheckAllowCIDR); err != nil {
		return hc, err
	}
	if c.ManagementToken != "" {
		hc.SafeMethodsOnly = true
		if !c.CheckAllowLoopback {
			hc.LocalCIDRs = c.hostCIDRs()
		}
	}
	if c.MetricsPeriod > 0 {
		hc.MetricsPeriod = c.MetricsPeriod
	}
	return hc, hc.Validate()
}

// healthAdapter presents a *cluster.Node as the health.Cluster interface.
type healthAdapter struct{ node *cluster.Node }

func (h healthAdapter) Apply(ctx context.Context, cmd []byte) (uint64, error) {
	return h.node.Apply(ctx, cmd)
}

func (h healthAdapter) ApplyLeader(ctx context.Context, cmd []byte) (uint64, error) {
	return h.node.ApplyLeader(ctx, cmd)
}

func (h healthAdapter) CallLeader(ctx context.Context, payload []byte) ([]byte, error) {
	return h.node.CallLeader(withClusterActor(ctx), opHealth, payload)
}

// clusterAdapter presents a *cluster.Node as the api.Cluster interface.
type clusterAdapter struct {
	node  *cluster.Node
	leave func(context.Context) error
}

// Health returns the agent's health subsystem.
func (a *Agent) Health() *health.Health { return a.health }

// Apply answers once the leader has committed the write; the API's reads
// on this node wait for it (fsm.Store.WaitAcked).
func (c *clusterAdapter) Apply(ctx context.Context, cmd []byte) (uint64, error) {
	return c.node.ApplyAcked(withClusterActor(ctx), cmd)
}

func (c *clusterAdapter) ConsistentIndex(ctx context.Context) (uint64, error) {
	return c.node.ConsistentIndex(ctx)
}

func (c *clusterAdapter) KnownLeader() bool { return c.node.KnownLeader() }
func (c *clusterAdapter) ReplicationStalled() (bool, string) {
	return c.node.ReplicationStalled()
}
func (c *clusterAdapter) Diverged() bool             { return c.node.Diverged() }
func (c *clusterAdapter) LastContact() time.Duration { return c.node.LastContact() }
func (c *clusterAdapter) LastIndex() uint64          { return c.node.LastIndex() }
func (c *clusterAdapter) Join(a []string) (int, error) {
	return c.node.Join(a)
}
func (c *clusterAdapter) Leave(ctx context.Context) error { return c.leave(withClusterActor(ctx)) }
func (c *clusterAdapter) RemovePeer(ctx context.Context, id string) error {
	return c.node.RemovePeer(withClusterActor(ctx), id)
}
func (c *clusterAdapter) RemovePeerByAddress(ctx context.Context, addr string) (string, error) {
	return c.node.RemovePeerByAddress(withClusterActor(ctx), addr)
}

func (c *clusterAdapter) Restore(ctx context.Context, archive []byte) (uint64, error) {
	return c.node.Restore(withClusterActor(ctx), archive)
}

func (c *clusterAdapter) ForceLeave(ctx context.Context, node string) error {
	return c.node.ForceLeave(withClusterActor(ctx), node)
}

func (c *clusterAdapter) Status() client.ClusterStatus {
	s := c.node.Status()
	out := client.ClusterStatus{
		Node: s.Node, State: s.State, Leader: s.Leader, LeaderAddr: s.LeaderAddr,
		Term: s.Term, CommitIndex: s.CommitIndex, AppliedIndex: s.AppliedIndex, LastIndex: s.LastIndex,
		LastContactMS: lastContactMS(s.LastContact), Peers: []client.Peer{},
	}
	for _, p := range s.Peers {
		out.Peers = append(out.Peers, client.Peer{ID: p.ID, Address: p.Address, Suffrage: p.Suffrage, Leader: p.Leader})
	}
	return out
}

func (c *clusterAdapter) Servers(ctx context.Context) client.ClusterServers {
	out := client.ClusterServers{Node: c.node.Name(), Servers: []client.ServerStatus{}}
	for _, v := range c.node.Servers(ctx, cluster.DefaultServerViewTimeout) {
		s := client.ServerStatus{ID: v.ID, Address: v.Address, Suffrage: v.Suffrage, TookMS: v.Took.Milliseconds()}
		if v.Err != nil {
			s.Error = v.Err.Error()
		} else {
			s.View = &client.ServerView{State: v.View.State, Leader: v.View.Leader, Term: v.View.Term,
				CommitIndex: v.View.CommitIndex, AppliedIndex: v.View.AppliedIndex, CatalogIndex: v.View.CatalogIndex,
				LastIndex: v.View.LastIndex, LastContactMS: lastContactMS(v.View.LastContact)}
		}
		out.Servers = append(out.Servers, s)
	}
	return out
}

// lastContactMS is a last contact in milliseconds, -1 for never.
func lastContactMS(d time.Duration) int64 {
	if d == cluster.Never {
		return -1
	}
	return d.Milliseconds()
}

func (c *clusterAdapter) Members() []client.Member {
	ms := c.node.Members()
	out := make([]client.Member, 0, len(ms))
	for _, m := range ms {
		out = append(out, client.Member{
			Name: m.Name, GossipAddr: m.GossipAddr, ClusterAddr: m.ClusterAddr, HTTPAddr: m.HTTPAddr,
			Role: m.Role, Status: string(m.Status), Since: m.Since.UTC(), Version: m.Version,
		})
	}
	return out
}

// uiLoadBalancers lists the load balancers the web UI shows: those named
// with --ui-lb, and the embedded one once its admin listener is bound.
func (a *Agent) uiLoadBalancers() []string {
	out := slices.Clone(a.cfg.UILB)
	if addr := a.lbAdmin.Load(); addr != nil && !slices.Contains(out, *addr) {
		out = append(out, *addr)
	}
	return out
}
