package lb

import (
	"context"
	"fmt"
	"net"
	"sync"
)

// Server runs a Balancer on its listeners: the proxy and, optionally, the
// admin endpoint (/lb/status, /metrics, /healthz, /readyz). It is the one
// listener lifecycle of both the standalone balancer (lb/registry) and the
// one embedded in an agent. The admin /metrics serves Config.Gatherer
// (metrics.go).
type Server struct {
	bal     *Balancer
	ln      net.Listener
	adminLn net.Listener
	wg      sync.WaitGroup
	errCh   chan error
	once    sync.Once
	err     error
}

// NewServer builds a balancer over catalog that is not running yet.
func NewServer(cfg Config, catalog Catalog) (*Server, error) {
	bal, err := New(cfg, catalog)
	if err != nil {
		return nil, err
	}
	return &Server{bal: bal, errCh: make(chan error, 2)}, nil
}

// Start binds the proxy's address listen and, unless admin is "", the
// admin address, starts following the catalog and serves. On error
// everything started is stopped.
func (s *Server) Start(ctx context.Context, listen, admin string) (err error) {
	defer func() {
		if err != nil {
			_ = s.Shutdown(context.Background())
		}
	}()
	if s.ln, err = net.Listen("tcp", listen); err != nil {
		return fmt.Errorf("lb: listen on %s: %w", listen, err)
	}
	if admin != "" {
		if s.adminLn, err = net.Listen("tcp", admin); err != nil {
			return fmt.Errorf("lb: admin listen on %s: %w", admin, err)
		}
	}
	if err := s.bal.Start(ctx); err != nil {
		return err
	}
	s.serve(s.ln, s.bal.Serve, "proxy")
	if s.adminLn != nil {
		s.serve(s.adminLn, s.bal.ServeAdmin, "admin")
	}
	return nil
}

func (s *Server) serve(ln net.Listener, serve func(net.Listener) error, what string) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := serve(ln); err != nil {
			s.errCh <- fmt.Errorf("lb: %s: %w", what, err)
		}
	}()
}

// Addr returns the proxy's bound address, or "" before Start.
func (s *Server) Addr() string {
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// AdminAddr returns the admin listener's bound address, or "".
func (s *Server) AdminAddr() string {
	if s.adminLn == nil {
		return ""
	}
	return s.adminLn.Addr().String()
}

// Balancer returns the balancer served.
func (s *Server) Balancer() *Balancer { return s.bal }

// Err delivers errors that stop the server while it runs.
func (s *Server) Err() <-chan error { return s.errCh }

// Shutdown stops accepting connections on the proxy's address, lets
// requests in flight finish until ctx ends, stops following the catalog and
// closes the admin address last (Balancer.Shutdown), so /readyz answers 503
// through the drain.
func (s *Server) Shutdown(ctx context.Context) error {
	s.once.Do(func() {
		s.err = s.bal.Shutdown(ctx)
		// Listeners that were bound but never served.
		for _, ln := range []net.Listener{s.ln, s.adminLn} {
			if ln != nil {
				_ = ln.Close()
			}
		}
		s.wg.Wait()
	})
	return s.err
}
