package cmd

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/beaconhq/beacon/api"
	"github.com/spf13/pflag"
)

// AgentConfig is the user-facing configuration of `beacon agent`. It is
// filled from defaults, then a JSON file (--config; unknown keys are
// rejected), then BEACON_* environment variables, then flags the user set.
type AgentConfig struct {
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

	RejoinInterval  time.Duration `json:"rejoin_interval"`
	LeaderWait      time.Duration `json:"leader_wait"`
	ReapFailedAfter time.Duration `json:"reap_failed_after"`
	MinQuorum       int           `json:"min_quorum"`
	// RaftCommitTimeout tunes how soon followers learn of commits when no
	// new entries flow (cluster.Config.CommitTimeout).
	RaftCommitTimeout time.Duration `json:"raft_commit_timeout"`

	MaxBlockingQueries int `json:"max_blocking_queries"`

	DNSAddr       string        `json:"dns_addr"`
	DNSDomain     string        `json:"dns_domain"`
	DNSTTL        time.Duration `json:"dns_ttl"`
	DNSMaxStale   time.Duration `json:"dns_max_stale"`
	DNSAllowStale bool          `json:"dns_allow_stale"`
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

	// Security and observability (docs/security.md). The defaults of
	// `beacon agent` (defaultAgentConfig) verify TLS peers and allow
	// anonymous reads; a zero AgentConfig verifies nothing and allows none.
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
}

// DefaultAgentConfig returns the defaults documented in docs/operations.md.
func DefaultAgentConfig() AgentConfig {
	host, _ := os.Hostname()
	return AgentConfig{
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

		DNSDomain: "beacon.",

		ConsulDatacenter: "dc1",
		DNSTTL:           5 * time.Second,
		DNSMaxStale:      5 * time.Second,

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
	}
}

// option is one setting reachable by flag and environment variable. The
// table below is the single list of both.
type option struct {
	flag, short, env, usage string
	field                   func(*AgentConfig) any
}

