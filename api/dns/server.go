package dns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/miekg/dns"

	"github.com/beaconhq/beacon/fsm"
)

// DefaultPort is the DNS port when an address names none.
const DefaultPort = "8753"

// Freshness tells how long ago this node heard from the Raft leader (0 on
// the leader itself, a huge value if it never has).
type Freshness interface {
	LastContact() time.Duration
}

// diverger is optionally implemented by the Freshness (cluster.Node): a
// server that applied what the cluster never committed answers every
// service query SERVFAIL.
type diverger interface {
	Diverged() bool
}

// Config configures the DNS server.
type Config struct {
	// Addr is the host:port to serve on, over both UDP and TCP. A host
	// without a port gets DefaultPort. Port 0 picks a free port (the same
	// one for UDP and TCP).
	Addr string
	// Domain is the zone answered, such as "beacon." (a trailing dot is added).
	Domain string
	// TTL is the time to live of every record (whole seconds).
	TTL time.Duration
	// MaxStale is how long without contact with the leader the node still
	// answers; past it every service query gets SERVFAIL, unless AllowStale.
	MaxStale   time.Duration
	AllowStale bool
	// MaxUDPSize caps the EDNS0 buffer size honoured for UDP answers.
	MaxUDPSize int
	// Authorize, when set, is asked for every service query (with the
	// service's name): an error makes the answer REFUSED, without saying
	// whether the service exists. The agent asks the API's token rules
	// with the DNS token (--dns-token; none: an anonymous client's
	// rights, so anonymous reads off refuse every service query). Nil
	// answers every service. It must be safe for concurrent use.
	Authorize func(service string) error

	Logger hclog.Logger
}

// DefaultConfig returns the documented defaults (with Addr unset: DNS is off
// unless an address is given).
func DefaultConfig() Config {
	return Config{
		Domain:     "beacon.",
		TTL:        5 * time.Second,
		MaxStale:   5 * time.Second,
		MaxUDPSize: 4096,
	}
}

// Validate reports the first problem with c.
func (c Config) Validate() error {
	if c.Addr == "" {
		return errors.New("dns: no address")
	}
	host, port, err := net.SplitHostPort(WithDefaultPort(c.Addr))
	if err != nil {
		return fmt.Errorf("dns: address %q: %w", c.Addr, err)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		return fmt.Errorf("dns: address %q: bad port", c.Addr)
	}
	if strings.Contains(host, ":") && net.ParseIP(host) == nil {
		return fmt.Errorf("dns: address %q: bad host", c.Addr)
	}
	if _, ok := dns.IsDomainName(c.Domain); !ok || strings.Trim(c.Domain, ".") == "" {
		return fmt.Errorf("dns: bad domain %q", c.Domain)
	}
	if c.TTL < 0 || c.TTL > 24*time.Hour {
		return errors.New("dns: ttl must be 0-24h")
	}
	if c.MaxStale <= 0 {
		return errors.New("dns: max stale must be positive")
	}
	if c.MaxUDPSize < dns.MinMsgSize || c.MaxUDPSize > dns.MaxMsgSize {
		return fmt.Errorf("dns: max udp size must be %d-%d", dns.MinMsgSize, dns.MaxMsgSize)
	}
	return nil
}

// WithDefaultPort returns addr with DefaultPort if it names no port.
func WithDefaultPort(addr string) string {
	if _, _, err := net.SplitHostPort(addr); err == nil {
		return addr
	}
	return net.JoinHostPort(strings.Trim(addr, "[]"), DefaultPort)
}

// Server answers DNS queries from a store. Build it with New, then Start;
// Shutdown stops it. ServeDNS is safe for concurrent use.
type Server struct {
	cfg    Config
	store  *fsm.Store
	fresh  Freshness
	logger hclog.Logger
	domain string // lower case, with the trailing dot
	ttl    uint32

	mu      sync.Mutex
	servers []*dns.Server
	addr    string
	wg      sync.WaitGroup
}

// New returns a server over store that is not serving yet.
func New(cfg Config, store *fsm.Store, fresh Freshness) (*Server, error) {
	cfg.Domain = dns.Fqdn(strings.ToLower(cfg.Domain))
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	logger := cfg.Logger
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	return &Server{
		cfg: cfg, store: store, fresh: fresh, logger: logger,
		domain: cfg.Domain, ttl: uint32(cfg.TTL / time.Second),
	}, nil
}

// Start binds the UDP and TCP sockets and serves them until Shutdown.
func (s *Server) Start() error {
	pc, ln, err := listen(WithDefaultPort(s.cfg.Addr))
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.addr = pc.LocalAddr().String()
	udp := &dns.Server{PacketConn: pc, Handler: s, UDPSize: s.cfg.MaxUDPSize, ReadTimeout: 2 * time.Second, WriteTimeout: 2 * time.Second}
	tcp := &dns.Server{Listener: ln, Handler: s, ReadTimeout: 2 * time.Second, WriteTimeout: 2 * time.Second}
	for _, srv := range []*dns.Server{udp, tcp} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		errc := make(chan error, 1)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if err := srv.ActivateAndServe(); err != nil {
				errc <- err
			}
		}()
		select {
		case <-started:
			s.servers = append(s.servers, srv)
		case err := <-errc:
			pc.Close()
			ln.Close()
			for _, started := range s.servers {
				_ = started.Shutdown()
			}
			s.wg.Wait()
			return fmt.Errorf("dns: serve: %w", err)
		}
	}
	s.logger.Info("dns serving", "addr", s.addr, "domain", s.domain)
	return nil
}

// listen binds UDP and TCP on the same address. With port 0 it retries a few
// times in case the port UDP got is taken for TCP.
func listen(addr string) (net.PacketConn, net.Listener, error) {
	host, port, _ := net.SplitHostPort(addr)
	for attempt := 0; ; attempt++ {
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			return nil, nil, fmt.Errorf("dns: listen udp %s: %w", addr, err)
		}
		p := strconv.Itoa(pc.LocalAddr().(*net.UDPAddr).Port)
		ln, err := net.Listen("tcp", net.JoinHostPort(host, p))
		if err == nil {
			return pc, ln, nil
		}
		pc.Close()
		if port != "0" || attempt == 10 {
			return nil, nil, fmt.Errorf("dns: listen tcp %s: %w", net.JoinHostPort(host, p), err)
		}
	}
}

// Addr returns the bound address (UDP and TCP share the port), or "" before Start.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// Shutdown stops serving and waits for the serving goroutines.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	servers := s.servers
	s.servers = nil
	s.mu.Unlock()
	var errs []error
	for _, srv := range servers {
		if err := srv.ShutdownContext(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	s.wg.Wait()
	return errors.Join(errs...)
}
