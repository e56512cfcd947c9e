package cmd

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"

	"github.com/beaconhq/beacon/api/client"
	"github.com/spf13/pflag"
)

// ServerTLSName is the name every server certificate made by `beacon tls
// cert create` carries. With --tls-verify-server-hostname (the default) a
// node dialling a peer's cluster port accepts only a certificate valid for
// this name, so a client certificate from the same CA cannot pose as a
// server. Peers are dialled by IP, which changes in containers; the role
// name does not.
const ServerTLSName = "server.beacon"

// agentTLS holds the TLS configurations of an agent; nil fields mean plain
// TCP.
type agentTLS struct {
	http    *tls.Config // the HTTP API's listener
	in, out *tls.Config // the cluster port: accepting and dialling
}

// tlsConfigs builds the agent's TLS configurations from its files. TLS is
// on when a certificate and key are given: the API serves HTTPS, and the
// cluster port (Raft and RPC) speaks TLS 1.3 with the verification chosen by
// the tls_verify_* settings.
func (c AgentConfig) tlsConfigs() (agentTLS, error) {
	var out agentTLS
	if c.TLSCertFile == "" && c.TLSKeyFile == "" {
		if c.TLSCAFile != "" || c.TLSHTTPClientCAFile != "" {
			return out, errors.New("agent: a TLS CA is set but no --tls-cert-file and --tls-key-file")
		}
		return out, nil
	}
	if c.TLSCertFile == "" || c.TLSKeyFile == "" {
		return out, errors.New("agent: TLS needs both --tls-cert-file and --tls-key-file")
	}
	cert, err := tls.LoadX509KeyPair(c.TLSCertFile, c.TLSKeyFile)
	if err != nil {
		return out, fmt.Errorf("agent: load TLS certificate: %w", err)
	}
	out.http = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if c.TLSHTTPClientCAFile != "" {
		pool, err := loadCertPool(c.TLSHTTPClientCAFile)
		if err != nil {
			return out, err
		}
		out.http.ClientCAs = pool
		out.http.ClientAuth = tls.RequireAndVerifyClientCert
	}

	var pool *x509.CertPool
	if c.TLSVerifyIncoming || c.TLSVerifyOutgoing {
		if c.TLSCAFile == "" {
			return out, errors.New("agent: verifying cluster peers (--tls-verify-incoming, --tls-verify-outgoing) needs --tls-ca-file")
		}
		if pool, err = loadCertPool(c.TLSCAFile); err != nil {
			return out, err
		}
	}
	out.in = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13}
	if c.TLSVerifyIncoming {
		out.in.ClientCAs = pool
		out.in.ClientAuth = tls.RequireAndVerifyClientCert
	}
	out.out = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13}
	switch {
	case c.TLSVerifyOutgoing && c.TLSVerifyServerHostname:
		out.out.RootCAs = pool
		out.out.ServerName = ServerTLSName
	case c.TLSVerifyOutgoing:
		// The chain only: any server certificate the CA signed.
		out.out.InsecureSkipVerify = true
		out.out.VerifyConnection = verifyChain(pool, x509.ExtKeyUsageServerAuth)
	default:
		// Encrypted, not verified: the cluster-secret handshake still
		// authenticates peers.
		out.out.InsecureSkipVerify = true
	}
	return out, nil
}

// verifyChain checks the peer's certificate chain against pool, for usage,
// without checking names.
func verifyChain(pool *x509.CertPool, usage x509.ExtKeyUsage) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("tls: peer sent no certificate")
		}
		inter := x509.NewCertPool()
		for _, c := range cs.PeerCertificates[1:] {
			inter.AddCert(c)
		}
		_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{
			Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{usage},
		})
		return err
	}
}

func loadCertPool(file string) (*x509.CertPool, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("CA file %s holds no PEM certificate", file)
	}
	return pool, nil
}

// clientTLSFlags are the CLI's options for talking HTTPS to agents.
type clientTLSFlags struct {
	CACert     string
	ClientCert string
	ClientKey  string
	ServerName string
	SkipVerify bool
}

// enabled reports whether any TLS option was given.
func (o clientTLSFlags) enabled() bool {
	return o.CACert != "" || o.ClientCert != "" || o.ClientKey != "" || o.ServerName != "" || o.SkipVerify
}

// addClientTLSFlags defines the client TLS flags on fs, with defaults from
// the environment.
func addClientTLSFlags(fs *pflag.FlagSet, o *clientTLSFlags, getenv func(string) string) {
	skip, _ := strconv.ParseBool(getenv("BEACON_TLS_SKIP_VERIFY"))
	fs.StringVar(&o.CACert, "ca-cert", getenv("BEACON_CACERT"), "PEM CA bundle verifying the agent's HTTPS certificate (env BEACON_CACERT); implies https://")
	fs.StringVar(&o.ClientCert, "client-cert", getenv("BEACON_CLIENT_CERT"), "PEM client certificate for agents that require one (env BEACON_CLIENT_CERT)")
	fs.StringVar(&o.ClientKey, "client-key", getenv("BEACON_CLIENT_KEY"), "PEM key of --client-cert (env BEACON_CLIENT_KEY)")
	fs.StringVar(&o.ServerName, "tls-server-name", getenv("BEACON_TLS_SERVER_NAME"), "name expected in the agent's certificate (env BEACON_TLS_SERVER_NAME; default: the host dialled)")
	fs.BoolVar(&o.SkipVerify, "tls-skip-verify", skip, "do not verify the agent's certificate (env BEACON_TLS_SKIP_VERIFY; for tests only)")
}

// config returns the client TLS configuration, or nil when TLS is not asked for.
func (o clientTLSFlags) config() (*tls.Config, error) {
	if !o.enabled() {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: o.ServerName, InsecureSkipVerify: o.SkipVerify}
	if o.CACert != "" {
		pool, err := loadCertPool(o.CACert)
		if err != nil {
			return nil, err
		}
		cfg.RootCAs = pool
	}
	if (o.ClientCert == "") != (o.ClientKey == "") {
		return nil, errors.New("--client-cert and --client-key go together")
	}
	if o.ClientCert != "" {
		cert, err := tls.LoadX509KeyPair(o.ClientCert, o.ClientKey)
		if err != nil {
			return nil, fmt.Errorf("load client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// clientConfig returns the API client configuration for addrs: with TLS
// options, addresses without a scheme use https.
func (o clientTLSFlags) clientConfig(addrs []string, token string) (client.Config, error) {
	cfg := client.Config{Addresses: addrs, Token: token}
	tc, err := o.config()
	if err != nil {
		return cfg, err
	}
	if tc == nil {
		return cfg, nil
	}
	cfg.Addresses = make([]string, len(addrs))
	for i, a := range addrs {
		if !strings.Contains(a, "://") {
			a = "https://" + a
		}
		cfg.Addresses[i] = a
	}
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = 64
	t.TLSClientConfig = tc
	cfg.HTTPClient = &http.Client{Transport: t}
	return cfg, nil
}
