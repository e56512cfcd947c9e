package cmd

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/beaconhq/beacon/api/client"
	"github.com/beaconhq/beacon/fsm"
	"github.com/spf13/cobra"
)

// Build information, set with -ldflags at build time.
var (
	Version = "dev"
	Commit  = "unknown"
)

// Exit codes.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

// Main runs the beacon command line and returns the process exit code.
func Main() int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	f := &Factory{In: os.Stdin, Out: os.Stdout, Err: os.Stderr, Getenv: os.Getenv}
	root := NewRootCmd(f)
	root.SetArgs(os.Args[1:])
	err := root.ExecuteContext(ctx)
	return exitCode(f.Err, err)
}

// usageError marks errors in how the command was called.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// exitCode prints err as one line and maps it to an exit code. It is the
// one place that decides exit codes.
func exitCode(stderr io.Writer, err error) int {
	if err == nil {
		return exitOK
	}
	// The message may carry what a server said (or whatever answered at
	// --addr): it is printed escaped, as the tables are.
	msg := fsm.EscapeControl(strings.ReplaceAll(err.Error(), "\n", " "))
	fmt.Fprintln(stderr, "Error:", msg)
	if hint := hintFor(err); hint != "" {
		fmt.Fprintln(stderr, "Hint:", hint)
	}
	var ue usageError
	if errors.As(err, &ue) {
		return exitUsage
	}
	return exitError
}

// hintFor suggests what to do about errors a new user meets first.
func hintFor(err error) string {
	var ue *client.UnreachableError
	var na *client.NotAgentError
	if h := tlsHint(err); h != "" {
		return h
	}
	switch {
	case errors.As(err, &ue):
		return "is an agent running there? Point --addr or BEACON_ADDR at agents' HTTP addresses (default 127.0.0.1:8750). " +
			"Start one with 'beacon agent --dev', or the compose cluster with 'make up', then " +
			"export BEACON_ADDR=127.0.0.1:18750,127.0.0.1:28750,127.0.0.1:38750. " +
			"If the agent serves HTTPS, give its CA with --ca-cert FILE (BEACON_CACERT) or write https://HOST:PORT"
	case errors.Is(err, client.ErrAttemptTimeout):
		return "an agent accepted the connection but did not answer in time: it may be paused, overloaded or stuck " +
			"(its log; 'beacon operator raft servers' through another agent shows each server's state). " +
			"List several agents in --addr or BEACON_ADDR to move past one that does not answer"
	case errors.As(err, &na):
		return "point --addr or BEACON_ADDR at an agent's HTTP API (port 8750 by default; in the compose cluster " +
			"127.0.0.1:18750, :28750 and :38750; 18080 and 28080 are its load balancers)"
	}
	return ""
}

// Hints about HTTPS: the agent speaks it and the client did not, or the
// handshake failed.
const (
	hintHTTPS = "the agent serves HTTPS: give the CA that signed its certificate with --ca-cert FILE (BEACON_CACERT), " +
		"which makes an address without a scheme https://, or write the address as https://HOST:PORT"
	hintVerify = "the agent's HTTPS certificate could not be verified: give the CA that signed it with --ca-cert FILE " +
		"(BEACON_CACERT; 'beacon tls ca create' wrote beacon-ca.pem), and --tls-server-name if the certificate names the agent otherwise"
	hintClientCert = "the agent refused the TLS handshake: it requires a client certificate its CA signed " +
		"(--client-cert FILE --client-key FILE, or BEACON_CLIENT_CERT and BEACON_CLIENT_KEY; 'beacon tls cert create --client' makes one)"
	hintPlain = "the agent serves plain HTTP: write http://HOST:PORT, or leave out --ca-cert (BEACON_CACERT) and the other TLS options"
)

// tlsHint returns the hint of an HTTPS mismatch in err: the agent
// answered a plain request with its https_required 400, or an address
// failed with a TLS error. "" when there is none.
func tlsHint(err error) string {
	var ce *client.Error
	if errors.As(err, &ce) && ce.Code == "https_required" {
		return hintHTTPS
	}
	errs := []error{err}
	var ue *client.UnreachableError
	if errors.As(err, &ue) {
		errs = ue.Errs
	}
	var ae *client.AttemptsError
	if errors.As(err, &ae) {
		errs = errs[:0]
		for _, a := range ae.Attempts {
			errs = append(errs, a.Err)
		}
	}
	for _, e := range errs {
		if h := tlsErrorHint(e); h != "" {
			return h
		}
	}
	return ""
}

