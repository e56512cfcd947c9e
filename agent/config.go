package agent

import (
	"fmt"
	"os"
	"time"

	"github.com/beaconhq/beacon/api"
	"github.com/beaconhq/beacon/cluster"
	"github.com/beaconhq/beacon/fsm"
	"github.com/hashicorp/go-hclog"
)

// Config is the configuration of an agent. `beacon agent` fills it from
// defaults, then a JSON file (--config; unknown keys are rejected), then
// BEACON_* environment variables, then flags (cmd/config.go); a Go program
// embedding an agent starts from DefaultConfig.
type Config struct {
	Node            string   `json:"node"`
	DataDir         string   `json:"data_dir"`
	HTTPAddr        string   `json:"http_addr"`
	RaftAddr        string   `json:"raft_addr"`
	GossipAddr      string   `json:"gossip_addr"`
	Advertise       string   `json:"advertise"`
	BootstrapExpect int      `json:"bootstrap_expect"`
	Join            []string `json:"join"`
	Dev             bool     `json:"dev"`
	ClusterSecret   string   `json:"cluster_secret"`
	LogLevel        string   `json:"log_level"`
	LogJSON         bool     `json:"log_json"`
	// AddrFile, when set, is where the agent writes the addresses it bound
	// and advertises once it serves (JSON, AddrFile; replaced atomically),
	// so that whoever started it on port 0 learns the ports the kernel
	// picked. It is removed when the agent shuts down.
	AddrFile string `json:"addr_file"`

	RejoinInterval  time.Duration `json:"rejoin_interval"`
	LeaderWait      time.Duration `json:"leader_wait"`
	ReapFailedAfter time.Duration `json:"reap_failed_after"`
	MinQuorum       int           `json:"min_quorum"`
	// RaftCommitTimeout tunes how soon followers learn of commits when no
	// new entries flow (cluster.Config.CommitTimeout).
	RaftCommitTimeout time.Duration `json:"raft_commit_timeout"`
	// RaftNoJournal stores Raft entries straight into raft.db, without the
	// journal in front of it (cluster/journal.go; docs/operations.md).
	RaftNoJournal bool `json:"raft_no_journal"`

	MaxBlockingQueries int `json:"max_blocking_queries"`

	// MemoryLimit sets Go's soft memory limit: "container" (or empty, the
	// default: 80 % of the container's limit when there is one), "auto"
	// (also following the live heap), "off", or a size (memory.go).
	MemoryLimit string `json:"memory_limit"`
	// MemoryIdleRelease is how long the process must allocate next to
	// nothing, with its heap grown well past what it held after the last
	// release, before it collects and returns its free heap to the OS
	// (memidle.go). 0 turns it off. DefaultConfig sets
	// DefaultMemoryIdleRelease.
	MemoryIdleRelease time.Duration `json:"memory_idle_release"`

	DNSAddr       string        `json:"dns_addr"`
	DNSDomain     string        `json:"dns_domain"`
	DNSTTL        time.Duration `json:"dns_ttl"`
	DNSMaxStale   time.Duration `json:"dns_max_stale"`
	DNSAllowStale bool          `json:"dns_allow_stale"`
	// DNSToken is the token whose read rights DNS answers with when auth
	// is on (as Consul's DNS token): without one, DNS has an anonymous
	// client's rights, so with AnonymousRead off every service query is
	// REFUSED. A token that is deleted stops DNS at once.
	DNSToken string `json:"dns_token"`
	// ConsulDatacenter is the datacenter name the Consul API presents
	// (docs/consul.md).
	ConsulDatacenter string `json:"consul_datacenter"`
	// An embedded load balancer (docs/lb.md), off unless LBAddr is set.
	LBAddr      string   `json:"lb_addr"`
	LBAdminAddr string   `json:"lb_admin_addr"`
	LBZone      string   `json:"lb_zone"`
	LBStrategy  []string `json:"lb_strategy"`
	LBDomain    []string `json:"lb_domain"`
	// UILB are the admin addresses of load balancers the web UI shows.
	UILB []string `json:"ui_lb"`

	// Health checking (docs/health.md).
	CheckDenyCIDR   []string      `json:"check_deny_cidr"`
	FlapThreshold   int           `json:"flap_threshold"`
	FlapWindow      time.Duration `json:"flap_window"`
	FlapHoldDown    time.Duration `json:"flap_hold_down"`
	FlapMaxHoldDown time.Duration `json:"flap_max_hold_down"`
	TTLGrace        time.Duration `json:"ttl_grace"`
	MetricsPeriod   time.Duration `json:"metrics_period"`

	// Security and observability (docs/security.md). The defaults
	// (DefaultConfig) verify TLS peers and allow anonymous reads; a zero
	// Config verifies nothing and allows none.
	ManagementToken         string `json:"management_token"`
	AnonymousRead           bool   `json:"anonymous_read"`
	GossipKey               string `json:"gossip_key"`
	TLSCertFile             string `json:"tls_cert_file"`
	TLSKeyFile              string `json:"tls_key_file"`
	TLSCAFile               string `json:"tls_ca_file"`
	TLSHTTPClientCAFile     string `json:"tls_http_client_ca_file"`
	TLSVerifyIncoming       bool   `json:"tls_verify_incoming"`
	TLSVerifyOutgoing       bool   `json:"tls_verify_outgoing"`
	TLSVerifyServerHostname bool   `json:"tls_verify_server_hostname"`
	WriteRateLimit          int    `json:"write_rate_limit"`
	WriteBurst              int    `json:"write_burst"`
	EnablePprof             bool   `json:"enable_pprof"`

	// Hardening (docs/security.md, issue 15).
	CheckAllowCIDR []string `json:"check_allow_cidr"`
	// CheckAllowLoopback, with auth on, lets a registration without the
	// management token aim health checks at the servers' own host
	// (loopback, the unspecified addresses, their own addresses)
	// (docs/security.md, "Health-check targets"). Methods other than GET,
	// HEAD and OPTIONS still need the management token. Auth off needs no
	// switch.
	CheckAllowLoopback     bool     `json:"check_allow_loopback"`
	TrustOpenRegistrations bool     `json:"trust_open_registrations"`
	HTTPAllowedHost        []string `json:"http_allowed_host"`
	HTTPAllowedOrigin      []string `json:"http_allowed_origin"`
	HTTPMaxConnsPerClient  int      `json:"http_max_conns_per_client"`
	HTTPNoFastPath         bool     `json:"http_no_fast_path"`
	LBAllowLoopback        bool     `json:"lb_allow_loopback"`
	LBDenyCIDR             []string `json:"lb_deny_cidr"`

	// Version is the build's version, reported to peers in gossip
	// ("dev" when empty).
	Version string `json:"-"`
	// Logger receives the agent's log lines (none when nil).
	Logger hclog.Logger `json:"-"`
	// ClusterForTest, when set (tests only), adjusts the cluster node's
	// configuration just before the node is made.
	ClusterForTest func(*cluster.Config) `json:"-"`
}

