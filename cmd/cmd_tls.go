package cmd

import (
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/beaconhq/beacon/agent"
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
	certFile, keyFile, err := agent.CreateCA(opts.dir, opts.days, opts.name)
	if err != nil {
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
	// caAlias is --ca, the older name of --ca-cert; caSet says whether
	// --ca-cert was given.
	caAlias string
	caSet   bool
	dir     string
	days    int
}

func newTLSCertCreateCmd(f *Factory, runF func(*tlsCertOptions) error) *cobra.Command {
	opts := &tlsCertOptions{f: f}
	c := &cobra.Command{
		Use:   "create",
		Short: "Create a certificate signed by the CA: NODE.pem and NODE-key.pem",
		Args:  exactArgs(0),
		RunE: func(c *cobra.Command, args []string) error {
			opts.caSet = c.Flags().Changed("ca-cert")
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
	// --ca-cert, as the CLI's client flag for the same file (this local
	// flag takes its place here); --ca, its first name, still works.
	fl.StringVar(&opts.ca, "ca-cert", "beacon-ca.pem", "CA certificate that signs the new one")
	fl.StringVar(&opts.caAlias, "ca", "", "alias of --ca-cert")
	fl.StringVar(&opts.caKey, "ca-key", "beacon-ca-key.pem", "CA private key")
	fl.StringVar(&opts.dir, "dir", ".", "directory to write the files to")
	fl.IntVar(&opts.days, "days", 365, "validity in days")
	return c
}

func runTLSCertCreate(opts *tlsCertOptions) error {
	if opts.caAlias != "" {
		if opts.caSet && opts.caAlias != opts.ca {
			return usageError{errors.New("--ca is an alias of --ca-cert: give one of them")}
		}
		opts.ca = opts.caAlias
	}
	if opts.node == "" {
		return usageError{errors.New("--node is required")}
	}
	if err := agent.CheckCertName(opts.node); err != nil {
		return usageError{err}
	}
	if opts.days <= 0 {
		return usageError{errors.New("--days must be positive")}
	}
	req := agent.CertRequest{Node: opts.node, DNS: opts.dns, Client: opts.client, CAFile: opts.ca, CAKeyFile: opts.caKey, Dir: opts.dir, Days: opts.days}
	for _, s := range opts.ips {
		ip := net.ParseIP(s)
		if ip == nil {
			return usageError{fmt.Errorf("--ip %q is not an IP address", s)}
		}
		req.IPs = append(req.IPs, ip)
	}
	for _, d := range opts.dns {
		if err := agent.CheckCertName(d); err != nil {
			return usageError{fmt.Errorf("--dns: %w", err)}
		}
	}
	c, err := agent.CreateCert(req)
	if err != nil {
		return err
	}
	kind := "server"
	if opts.client {
		kind = "client"
	}
	fmt.Fprintf(opts.f.Out, "Wrote %s certificate %s and key %s (names %v, IPs %v, valid until %s)\n",
		kind, c.CertFile, c.KeyFile, c.DNS, c.IPs, c.NotAfter.UTC().Format(time.DateOnly))
	return nil
}