func tlsErrorHint(err error) string {
	if err == nil {
		return ""
	}
	var cve *tls.CertificateVerificationError
	var uae x509.UnknownAuthorityError
	var he x509.HostnameError
	var cie x509.CertificateInvalidError
	var oe *net.OpError
	switch {
	case errors.As(err, &cve), errors.As(err, &uae), errors.As(err, &he), errors.As(err, &cie):
		return hintVerify
	case errors.As(err, &oe) && oe.Op == "remote error" && strings.Contains(oe.Err.Error(), "tls:"):
		// An alert from the agent: it wants a (valid) client certificate.
		return hintClientCert
	case strings.Contains(err.Error(), "server gave HTTP response to HTTPS client"):
		return hintPlain
	}
	return ""
}

// Factory carries the IO streams and global flags, and builds the API
// client lazily so that --help and local commands never touch the network.
type Factory struct {
	In     io.Reader
	Out    io.Writer
	Err    io.Writer
	Getenv func(string) string

	Addr   string
	Token  string
	Output string
	// AttemptTimeout bounds one request to one agent (--attempt-timeout).
	AttemptTimeout time.Duration
	// TLS holds the client's HTTPS options (tlsconfig.go).
	TLS clientTLSFlags

	client *client.Client
}

// Client returns the API client for --addr (a comma-separated list).
func (f *Factory) Client() (*client.Client, error) {
	if f.client != nil {
		return f.client, nil
	}
	cfg, err := f.clientConfig()
	if err != nil {
		return nil, err
	}
	c, err := client.New(cfg)
	if err != nil {
		return nil, usageError{err}
	}
	f.client = c
	return c, nil
}

// clientConfig is the API client configuration of the global flags: the
// agents of --addr (a comma-separated list), the token, TLS and the attempt
// timeout of the client's fail-over policy.
func (f *Factory) clientConfig() (client.Config, error) {
	var addrs []string
	for _, a := range strings.Split(f.Addr, ",") {
		if a = strings.TrimSpace(a); a != "" {
			addrs = append(addrs, a)
		}
	}
	cfg, err := f.TLS.clientConfig(addrs, f.Token)
	if err != nil {
		return cfg, usageError{err}
	}
	cfg.AttemptTimeout = f.AttemptTimeout
	return cfg, nil
}

// Print writes v as indented JSON with -o json, else calls table with a
// tab-aligned writer.
func (f *Factory) Print(v any, table func(w io.Writer)) error {
	switch f.Output {
	case "json":
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(f.Out, string(jsonSafe(b)))
		return err
	case "table", "":
		tw := tabwriter.NewWriter(f.Out, 0, 4, 2, ' ', 0)
		table(termSafe{tw})
		return tw.Flush()
	}
	return usageError{fmt.Errorf("unknown output format %q (use table or json)", f.Output)}
}

// termSafe passes what a table writes to w with every character escaped
// that could drive a terminal or reorder what it shows (fsm.EscapeControl:
// control and format characters, U+202E among them), except the tabs and
// newlines that lay the table out. Tables print what agents (or whatever
// answered at --addr) sent; escaping here covers every column. Each Write
// must hold whole characters, as one fmt.Fprintf call does.
type termSafe struct{ w io.Writer }

func (t termSafe) Write(p []byte) (int, error) {
	var b strings.Builder
	for s := string(p); s != ""; {
		i := strings.IndexAny(s, "\t\n")
		if i < 0 {
			b.WriteString(fsm.EscapeControl(s))
			break
		}
		b.WriteString(fsm.EscapeControl(s[:i]))
		b.WriteByte(s[i])
		s = s[i+1:]
	}
	if _, err := io.WriteString(t.w, b.String()); err != nil {
		return 0, err
	}
	return len(p), nil
}

// jsonSafe returns the JSON text b with the characters fsm.EscapeControl
// escapes written as JSON escapes (\u202e): the same values for a program
// reading it, nothing a terminal acts on for a person. encoding/json
// already escapes C0 in strings (the C0 left, newlines and spaces, lay the
// text out) and replaces bytes that are not UTF-8.
func jsonSafe(b []byte) []byte {
	if !bytes.ContainsFunc(b, jsonEscaped) {
		return b
	}
	out := make([]byte, 0, len(b)+32)
	for len(b) > 0 {
		r, size := utf8.DecodeRune(b)
		if jsonEscaped(r) {
			for _, u := range utf16.AppendRune(nil, r) {
				out = fmt.Appendf(out, `\u%04x`, u)
			}
		} else {
			out = append(out, b[:size]...)
		}
		b = b[size:]
	}
	return out
}

