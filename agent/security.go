package agent

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/beaconhq/beacon/api"
	"github.com/beaconhq/beacon/cluster"
	"github.com/beaconhq/beacon/fsm"
)

// minManagementTokenLen is the shortest management token accepted: a
// token short enough to guess is no lock.
const minManagementTokenLen = 16

// validateSecurity checks the security settings before anything starts.
// Messages never include a secret's value.
func (c Config) validateSecurity() error {
	if c.ManagementToken != "" {
		if len(c.ManagementToken) < minManagementTokenLen {
			return fmt.Errorf("agent: --management-token must be at least %d characters (try: head -c 24 /dev/urandom | base64)", minManagementTokenLen)
		}
		if c.ClusterSecret == "" {
			return errors.New("agent: auth is on (--management-token) but no --cluster-secret is set; node-to-node traffic would be authenticated by a well-known default. Set the same --cluster-secret on every server")
		}
	}
	if _, err := decodeGossipKey(c.GossipKey); err != nil {
		return err
	}
	if c.ClusterSecret != "" && len(c.ClusterSecret) < cluster.MinClusterSecretLen {
		return fmt.Errorf("agent: --cluster-secret must be at least %d bytes (try: head -c 32 /dev/urandom | base64)", cluster.MinClusterSecretLen)
	}
	if c.WriteRateLimit < 0 || c.WriteBurst < 0 {
		return errors.New("agent: --write-rate-limit and --write-burst must not be negative")
	}
	_, err := c.tlsConfigs()
	return err
}

// decodeGossipKey decodes --gossip-key; "" means no encryption.
func decodeGossipKey(s string) ([]byte, error) {
	if s == "" {
		return nil, nil
	}
	key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
	if err != nil {
		return nil, errors.New("agent: --gossip-key is not valid base64 (make one with `beacon keygen`)")
	}
	if n := len(key); n != 16 && n != 24 && n != 32 {
		return nil, fmt.Errorf("agent: --gossip-key must decode to 16, 24 or 32 bytes, not %d (make one with `beacon keygen`)", n)
	}
	return key, nil
}

// secureCluster puts the security and metrics settings into the cluster
// configuration.
func (a *Agent) secureCluster(cc *cluster.Config, t agentTLS) error {
	key, err := decodeGossipKey(a.cfg.GossipKey)
	if err != nil {
		return err
	}
	cc.GossipKey = key
	cc.TLSIn, cc.TLSOut = t.in, t.out
	cc.Metrics = a.metrics
	cc.AuditLogger = a.logger.Named("audit")
	if a.cfg.ManagementToken != "" && key == nil {
		a.logger.Warn("auth is on but gossip is not encrypted: anyone who reaches the gossip port can join as a member; set --gossip-key (beacon keygen)")
	}
	return nil
}

// secureAPI puts the security and metrics settings into the API
// configuration.
func (a *Agent) secureAPI(ac *api.Config, t agentTLS) {
	if a.cfg.ManagementToken != "" {
		ac.Auth = api.AuthConfig{
			ManagementTokenHash: api.HashToken(a.cfg.ManagementToken),
			AnonymousRead:       a.cfg.AnonymousRead,
		}
		if t.http == nil && !loopbackAddr(a.cfg.HTTPAddr) {
			a.logger.Warn("auth is on but the API is plain HTTP: tokens cross the network in clear text; set --tls-cert-file and --tls-key-file")
		}
	}
	ac.WriteRateLimit = float64(a.cfg.WriteRateLimit)
	ac.WriteBurst = a.cfg.WriteBurst
	ac.Metrics = a.metrics
	ac.Gatherer = a.metrics
	ac.EnablePprof = a.cfg.EnablePprof
	ac.AuditLogger = a.logger.Named("audit")
	// The API serves HTTPS itself (api.Config.TLS), above its per-client
	// connection cap, so that net/http sees each TLS connection.
	ac.TLS = t.http
}

// dnsAuthorize is the DNS server's read check: the API's rule for a read
// with the DNS token (none: an anonymous read), asked per query so that a
// deleted token stops DNS as soon as this agent has applied the deletion.
// Nil (every service answered) with auth off, or with anonymous reads on
// and no DNS token.
func (a *Agent) dnsAuthorize() func(string) error {
	if a.cfg.ManagementToken == "" {
		if a.cfg.DNSToken != "" {
			a.logger.Warn("--dns-token is set but auth is off (no --management-token): DNS answers every service")
		}
		return nil
	}
	secret := a.cfg.DNSToken
	if secret == "" {
		if a.cfg.AnonymousRead {
			return nil
		}
		a.logger.Info("anonymous reads are off and no --dns-token is set: DNS refuses every service query")
	}
	return func(service string) error { return a.api.Authorize(secret, api.AccessRead, service) }
}

func loopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return host == "localhost" || (ip != nil && ip.IsLoopback())
}

// withClusterActor turns the API's record of who made a request into the
// cluster's, so that the leader's audit line names them.
func withClusterActor(ctx context.Context) context.Context {
	if a, ok := api.ActorFrom(ctx); ok {
		return cluster.WithActor(ctx, cluster.Actor{Accessor: a.Accessor, Remote: a.Remote})
	}
	return ctx
}

// Routes returns every route pattern of the agent's HTTP API with the
// policy it requires (docs/security.md).
func (a *Agent) Routes() map[string]string { return a.api.Routes() }

// auditTTL writes the audit line of a TTL report the leader accepted (the
// health subsystem calls it on the leader, with the context the report was
// forwarded with, which carries its Actor). A report that changed nothing
// wrote nothing: it gets a debug line only, so that heartbeats do not flood
// the audit log.
func (a *Agent) auditTTL(ctx context.Context, check string, status fsm.Health, idx uint64, wrote bool) {
	actor, ok := cluster.ActorFrom(ctx)
	if !ok {
		return
	}
	audit := a.logger.Named("audit")
	// Only a report that was written, and only once per write: a heartbeat
	// answers with the check's last index, which is not a write of its own.
	if wrote {
		audit.Info("write accepted", "op", "check-update", "index", idx, "accessor", actor.Accessor,
			"remote", actor.Remote, "via", actor.Node, "check", check, "status", string(status))
		return
	}
	audit.Debug("ttl report accepted without change", "accessor", actor.Accessor, "remote", actor.Remote,
		"via", actor.Node, "check", check, "status", string(status))
}
