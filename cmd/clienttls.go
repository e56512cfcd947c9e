package cmd

import (
	"crypto/tls"
	"errors"
	"fmt"
	"strconv"

	"github.com/beaconhq/beacon/agent"
	"github.com/beaconhq/beacon/api/client"
	"github.com/spf13/pflag"
)

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
		pool, err := agent.LoadCertPool(o.CACert)
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
	cfg.TLS = tc
	return cfg, nil
}