var agentSettings = []option{
	{"node", "", "BEACON_NODE", "unique node name (default: host name)", func(c *AgentConfig) any { return &c.Node }},
	{"data-dir", "", "BEACON_DATA_DIR", "directory for the Raft log, snapshots and peers", func(c *AgentConfig) any { return &c.DataDir }},
	{"http-addr", "", "BEACON_HTTP_ADDR", "HTTP API bind address", func(c *AgentConfig) any { return &c.HTTPAddr }},
	{"raft-addr", "", "BEACON_RAFT_ADDR", "cluster port bind address (Raft and internal RPC)", func(c *AgentConfig) any { return &c.RaftAddr }},
	{"gossip-addr", "", "BEACON_GOSSIP_ADDR", "gossip bind address (TCP and UDP)", func(c *AgentConfig) any { return &c.GossipAddr }},
	{"advertise", "", "BEACON_ADVERTISE", "IP address advertised to peers when binding 0.0.0.0", func(c *AgentConfig) any { return &c.Advertise }},
	{"bootstrap-expect", "", "BEACON_BOOTSTRAP_EXPECT", "form a new cluster once this many servers have met", func(c *AgentConfig) any { return &c.BootstrapExpect }},
	{"join", "", "BEACON_JOIN", "gossip address to join (repeatable; retried, then rejoined periodically)", func(c *AgentConfig) any { return &c.Join }},
	{"dev", "", "BEACON_DEV", "run a single in-memory node on loopback for quick tries", func(c *AgentConfig) any { return &c.Dev }},
	{"cluster-secret", "", "BEACON_CLUSTER_SECRET", "shared secret authenticating node-to-node RPC", func(c *AgentConfig) any { return &c.ClusterSecret }},
	{"log-level", "", "BEACON_LOG_LEVEL", "trace, debug, info, warn or error", func(c *AgentConfig) any { return &c.LogLevel }},
	{"log-json", "", "BEACON_LOG_JSON", "log JSON lines", func(c *AgentConfig) any { return &c.LogJSON }},
	{"rejoin-interval", "", "BEACON_REJOIN_INTERVAL", "how often to rejoin known peers that are not alive", func(c *AgentConfig) any { return &c.RejoinInterval }},
	{"leader-wait", "", "BEACON_LEADER_WAIT", "how long a write waits for a leader before 503", func(c *AgentConfig) any { return &c.LeaderWait }},
	{"reap-failed-after", "", "BEACON_REAP_FAILED_AFTER", "remove servers failed this long from Raft (0: never)", func(c *AgentConfig) any { return &c.ReapFailedAfter }},
	{"min-quorum", "", "BEACON_MIN_QUORUM", "never reap below this many voters", func(c *AgentConfig) any { return &c.MinQuorum }},
	{"raft-commit-timeout", "", "BEACON_RAFT_COMMIT_TIMEOUT", "how soon followers learn of commits when no new entries flow", func(c *AgentConfig) any { return &c.RaftCommitTimeout }},
	{"max-blocking-queries", "", "BEACON_MAX_BLOCKING_QUERIES", "concurrent blocking queries this node holds before answering 429", func(c *AgentConfig) any { return &c.MaxBlockingQueries }},
	{"dns-addr", "", "BEACON_DNS_ADDR", "serve DNS (UDP and TCP) on this address, e.g. 127.0.0.1:8753 (port 8753 if none; default: off)", func(c *AgentConfig) any { return &c.DNSAddr }},
	{"dns-domain", "", "BEACON_DNS_DOMAIN", "DNS zone answered", func(c *AgentConfig) any { return &c.DNSDomain }},
	{"dns-ttl", "", "BEACON_DNS_TTL", "TTL of DNS records", func(c *AgentConfig) any { return &c.DNSTTL }},
	{"dns-max-stale", "", "BEACON_DNS_MAX_STALE", "answer SERVFAIL after this long without contact with the leader", func(c *AgentConfig) any { return &c.DNSMaxStale }},
	{"dns-allow-stale", "", "BEACON_DNS_ALLOW_STALE", "answer DNS even when out of contact with the leader longer than --dns-max-stale", func(c *AgentConfig) any { return &c.DNSAllowStale }},
	{"consul-datacenter", "", "BEACON_CONSUL_DATACENTER", "datacenter name the Consul-compatible API presents (docs/consul.md)", func(c *AgentConfig) any { return &c.ConsulDatacenter }},
	{"lb-addr", "", "BEACON_LB_ADDR", "run a load balancer in the agent on this address (off when empty)", func(c *AgentConfig) any { return &c.LBAddr }},
	{"lb-admin-addr", "", "BEACON_LB_ADMIN_ADDR", "admin address of the embedded load balancer (/lb/status, /metrics)", func(c *AgentConfig) any { return &c.LBAdminAddr }},
	{"lb-zone", "", "BEACON_LB_ZONE", "zone of the embedded load balancer", func(c *AgentConfig) any { return &c.LBZone }},
	{"lb-strategy", "", "BEACON_LB_STRATEGY", "strategy of the embedded load balancer, or SERVICE=STRATEGY (repeatable)", func(c *AgentConfig) any { return &c.LBStrategy }},
	{"lb-domain", "", "BEACON_LB_DOMAIN", "host routing domain of the embedded load balancer (repeatable)", func(c *AgentConfig) any { return &c.LBDomain }},
	{"ui-lb", "", "BEACON_UI_LB", "admin address (host:port) of a load balancer whose routing tables the web UI shows (repeatable)", func(c *AgentConfig) any { return &c.UILB }},
	{"check-deny-cidr", "", "BEACON_CHECK_DENY_CIDR", "CIDR health checks may not connect to (repeatable; replaces the default 169.254.0.0/16 and fe80::/10; \"none\" denies nothing)", func(c *AgentConfig) any { return &c.CheckDenyCIDR }},
	{"flap-threshold", "", "BEACON_FLAP_THRESHOLD", "status changes within --flap-window that make a check flapping (0: off)", func(c *AgentConfig) any { return &c.FlapThreshold }},
	{"flap-window", "", "BEACON_FLAP_WINDOW", "window in which flapping status changes are counted", func(c *AgentConfig) any { return &c.FlapWindow }},
	{"flap-hold-down", "", "BEACON_FLAP_HOLD_DOWN", "first hold-down of a flapping check (doubles each time in a row)", func(c *AgentConfig) any { return &c.FlapHoldDown }},
	{"flap-max-hold-down", "", "BEACON_FLAP_MAX_HOLD_DOWN", "longest hold-down of a flapping check", func(c *AgentConfig) any { return &c.FlapMaxHoldDown }},
	{"ttl-grace", "", "BEACON_TTL_GRACE", "extra time TTL checks get after a leader change", func(c *AgentConfig) any { return &c.TTLGrace }},
	{"metrics-period", "", "BEACON_METRICS_PERIOD", "custom health metrics are replicated at most once per instance per period", func(c *AgentConfig) any { return &c.MetricsPeriod }},
	// Security and observability (docs/security.md).
	{"management-token", "", "BEACON_MANAGEMENT_TOKEN", "management token; setting it turns token auth on (same value on every agent; needs --cluster-secret)", func(c *AgentConfig) any { return &c.ManagementToken }},
	{"anonymous-read", "", "BEACON_ANONYMOUS_READ", "with auth on, let requests without a token read (false: they get 401)", func(c *AgentConfig) any { return &c.AnonymousRead }},
	{"gossip-key", "", "BEACON_GOSSIP_KEY", "base64 AES key (16, 24 or 32 bytes) encrypting gossip; `beacon keygen` makes one", func(c *AgentConfig) any { return &c.GossipKey }},
	{"tls-cert-file", "", "BEACON_TLS_CERT_FILE", "PEM certificate of this node: serves HTTPS and TLS on the cluster port", func(c *AgentConfig) any { return &c.TLSCertFile }},
	{"tls-key-file", "", "BEACON_TLS_KEY_FILE", "PEM private key of --tls-cert-file", func(c *AgentConfig) any { return &c.TLSKeyFile }},
	{"tls-ca-file", "", "BEACON_TLS_CA_FILE", "PEM CA bundle that signs the servers' certificates (verifies peers on the cluster port)", func(c *AgentConfig) any { return &c.TLSCAFile }},
	{"tls-http-client-ca-file", "", "BEACON_TLS_HTTP_CLIENT_CA_FILE", "PEM CA bundle; if set, API clients must present a certificate it signed (mTLS)", func(c *AgentConfig) any { return &c.TLSHTTPClientCAFile }},
	{"tls-verify-incoming", "", "BEACON_TLS_VERIFY_INCOMING", "cluster port: require peers' certificates signed by --tls-ca-file", func(c *AgentConfig) any { return &c.TLSVerifyIncoming }},
	{"tls-verify-outgoing", "", "BEACON_TLS_VERIFY_OUTGOING", "cluster port: verify the certificate of the peer dialled against --tls-ca-file", func(c *AgentConfig) any { return &c.TLSVerifyOutgoing }},
	{"tls-verify-server-hostname", "", "BEACON_TLS_VERIFY_SERVER_HOSTNAME", "cluster port: the peer dialled must hold a server certificate (name server.beacon)", func(c *AgentConfig) any { return &c.TLSVerifyServerHostname }},
	{"write-rate-limit", "", "BEACON_WRITE_RATE_LIMIT", "writes per second one client IP may make before 429 (0: no limit)", func(c *AgentConfig) any { return &c.WriteRateLimit }},
	{"write-burst", "", "BEACON_WRITE_BURST", "writes one client IP may burst above --write-rate-limit", func(c *AgentConfig) any { return &c.WriteBurst }},
	{"enable-pprof", "", "BEACON_ENABLE_PPROF", "serve net/http/pprof under /debug/pprof/ (management token required when auth is on)", func(c *AgentConfig) any { return &c.EnablePprof }},
}