// DefaultConfig returns the defaults documented in docs/operations.md.
func DefaultConfig() Config {
	host, _ := os.Hostname()
	return Config{
		Node:              host,
		DataDir:           "beacon-data",
		HTTPAddr:          "127.0.0.1:8750",
		RaftAddr:          "0.0.0.0:8751",
		GossipAddr:        "0.0.0.0:8752",
		LogLevel:          "info",
		RejoinInterval:    15 * time.Second,
		LeaderWait:        3 * time.Second,
		MinQuorum:         3,
		RaftCommitTimeout: 10 * time.Millisecond,

		MaxBlockingQueries: api.DefaultMaxBlockingQueries,

		MemoryIdleRelease: DefaultMemoryIdleRelease,

		DNSDomain:   "beacon.",
		DNSTTL:      5 * time.Second,
		DNSMaxStale: 5 * time.Second,

		ConsulDatacenter: "dc1",

		CheckDenyCIDR:   []string{"169.254.0.0/16", "fe80::/10"},
		FlapThreshold:   5,
		FlapWindow:      time.Minute,
		FlapHoldDown:    30 * time.Second,
		FlapMaxHoldDown: 10 * time.Minute,
		TTLGrace:        10 * time.Second,
		MetricsPeriod:   10 * time.Second,

		AnonymousRead:           true,
		TLSVerifyIncoming:       true,
		TLSVerifyOutgoing:       true,
		TLSVerifyServerHostname: true,
		WriteRateLimit:          0,
		WriteBurst:              400,

		HTTPMaxConnsPerClient: api.DefaultConfig().MaxConnsPerClient,
	}
}

// Validate reports the first problem with c that would stop an agent from
// starting: a node name that breaks the rule of node names
// (fsm.ValidateName), insecure or invalid security settings,
// unreadable TLS files, bad health or load balancer settings. It reads the
// TLS files named. Messages never include a secret's value.
func (c Config) Validate() error {
	if err := fsm.ValidateName(c.Node); err != nil {
		return fmt.Errorf("agent: node name %q %w", c.Node, err)
	}
	if err := c.validateSecurity(); err != nil {
		return err
	}
	if _, err := parseMemoryLimit(c.MemoryLimit); err != nil {
		return err
	}
	if c.MemoryIdleRelease < 0 || (c.MemoryIdleRelease > 0 && c.MemoryIdleRelease < minMemoryIdleRelease) {
		return fmt.Errorf("agent: memory idle release %s: want 0 (off) or at least %s", c.MemoryIdleRelease, minMemoryIdleRelease)
	}
	if _, err := c.healthConfig(); err != nil {
		return err
	}
	if c.LBAddr != "" {
		if _, err := c.lbConfig(); err != nil {
			return err
		}
	}
	return nil
}
