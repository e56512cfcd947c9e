package cmd

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"time"

	"github.com/spf13/cobra"
)

func newTLSCmd(f *Factory) *cobra.Command {
	c := &cobra.Command{
		Use:   "tls",
		Short: "Make a CA and node certificates for a dev or compose cluster",
		Long: `beacon tls makes ECDSA P-256 certificates for a cluster that has no PKI yet:

  beacon tls ca create                                   # beacon-ca.pem, beacon-ca-key.pem
  beacon tls cert create --node node1 --dns node1 --ip 10.0.0.1   # node1.pem, node1-key.pem
  beacon tls cert create --node cli --client              # a client certificate for the CLI

Server certificates carry the name server.beacon (checked by
--tls-verify-server-hostname), the node name, localhost, 127.0.0.1 and ::1, and
the --dns and --ip given. Keys are written with mode 0600; files are never
overwritten. See docs/security.md.`,
	}
	ca := &cobra.Command{Use: "ca", Short: "Certificate authority"}
	ca.AddCommand(newTLSCACreateCmd(f, nil))
	cert := &cobra.Command{Use: "cert", Short: "Node and client certificates"}
	cert.AddCommand(newTLSCertCreateCmd(f, nil))
	c.AddCommand(ca, cert)
	return c
}

type tlsCAOptions struct {
	f    *Factory
	dir  string
	days int
	name string
}

func newTLSCACreateCmd(f *Factory, runF func(*tlsCAOptions) error) *cobra.Command {
	opts := &tlsCAOptions{f: f}
	c := &cobra.Command{
		Use:   "create",
		Short: "Create a CA: beacon-ca.pem and beacon-ca-key.pem",
		Args:  exactArgs(0),
		RunE: func(c *cobra.Command, args []string) error {
			if runF != nil {
				return runF(opts)
			}
			return runTLSCACreate(opts)
		},
	}
	c.Flags().StringVar(&opts.dir, "dir", ".", "directory to write the files to")
	c.Flags().IntVar(&opts.days, "days", 5*365, "validity in days")
	c.Flags().StringVar(&opts.name, "common-name", "Beacon CA", "the CA's common name")
	return c
}

