package agent

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
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
func (c Config) tlsConfigs() (agentTLS, error) {
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
		pool, err := LoadCertPool(c.TLSHTTPClientCAFile)
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
		if pool, err = LoadCertPool(c.TLSCAFile); err != nil {
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

// LoadCertPool reads a PEM CA bundle into a certificate pool; it fails when
// the file holds no certificate. The agent's TLS settings and the CLI's
// client options both load their CA files through it.
func LoadCertPool(file string) (*x509.CertPool, error) {
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
