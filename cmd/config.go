package cmd

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/beaconhq/beacon/agent"
	"github.com/spf13/pflag"
)

// option is one setting reachable by flag and environment variable. The
// table below is the single list of both.
type option struct {
	flag, short, env, usage string
	field                   func(*agent.Config) any
}

var agentSettings = []option{
	{"node", "", "BEACON_NODE", "unique node name (default: this host's name)", func(c *agent.Config) any { return &c.Node }},
	{"data-dir", "", "BEACON_DATA_DIR", "directory for the Raft log, snapshots and peers", func(c *agent.Config) any { return &c.DataDir }},
	{"http-addr", "", "BEACON_HTTP_ADDR", "HTTP API bind address", func(c *agent.Config) any { return &c.HTTPAddr }},
	{"raft-addr", "", "BEACON_RAFT_ADDR", "cluster port bind address (Raft and internal RPC)", func(c *agent.Config) any { return &c.RaftAddr }},
	{"gossip-addr", "", "BEACON_GOSSIP_ADDR", "gossip bind address (TCP and UDP)", func(c *agent.Config) any { return &c.GossipAddr }},
	{"advertise", "", "BEACON_ADVERTISE", "IP address advertised to peers when binding 0.0.0.0", func(c *agent.Config) any { return &c.Advertise }},
	{"bootstrap-expect", "", "BEACON_BOOTSTRAP_EXPECT", "form a new cluster once this many servers have met", func(c *agent.Config) any { return &c.BootstrapExpect }},
	{"join", "", "BEACON_JOIN", "gossip address to join (repeatable; retried, then rejoined periodically)", func(c *agent.Config) any { return &c.Join }},
	{"dev", "", "BEACON_DEV", "run a single in-memory node on loopback for quick tries (an --http-addr or --dns-addr naming another address is kept, with a warning)", func(c *agent.Config) any { return &c.Dev }},
	{"cluster-secret", "", "BEACON_CLUSTER_SECRET", "shared secret authenticating node-to-node RPC", func(c *agent.Config) any { return &c.ClusterSecret }},
	{"log-level", "", "BEACON_LOG_LEVEL", "trace, debug, info, warn or error", func(c *agent.Config) any { return &c.LogLevel }},
	{"log-json", "", "BEACON_LOG_JSON", "log JSON lines", func(c *agent.Config) any { return &c.LogJSON }},
	{"addr-file", "", "BEACON_ADDR_FILE", "once serving, write the addresses bound and advertised (http, cluster, gossip, dns; JSON) to this file, replaced atomically: learn the ports picked for :0", func(c *agent.Config) any { return &c.AddrFile }},
	{"rejoin-interval", "", "BEACON_REJOIN_INTERVAL", "how often to rejoin known peers that are not alive", func(c *agent.Config) any { return &c.RejoinInterval }},
	{"leader-wait", "", "BEACON_LEADER_WAIT", "how long a write waits for a leader before 503", func(c *agent.Config) any { return &c.LeaderWait }},
	{"reap-failed-after", "", "BEACON_REAP_FAILED_AFTER", "remove servers failed this long from Raft (0: never)", func(c *agent.Config) any { return &c.ReapFailedAfter }},
	{"min-quorum", "", "BEACON_MIN_QUORUM", "never reap below this many voters", func(c *agent.Config) any { return &c.MinQuorum }},
	{"raft-no-journal", "", "BEACON_RAFT_NO_JOURNAL", "store Raft entries straight into raft.db (a bolt commit, two fdatasyncs, per store) instead of through the journal (one fdatasync; docs/operations.md)", func(c *agent.Config) any { return &c.RaftNoJournal }},
	{"raft-commit-timeout", "", "BEACON_RAFT_COMMIT_TIMEOUT", "how soon followers learn of commits when no new entries flow", func(c *agent.Config) any { return &c.RaftCommitTimeout }},
	{"max-blocking-queries", "", "BEACON_MAX_BLOCKING_QUERIES", "concurrent blocking queries this node holds before answering 429", func(c *agent.Config) any { return &c.MaxBlockingQueries }},
	{"memory-limit", "", "BEACON_MEMORY_LIMIT", "Go soft memory limit: container (80% of the container's limit, if any), auto (also 1.5x the live heap: less RSS, more CPU), off, or a size such as 512MiB", func(c *agent.Config) any { return &c.MemoryLimit }},
	{"memory-idle-release", "", "BEACON_MEMORY_IDLE_RELEASE", "return the heap kept beyond the live heap to the OS once the process has been quiet this long (0: never)", func(c *agent.Config) any { return &c.MemoryIdleRelease }},
	{"dns-addr", "", "BEACON_DNS_ADDR", "serve DNS (UDP and TCP) on this address, e.g. 127.0.0.1:8753 (port 8753 if none; default: off)", func(c *agent.Config) any { return &c.DNSAddr }},
	{"dns-domain", "", "BEACON_DNS_DOMAIN", "DNS zone answered", func(c *agent.Config) any { return &c.DNSDomain }},
	{"dns-ttl", "", "BEACON_DNS_TTL", "TTL of DNS records", func(c *agent.Config) any { return &c.DNSTTL }},
	{"dns-max-stale", "", "BEACON_DNS_MAX_STALE", "answer SERVFAIL after this long without contact with the leader", func(c *agent.Config) any { return &c.DNSMaxStale }},
	{"dns-allow-stale", "", "BEACON_DNS_ALLOW_STALE", "answer DNS even when out of contact with the leader longer than --dns-max-stale", func(c *agent.Config) any { return &c.DNSAllowStale }},
	{"consul-datacenter", "", "BEACON_CONSUL_DATACENTER", "datacenter name the Consul-compatible API presents (docs/consul.md)", func(c *agent.Config) any { return &c.ConsulDatacenter }},
	{"lb-addr", "", "BEACON_LB_ADDR", "run a load balancer in the agent on this address (off when empty)", func(c *agent.Config) any { return &c.LBAddr }},
	{"lb-admin-addr", "", "BEACON_LB_ADMIN_ADDR", "admin address of the embedded load balancer (/lb/status, /metrics)", func(c *agent.Config) any { return &c.LBAdminAddr }},
	{"lb-zone", "", "BEACON_LB_ZONE", "zone of the embedded load balancer", func(c *agent.Config) any { return &c.LBZone }},
	{"lb-strategy", "", "BEACON_LB_STRATEGY", "strategy of the embedded load balancer, or SERVICE=STRATEGY (repeatable)", func(c *agent.Config) any { return &c.LBStrategy }},
	{"lb-domain", "", "BEACON_LB_DOMAIN", "host routing domain of the embedded load balancer (repeatable)", func(c *agent.Config) any { return &c.LBDomain }},
	{"ui-lb", "", "BEACON_UI_LB", "admin address (host:port) of a load balancer whose routing tables the web UI shows (repeatable)", func(c *agent.Config) any { return &c.UILB }},
	{"check-deny-cidr", "", "BEACON_CHECK_DENY_CIDR", "CIDR health checks may not connect to (repeatable; replaces the default 169.254.0.0/16 and fe80::/10; \"none\" denies nothing)", func(c *agent.Config) any { return &c.CheckDenyCIDR }},
	{"flap-threshold", "", "BEACON_FLAP_THRESHOLD", "status changes within --flap-window that make a check flapping (0: off)", func(c *agent.Config) any { return &c.FlapThreshold }},
	{"flap-window", "", "BEACON_FLAP_WINDOW", "window in which flapping status changes are counted", func(c *agent.Config) any { return &c.FlapWindow }},
	{"flap-hold-down", "", "BEACON_FLAP_HOLD_DOWN", "first hold-down of a flapping check (doubles each time in a row)", func(c *agent.Config) any { return &c.FlapHoldDown }},
	{"flap-max-hold-down", "", "BEACON_FLAP_MAX_HOLD_DOWN", "longest hold-down of a flapping check", func(c *agent.Config) any { return &c.FlapMaxHoldDown }},
	{"ttl-grace", "", "BEACON_TTL_GRACE", "extra time TTL checks get after a leader change", func(c *agent.Config) any { return &c.TTLGrace }},
	{"metrics-period", "", "BEACON_METRICS_PERIOD", "custom health metrics are replicated at most once per instance per period", func(c *agent.Config) any { return &c.MetricsPeriod }},
	// Security and observability (docs/security.md).
	{"management-token", "", "BEACON_MANAGEMENT_TOKEN", "management token; setting it turns token auth on (same value on every agent; needs --cluster-secret)", func(c *agent.Config) any { return &c.ManagementToken }},
	{"anonymous-read", "", "BEACON_ANONYMOUS_READ", "with auth on, let requests without a token read (false: they get 401, and DNS service queries REFUSED unless --dns-token)", func(c *agent.Config) any { return &c.AnonymousRead }},
	{"dns-token", "", "BEACON_DNS_TOKEN", "with auth on, the token whose read rights DNS answers with (needed with --anonymous-read=false; a deleted token stops DNS)", func(c *agent.Config) any { return &c.DNSToken }},
	{"gossip-key", "", "BEACON_GOSSIP_KEY", "base64 AES key (16, 24 or 32 bytes) encrypting gossip; 'beacon keygen' makes one", func(c *agent.Config) any { return &c.GossipKey }},
	{"tls-cert-file", "", "BEACON_TLS_CERT_FILE", "PEM certificate of this node: serves HTTPS and TLS on the cluster port", func(c *agent.Config) any { return &c.TLSCertFile }},
	{"tls-key-file", "", "BEACON_TLS_KEY_FILE", "PEM private key of --tls-cert-file", func(c *agent.Config) any { return &c.TLSKeyFile }},
	{"tls-ca-file", "", "BEACON_TLS_CA_FILE", "PEM CA bundle that signs the servers' certificates (verifies peers on the cluster port)", func(c *agent.Config) any { return &c.TLSCAFile }},
	{"tls-http-client-ca-file", "", "BEACON_TLS_HTTP_CLIENT_CA_FILE", "PEM CA bundle; if set, API clients must present a certificate it signed (mTLS)", func(c *agent.Config) any { return &c.TLSHTTPClientCAFile }},
	{"tls-verify-incoming", "", "BEACON_TLS_VERIFY_INCOMING", "cluster port: require peers' certificates signed by --tls-ca-file", func(c *agent.Config) any { return &c.TLSVerifyIncoming }},
	{"tls-verify-outgoing", "", "BEACON_TLS_VERIFY_OUTGOING", "cluster port: verify the certificate of the peer dialled against --tls-ca-file", func(c *agent.Config) any { return &c.TLSVerifyOutgoing }},
	{"tls-verify-server-hostname", "", "BEACON_TLS_VERIFY_SERVER_HOSTNAME", "cluster port: the peer dialled must hold a server certificate (name server.beacon)", func(c *agent.Config) any { return &c.TLSVerifyServerHostname }},
	{"write-rate-limit", "", "BEACON_WRITE_RATE_LIMIT", "writes per second one client IP may make before 429 (0: no limit)", func(c *agent.Config) any { return &c.WriteRateLimit }},
	{"write-burst", "", "BEACON_WRITE_BURST", "writes one client IP may burst above --write-rate-limit", func(c *agent.Config) any { return &c.WriteBurst }},
	{"enable-pprof", "", "BEACON_ENABLE_PPROF", "serve net/http/pprof under /debug/pprof/ (management token required when auth is on)", func(c *agent.Config) any { return &c.EnablePprof }},
	// Hardening (docs/security.md).
	{"check-allow-cidr", "", "BEACON_CHECK_ALLOW_CIDR", "CIDR any registrant's health checks may target besides the instance's own address (repeatable)", func(c *agent.Config) any { return &c.CheckAllowCIDR }},
	{"check-allow-loopback", "", "BEACON_CHECK_ALLOW_LOOPBACK", "with auth on, let any write token's health checks probe the servers' own host (loopback, their own addresses); off, only the management token may", func(c *agent.Config) any { return &c.CheckAllowLoopback }},
	{"trust-open-registrations", "", "BEACON_TRUST_OPEN_REGISTRATIONS", "with auth off, let every registration do what needs the management token with auth on: route prefixes outside /SERVICE, checks aimed at any host (trusted labs only)", func(c *agent.Config) any { return &c.TrustOpenRegistrations }},
	{"http-allowed-host", "", "BEACON_HTTP_ALLOWED_HOST", "with auth off, a further name the API's Host header may carry besides loopback and the agent's own names and addresses (repeatable; \"*\": any)", func(c *agent.Config) any { return &c.HTTPAllowedHost }},
	{"http-allowed-origin", "", "BEACON_HTTP_ALLOWED_ORIGIN", "an origin (scheme://host:port) whose browser requests the API accepts (repeatable)", func(c *agent.Config) any { return &c.HTTPAllowedOrigin }},
	{"http-max-conns-per-client", "", "BEACON_HTTP_MAX_CONNS_PER_CLIENT", "connections one client IP may hold open on the API (0: no cap)", func(c *agent.Config) any { return &c.HTTPMaxConnsPerClient }},
	{"http-no-fast-path", "", "BEACON_HTTP_NO_FAST_PATH", "serve every API request through net/http's server (the same answers, more CPU per read; docs/api.md)", func(c *agent.Config) any { return &c.HTTPNoFastPath }},
	{"lb-allow-loopback", "", "BEACON_LB_ALLOW_LOOPBACK", "let the embedded load balancer connect to loopback instances", func(c *agent.Config) any { return &c.LBAllowLoopback }},
	{"lb-deny-cidr", "", "BEACON_LB_DENY_CIDR", "CIDR the embedded load balancer never connects to, besides the link-local ranges (repeatable)", func(c *agent.Config) any { return &c.LBDenyCIDR }},
}

// secretSettings are the options whose values never appear in an error
// message or a log line.
var secretSettings = map[string]bool{"cluster-secret": true, "management-token": true, "gossip-key": true, "dns-token": true}

// registerAgentFlags defines every option as a flag writing into target.
func registerAgentFlags(fs *pflag.FlagSet, target *agent.Config) {
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
	// The usage says the node name defaults to the host name; the help
	// should not add (default "thishost") after it.
	if f := fs.Lookup("node"); f != nil {
		f.DefValue = ""
	}
}

// loadAgentConfig layers defaults, the file, the environment and the flags
// that were set (their values are in flagValues).
func loadAgentConfig(file string, getenv func(string) string, fs *pflag.FlagSet, flagValues *agent.Config) (agent.Config, error) {
	cfg := agent.DefaultConfig()
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