func runTLSCACreate(opts *tlsCAOptions) error {
	if opts.days <= 0 {
		return usageError{errors.New("--days must be positive")}
	}
	certFile, keyFile := filepath.Join(opts.dir, "beacon-ca.pem"), filepath.Join(opts.dir, "beacon-ca-key.pem")
	if err := refuseExisting(certFile, keyFile); err != nil {
		return err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: opts.name, Organization: []string{"Beacon"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(0, 0, opts.days),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		SubjectKeyId:          keyID(&key.PublicKey),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	if err := writePEM(keyFile, key, nil); err != nil {
		return err
	}
	if err := writePEM(certFile, nil, der); err != nil {
		return err
	}
	fmt.Fprintf(opts.f.Out, "Wrote %s and %s (keep the key offline: whoever holds it can mint certificates the cluster trusts)\n", certFile, keyFile)
	return nil
}

type tlsCertOptions struct {
	f      *Factory
	node   string
	ips    []string
	dns    []string
	client bool
	ca     string
	caKey  string
	dir    string
	days   int
}

func newTLSCertCreateCmd(f *Factory, runF func(*tlsCertOptions) error) *cobra.Command {
	opts := &tlsCertOptions{f: f}
	c := &cobra.Command{
		Use:   "create",
		Short: "Create a certificate signed by the CA: NODE.pem and NODE-key.pem",
		Args:  exactArgs(0),
		RunE: func(c *cobra.Command, args []string) error {
			if runF != nil {
				return runF(opts)
			}
			return runTLSCertCreate(opts)
		},
	}
	fl := c.Flags()
	fl.StringVar(&opts.node, "node", "", "node name (also the file name); required")
	fl.StringArrayVar(&opts.ips, "ip", nil, "IP address to include (repeatable)")
	fl.StringArrayVar(&opts.dns, "dns", nil, "DNS name to include (repeatable)")
	fl.BoolVar(&opts.client, "client", false, "a client certificate (for the CLI or beacon lb), not a server's")
	fl.StringVar(&opts.ca, "ca", "beacon-ca.pem", "CA certificate")
	fl.StringVar(&opts.caKey, "ca-key", "beacon-ca-key.pem", "CA private key")
	fl.StringVar(&opts.dir, "dir", ".", "directory to write the files to")
	fl.IntVar(&opts.days, "days", 365, "validity in days")
	return c
}

func runTLSCertCreate(opts *tlsCertOptions) error {
	if opts.node == "" {
		return usageError{errors.New("--node is required")}
	}
	if err := validateCertName(opts.node); err != nil {
		return usageError{err}
	}
	if opts.days <= 0 {
		return usageError{errors.New("--days must be positive")}
	}
	var ips []net.IP
	if !opts.client {
		ips = []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	}
	for _, s := range opts.ips {
		ip := net.ParseIP(s)
		if ip == nil {
			return usageError{fmt.Errorf("--ip %q is not an IP address", s)}
		}
		ips = append(ips, ip)
	}
	dns := []string{opts.node}
	if !opts.client {
		dns = append(dns, ServerTLSName, "localhost")
	}
	for _, d := range opts.dns {
		if err := validateCertName(d); err != nil {
			return usageError{fmt.Errorf("--dns: %w", err)}
		}
		dns = append(dns, d)
	}
	caCert, caKey, err := loadCA(opts.ca, opts.caKey)
	if err != nil {
		return err
	}
	certFile, keyFile := filepath.Join(opts.dir, opts.node+".pem"), filepath.Join(opts.dir, opts.node+"-key.pem")
	if err := refuseExisting(certFile, keyFile); err != nil {
		return err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: opts.node, Organization: []string{"Beacon"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.AddDate(0, 0, opts.days),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		// Servers dial each other, so their certificates serve both ends.
		ExtKeyUsage:    []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:       dns,
		IPAddresses:    ips,
		SubjectKeyId:   keyID(&key.PublicKey),
		AuthorityKeyId: caCert.SubjectKeyId,
	}
	if opts.client {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	if caCert.NotAfter.Before(tmpl.NotAfter) {
		tmpl.NotAfter = caCert.NotAfter
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		return fmt.Errorf("sign certificate: %w", err)
	}
	if err := writePEM(keyFile, key, nil); err != nil {
		return err
	}
	if err := writePEM(certFile, nil, der); err != nil {
		return err
	}
	kind := "server"
	if opts.client {
		kind = "client"
	}
	fmt.Fprintf(opts.f.Out, "Wrote %s certificate %s and key %s (names %v, IPs %v, valid until %s)\n",
		kind, certFile, keyFile, dns, ips, tmpl.NotAfter.UTC().Format(time.DateOnly))
	return nil
}

var hostname = regexp.MustCompile(`^[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?$`)

// validateCertName accepts a node or DNS name that is safe as a file name.
func validateCertName(s string) error {
	if len(s) > 253 || !hostname.MatchString(s) {
		return fmt.Errorf("%q is not a valid name (letters, digits, '.', '-' and '_')", s)
	}
	return nil
}

func loadCA(certFile, keyFile string) (*x509.Certificate, crypto.Signer, error) {
	cb, err := os.ReadFile(certFile)
	if err != nil {
		return nil, nil, fmt.Errorf("read CA certificate (make one with `beacon tls ca create`): %w", err)
	}
	kb, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("read CA key: %w", err)
	}
	cp, _ := pem.Decode(cb)
	if cp == nil || cp.Type != "CERTIFICATE" {
		return nil, nil, fmt.Errorf("%s: no PEM certificate", certFile)
	}
	cert, err := x509.ParseCertificate(cp.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", certFile, err)
	}
	if !cert.IsCA {
		return nil, nil, fmt.Errorf("%s is not a CA certificate", certFile)
	}
	kp, _ := pem.Decode(kb)
	if kp == nil {
		return nil, nil, fmt.Errorf("%s: no PEM key", keyFile)
	}
	k, err := x509.ParsePKCS8PrivateKey(kp.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", keyFile, err)
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return nil, nil, fmt.Errorf("%s: unsupported key type %T", keyFile, k)
	}
	return cert, signer, nil
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n.Add(n, big.NewInt(1))
}

func keyID(pub *ecdsa.PublicKey) []byte {
	der, _ := x509.MarshalPKIXPublicKey(pub)
	sum := sha1.Sum(der) // RFC 5280 §4.2.1.2 method 1: an identifier, not a security control
	return sum[:]
}

// refuseExisting fails if any of files exists.
func refuseExisting(files ...string) error {
	for _, f := range files {
		if _, err := os.Stat(f); err == nil {
			return fmt.Errorf("%s exists; not overwriting it", f)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

// writePEM writes a key (mode 0600) or a certificate (0644), failing if the
// file exists.
func writePEM(path string, key *ecdsa.PrivateKey, certDER []byte) error {
	var block *pem.Block
	mode := os.FileMode(0o644)
	if key != nil {
		der, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return err
		}
		block, mode = &pem.Block{Type: "PRIVATE KEY", Bytes: der}, 0o600
	} else {
		block = &pem.Block{Type: "CERTIFICATE", Bytes: certDER}
	}
	fh, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if err := pem.Encode(fh, block); err != nil {
		fh.Close()
		return err
	}
	return fh.Close()
}
