package connlimit

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// The accept and shutdown loops of the servers that serve connections
// themselves before net/http (the API's and the balancer's fast paths).

// AcceptLoop accepts connections on ln and gives each to handle, until
// Accept fails. It returns nil when closing reports true by then (the
// server closed ln), else Accept's error. Errors worth waiting out (out of
// descriptors and the like) are waited out with a growing pause, as
// net/http's Serve does.
func AcceptLoop(ln net.Listener, closing func() bool, handle func(net.Conn)) error {
	var delay time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if closing() {
				return nil
			}
			if TemporaryAccept(err) {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
		handle(nc)
	}
}

// ServeHandingOff serves ln the way both fast paths do: srv serves the
// connections handed to hand, and AcceptLoop gives each new connection of
// ln to handle, until ln closes. It returns http.ErrServerClosed when the
// server is closing (closing reports true; srv is shut down by the
// caller's Shutdown, which ends its Serve), else ln's error, after closing
// hand and waiting for srv's Serve to return.
func ServeHandingOff(ln net.Listener, srv *http.Server, hand *Handoff, closing func() bool, handle func(net.Conn)) error {
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(hand) }()
	if err := AcceptLoop(ln, closing, handle); err != nil {
		_ = hand.Close()
		<-errc
		return err
	}
	<-errc
	return http.ErrServerClosed
}

// SetReadTimeout sets c's read deadline d from now (none when d <= 0).
func SetReadTimeout(c net.Conn, d time.Duration) {
	if d > 0 {
		_ = c.SetReadDeadline(time.Now().Add(d))
	} else {
		_ = c.SetReadDeadline(time.Time{})
	}
}

// TemporaryAccept reports an accept error worth waiting out (EMFILE,
// ENFILE, ECONNABORTED...), as net/http's Serve does.
func TemporaryAccept(err error) bool {
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}

// ShutdownLoop waits for the connections counted in wg to end, calling
// closeIdle now and every tick (a connection that goes idle is closed
// then), as net/http's Shutdown does. When ctx ends first it calls
// closeAll and returns ctx's error without waiting further: a handler
// that does not return is not waited for.
func ShutdownLoop(ctx context.Context, wg *sync.WaitGroup, tick time.Duration, closeIdle, closeAll func()) error {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	ticker := time.NewTicker(tick)
	defer ticker.Stop()
	for {
		closeIdle()
		select {
		case <-done:
			return nil
		case <-ctx.Done():
			closeAll()
			return ctx.Err()
		case <-ticker.C:
		}
	}
}

// Set is the connections a server serves itself, for its shutdown. Add
// refuses a connection once the server is closing, under the same lock
// as SetClosing, so that none is added once Shutdown may be waiting.
type Set[C comparable] struct {
	closing atomic.Bool
	mu      sync.Mutex
	m       map[C]struct{}
	wg      sync.WaitGroup
}

// Add counts c in; false once the server is closing (the caller then
// closes c).
func (s *Set[C]) Add(c C) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing.Load() {
		return false
	}
	if s.m == nil {
		s.m = map[C]struct{}{}
	}
	s.m[c] = struct{}{}
	s.wg.Add(1)
	return true
}

// Remove counts c out, once its serving has ended.
func (s *Set[C]) Remove(c C) {
	s.mu.Lock()
	delete(s.m, c)
	s.mu.Unlock()
	s.wg.Done()
}

// SetClosing marks the server closing: Add refuses from now on.
func (s *Set[C]) SetClosing() {
	s.mu.Lock()
	s.closing.Store(true)
	s.mu.Unlock()
}

// Closing reports whether SetClosing was called.
func (s *Set[C]) Closing() bool { return s.closing.Load() }

// Each calls fn for every connection, under the set's lock (fn must not
// call Add or Remove).
func (s *Set[C]) Each(fn func(C)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.m {
		fn(c)
	}
}

// Shutdown is ShutdownLoop over the set's connections: closeIdle(c) for
// each now and every tick, closeAll(c) for each when ctx ends.
func (s *Set[C]) Shutdown(ctx context.Context, tick time.Duration, closeIdle, closeAll func(C)) error {
	return ShutdownLoop(ctx, &s.wg, tick, func() { s.Each(closeIdle) }, func() { s.Each(closeAll) })
}

// Wait waits until every connection added has been removed.
func (s *Set[C]) Wait() { s.wg.Wait() }