func jsonEscaped(r rune) bool { return r >= 0x7f && fsm.Escaped(r) }

// esc escapes a server-provided string for a table or line of text as
// check output is (fsm.EscapeControl): node names, addresses and the like
// come from gossip peers, registrations and other agents, and a terminal
// escape or a tab in one would reach the operator's terminal or forge a
// column.
func esc(s string) string { return fsm.EscapeControl(s) }

func envOr(getenv func(string) string, key, def string) string {
	if v := getenv(key); v != "" {
		return v
	}
	return def
}

// NewRootCmd builds the beacon command tree.
func NewRootCmd(f *Factory) *cobra.Command {
	root := &cobra.Command{
		Use:           "beacon",
		Short:         "Beacon is a service registry replicated with Raft",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(f.Out)
	root.SetErr(f.Err)
	pf := root.PersistentFlags()
	pf.StringVar(&f.Addr, "addr", envOr(f.Getenv, "BEACON_ADDR", "127.0.0.1:8750"), "agent HTTP address(es), comma-separated (env BEACON_ADDR)")
	pf.StringVar(&f.Token, "token", f.Getenv("BEACON_TOKEN"), "API token (env BEACON_TOKEN)")
	pf.StringVarP(&f.Output, "output", "o", "table", "output format: table or json")
	attempt := client.DefaultAttemptTimeout
	if d, err := time.ParseDuration(f.Getenv("BEACON_ATTEMPT_TIMEOUT")); err == nil && d > 0 {
		attempt = d
	}
	pf.DurationVar(&f.AttemptTimeout, "attempt-timeout", attempt, "longest wait for one agent's answer before the next address is tried (env BEACON_ATTEMPT_TIMEOUT)")
	addClientTLSFlags(pf, &f.TLS, f.Getenv)
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return usageError{err} })

	root.AddCommand(
		newAgentCmd(f, nil),
		newMembersCmd(f, nil),
		newJoinCmd(f, nil),
		newLeaveCmd(f, nil),
		newStatusCmd(f, nil),
		newRegisterCmd(f, nil),
		newDeregisterCmd(f, nil),
		newServicesCmd(f, nil),
		newDiscoverCmd(f, nil),
		newLBCmd(f, nil),
		newChecksCmd(f, nil),
		newCheckCmd(f, nil),
		newMaintCmd(f, nil),
		newOperatorCmd(f),
		newSnapshotCmd(f),
		newForceLeaveCmd(f, nil),
		newHealthCmd(f, nil),
		newDemoCmd(f, nil),
		newVersionCmd(f),
		newTokenCmd(f),
		newTLSCmd(f),
		newKeygenCmd(f, nil),
	)
	return root
}

// exactArgs is cobra.ExactArgs with a usage error that shows the usage.
func exactArgs(n int) cobra.PositionalArgs {
	return func(c *cobra.Command, args []string) error {
		if len(args) != n {
			return argsError(c, fmt.Sprintf("takes %d argument%s", n, plural(n)), len(args))
		}
		return nil
	}
}

func minArgs(n int) cobra.PositionalArgs {
	return func(c *cobra.Command, args []string) error {
		if len(args) < n {
			return argsError(c, fmt.Sprintf("needs at least %d argument%s", n, plural(n)), len(args))
		}
		return nil
	}
}

// argsError says what is wrong with the arguments and how the command is
// used, in one line: "register takes 2 arguments, got 1. Usage: beacon
// register SERVICE ID [flags] (beacon register --help)".
func argsError(c *cobra.Command, want string, got int) error {
	return usageError{fmt.Errorf("%s %s, got %d. Usage: %s (%s --help)", c.Name(), want, got, c.UseLine(), c.CommandPath())}
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

func newVersionCmd(f *Factory) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  exactArgs(0),
		RunE: func(c *cobra.Command, args []string) error {
			return f.Print(map[string]string{"version": Version, "commit": Commit}, func(w io.Writer) {
				fmt.Fprintf(w, "beacon %s (%s)\n", Version, Commit)
			})
		},
	}
}