// secretSettings are the options whose values never appear in an error
// message or a log line.
var secretSettings = map[string]bool{"cluster-secret": true, "management-token": true, "gossip-key": true}

// registerAgentFlags defines every option as a flag writing into target.
func registerAgentFlags(fs *pflag.FlagSet, target *AgentConfig) {
	for _, o := range agentSettings {
		switch p := o.field(target).(type) {
		case *string:
			fs.StringVarP(p, o.flag, o.short, *p, o.usage)
		case *int:
			fs.IntVarP(p, o.flag, o.short, *p, o.usage)
		case *bool:
			fs.BoolVarP(p, o.flag, o.short, *p, o.usage)
		case *time.Duration:
			fs.DurationVarP(p, o.flag, o.short, *p, o.usage)
		case *[]string:
			fs.StringArrayVarP(p, o.flag, o.short, *p, o.usage)
		default:
			panic(fmt.Sprintf("option %s: unsupported type %T", o.flag, p))
		}
	}
}

// loadAgentConfig layers defaults, the file, the environment and the flags
// that were set (their values are in flagValues).
func loadAgentConfig(file string, getenv func(string) string, fs *pflag.FlagSet, flagValues *AgentConfig) (AgentConfig, error) {
	cfg := DefaultAgentConfig()
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return cfg, fmt.Errorf("config file: %w", err)
		}
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&cfg); err != nil {
			return cfg, fmt.Errorf("config file %s: %w", file, err)
		}
	}
	for _, o := range agentSettings {
		v := getenv(o.env)
		if v == "" {
			continue
		}
		if err := setFromString(o.field(&cfg), v); err != nil {
			if secretSettings[o.flag] {
				return cfg, fmt.Errorf("%s: %w", o.env, err)
			}
			return cfg, fmt.Errorf("%s=%q: %w", o.env, v, err)
		}
	}
	for _, o := range agentSettings {
		if fs != nil && fs.Changed(o.flag) {
			copyValue(o.field(&cfg), o.field(flagValues))
		}
	}
	return cfg, nil
}

func setFromString(dst any, s string) error {
	switch p := dst.(type) {
	case *string:
		*p = s
	case *int:
		n, err := strconv.Atoi(s)
		if err != nil {
			return err
		}
		*p = n
	case *bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return err
		}
		*p = b
	case *time.Duration:
		d, err := time.ParseDuration(s)
		if err != nil {
			return err
		}
		*p = d
	case *[]string:
		var out []string
		for _, part := range strings.Split(s, ",") {
			if part = strings.TrimSpace(part); part != "" {
				out = append(out, part)
			}
		}
		*p = out
	default:
		return fmt.Errorf("unsupported type %T", dst)
	}
	return nil
}

func copyValue(dst, src any) {
	switch d := dst.(type) {
	case *string:
		*d = *src.(*string)
	case *int:
		*d = *src.(*int)
	case *bool:
		*d = *src.(*bool)
	case *time.Duration:
		*d = *src.(*time.Duration)
	case *[]string:
		*d = append([]string(nil), *src.(*[]string)...)
	}
}
