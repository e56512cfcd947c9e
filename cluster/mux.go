package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// Connection kinds: the first byte a dialer writes on the cluster port.
const (
	connRaft byte = 'R'
	connRPC  byte = 'P'
)

// raftRefusedRetry bounds how long a Raft dial retries a refused connection.
const raftRefusedRetry = time.Second

// mux owns the cluster port. It accepts connections, wraps them in TLS when
// configured, reads the first byte, authenticates the peer with the
// cluster-secret handshake (both kinds of connection: a Raft connection is
// as powerful as an RPC one, since AppendEntries writes the catalog), and
// hands Raft connections to the Raft transport (through the raft.StreamLayer
// it implements) and RPC connections to the RPC server.
type mux struct {
	ln        net.Listener
	advertise net.Addr
	tlsIn     *tls.Config // nil: plain TCP
	tlsOut    *tls.Config
	secret    []byte
	logger    hclog.Logger
	metrics   *metrics
	rpc       func(net.Conn)

	raftConns chan net.Conn
	closed    chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup

	// conns are the accepted connections still open; close() closes them so
	// that Raft's per-connection handlers (which only stop when a read
	// fails) end with the node.
	connsMu sync.Mutex
	conns   map[net.Conn]struct{}
	// raftHandlers counts connections handed to Raft whose handler has not
	// closed them yet.
	raftHandlers sync.WaitGroup

	// handshakeLogged is when a handshake closed by the peer was last
	// logged at WARN, handshakeSuppressed how many went to DEBUG since
	// (logHandshakeFailure).
	handshakeLogMu      sync.Mutex
	handshakeLogged     time.Time
	handshakeSuppressed int

	// paused, when set (tests: pauseForTest), holds every read, write,
	// accept and dial on the cluster port until it is closed: to its peers
	// the node looks like a paused process (connections open, no answers).
	paused atomic.Pointer[chan struct{}]
}

// pauseForTest freezes the node's cluster traffic (see mux.paused) and
// returns the function that resumes it.
func (m *mux) pauseForTest() (resume func()) {
	ch := make(chan struct{})
	m.paused.Store(&ch)
	var once sync.Once
	return func() {
		once.Do(func() {
			m.paused.Store(nil)
			close(ch)
		})
	}
}

// waitPaused blocks while the mux is paused, or until the mux closes.
func (m *mux) waitPaused() {
	if ch := m.paused.Load(); ch != nil {
		select {
		case <-*ch:
		case <-m.closed:
		}
	}
}

// pausableConn is a connection whose reads and writes wait while the mux is
// paused (tests).
type pausableConn struct {
	net.Conn
	m *mux
}

func (c pausableConn) Read(b []byte) (int, error) {
	c.m.waitPaused()
	n, err := c.Conn.Read(b)
	c.m.waitPaused()
	return n, err
}

func (c pausableConn) Write(b []byte) (int, error) {
	c.m.waitPaused()
	return c.Conn.Write(b)
}

// handshakeLogEvery is how often a cluster connection closed during the
// secret handshake, which may or may not be a peer with another secret, is
// logged at WARN; the others in between are counted into the next line.
const handshakeLogEvery = time.Minute

// logHandshakeFailure logs and counts a failed cluster-secret handshake by
// what it says. A wrong proof (ErrAuth) is a secret mismatch: WARN. A peer
// that closed the connection after our proof refused it (another
// --cluster-secret: it logs "rpc authentication failed" itself) or gave up
// (its dial timed out): one WARN per handshakeLogEvery says both, the rest
// go to DEBUG. A connection closed or silent before that (a peer that gave
// up, a stale connection accepted after a stall, a port scan) is churn:
// DEBUG, and not counted as a rejection. After a node was paused for 30 s
// its peers logged 20-30 "cluster secret handshake failed (is
// --cluster-secret the same on every server?) error=EOF" WARN lines with
// no secret configured anywhere (h7 review, L6).
func (m *mux) logHandshakeFailure(remote string, err error) {
	closed := errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET)
	switch {
	case errors.Is(err, ErrAuth):
		m.metrics.connRejected.WithLabelValues("secret").Inc()
		m.logger.Warn("rejected cluster connection: its cluster secret proof is wrong (is --cluster-secret the same on every server?)",
			"remote", remote, "error", err)
	case errors.Is(err, errAfterProof) && closed:
		m.metrics.connRejected.WithLabelValues("secret").Inc()
		m.handshakeLogMu.Lock()
		now := time.Now()
		due := now.Sub(m.handshakeLogged) >= handshakeLogEvery
		suppressed := m.handshakeSuppressed
		if due {
			m.handshakeLogged, m.handshakeSuppressed = now, 0
		} else {
			m.handshakeSuppressed++
		}
		m.handshakeLogMu.Unlock()
		const msg = "cluster connection closed during the secret handshake: the peer refused our proof (a different --cluster-secret; it logs \"rpc authentication failed\") or gave up (a timeout after a stall or restart)"
		if due {
			m.logger.Warn(msg, "remote", remote, "error", err, "since_last_logged", suppressed)
		} else {
			m.logger.Debug(msg, "remote", remote, "error", err)
		}
	default:
		m.logger.Debug("cluster connection closed before its secret handshake completed", "remote", remote, "error", err)
	}
}

func newMux(ln net.Listener, advertise net.Addr, tlsIn, tlsOut *tls.Config, secret []byte, logger hclog.Logger, m *metrics) *mux {
	return &mux{
		ln: ln, advertise: advertise, tlsIn: tlsIn, tlsOut: tlsOut, secret: secret, logger: logger, metrics: m,
		raftConns: make(chan net.Conn, 16),
		closed:    make(chan struct{}),
		conns:     map[net.Conn]struct{}{},
	}
}

// serve accepts until the listener closes. rpc handles each RPC connection.
func (m *mux) serve(rpc func(net.Conn)) {
	m.rpc = rpc
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		for {
			c, err := m.ln.Accept()
			if err != nil {
				select {
				case <-m.closed:
					return
				default:
				}
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					continue
				}
				m.logger.Error("cluster port accept failed", "error", err)
				return
			}
			c = &trackedConn{Conn: pausableConn{c, m}, m: m}
			if !m.track(c) {
				c.Close()
				return
			}
			m.wg.Add(1)
			go func() {
				defer m.wg.Done()
				m.route(c)
			}()
		}
	}()
}

func (m *mux) route(c net.Conn) {
	tracked, _ := c.(*trackedConn)
	if m.tlsIn != nil {
		tc := tls.Server(c, m.tlsIn)
		_ = tc.SetDeadline(time.Now().Add(10 * time.Second))
		if err := tc.Handshake(); err != nil {
			m.metrics.connRejected.WithLabelValues("tls").Inc()
			m.logger.Warn("cluster tls handshake failed", "remote", c.RemoteAddr().String(), "error", err)
			c.Close()
			return
		}
		_ = tc.SetDeadline(time.Time{})
		c = tc
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var kind [1]byte
	if _, err := io.ReadFull(c, kind[:]); err != nil {
		c.Close()
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	if kind[0] != connRaft && kind[0] != connRPC {
		m.logger.Warn("unknown connection kind on cluster port", "remote", c.RemoteAddr().String(), "kind", kind[0])
		c.Close()
		return
	}
	if err := serverHandshake(c, m.secret); err != nil {
		m.logHandshakeFailure(c.RemoteAddr().String(), err)
		c.Close()
		return
	}
	switch kind[0] {
	case connRaft:
		// From here Raft's handler owns the connection; close() waits
		// for it to let go (it closes the connection when it returns).
		if tracked != nil && !tracked.handOver() {
			c.Close() // the mux is closing
			return
		}
		select {
		case m.raftConns <- c:
		case <-m.closed:
			c.Close()
		}
	case connRPC:
		m.rpc(c)
	}
}

// dial opens an authenticated connection of the given kind to a peer's
// cluster port. Connecting, TLS and the secret handshake together take at
// most timeout, and stop when ctx ends.
func (m *mux) dial(ctx context.Context, addr string, kind byte, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if ch := m.paused.Load(); ch != nil {
		select {
		case <-*ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	d := net.Dialer{}
	c, err := d.DialContext(ctx, "tcp", addr)
	if kind == connRaft {
		// A refused connection is retried for up to raftRefusedRetry before
		// Raft sees the failure. Raft backs off exponentially per failed
		// RPC to a peer (up to 10 s, uninterruptibly), and a stopped
		// process refuses at once: without this, a peer down for a few
		// seconds collects enough failures that, once back, it waits
		// seconds more for the leader to retry, and writes forwarded
		// through it wait too. Counted in seconds of outage rather than in
		// instant refusals, the back-off stays short.
		deadline := time.Now().Add(min(timeout, raftRefusedRetry))
		for err != nil && errors.Is(err, syscall.ECONNREFUSED) && time.Now().Before(deadline) {
			select {
			case <-m.closed:
				return nil, err
			case <-ctx.Done():
				return nil, err
			case <-time.After(50 * time.Millisecond):
			}
			c, err = d.DialContext(ctx, "tcp", addr)
		}
	}
	if err != nil {
		return nil, err
	}
	c = pausableConn{c, m}
	// Until the handshakes are done, ctx ending breaks the connection's
	// blocked reads and writes. The callback holds the plain connection in
	// its own variable: c is replaced by the TLS connection below, and the
	// callback may run concurrently with that (a deadline on the plain
	// connection also stops the TLS one above it).
	deadline, _ := ctx.Deadline()
	_ = c.SetDeadline(deadline)
	plain := c
	stop := context.AfterFunc(ctx, func() { _ = plain.SetDeadline(time.Now()) })
	defer stop()
	if m.tlsOut != nil {
		cfg := m.tlsOut.Clone()
		if cfg.ServerName == "" {
			host, _, _ := net.SplitHostPort(addr)
			cfg.ServerName = host
		}
		tc := tls.Client(c, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			c.Close()
			return nil, fmt.Errorf("cluster: tls handshake with %s: %w", addr, err)
		}
		c = tc
	}
	if _, err := c.Write([]byte{kind}); err != nil {
		c.Close()
		return nil, err
	}
	if err := clientHandshake(c, m.secret); err != nil {
		c.Close()
		return nil, fmt.Errorf("cluster: handshake with %s: %w", addr, err)
	}
	if !stop() {
		// ctx ended as the handshake finished: the deadline may be set.
		c.Close()
		return nil, fmt.Errorf("cluster: dial %s: %w", addr, ctx.Err())
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}

// track remembers an accepted connection; it reports false once closed.
func (m *mux) track(c net.Conn) bool {
	m.connsMu.Lock()
	defer m.connsMu.Unlock()
	if m.conns == nil {
		return false
	}
	m.conns[c] = struct{}{}
	return true
}

// trackedConn forgets itself in the mux when closed. A connection handed to
// Raft counts in the mux's raftHandlers until its handler closes it.
type trackedConn struct {
	net.Conn
	m      *mux
	once   sync.Once
	handed atomic.Bool
	// closed is set by the first Close, under the mux's connsMu, as
	// handOver checks it.
	closed bool
}

// handOver counts the connection in raftHandlers until it is closed, and
// reports false (counting nothing) if it was closed already: the mux's
// close may close a connection between its handshake and its hand-over,
// and a count taken after that Close would never be given back, holding
// the node's shutdown for the whole of mux.wait.
func (c *trackedConn) handOver() bool {
	c.m.connsMu.Lock()
	defer c.m.connsMu.Unlock()
	if c.closed {
		return false
	}
	c.m.raftHandlers.Add(1)
	c.handed.Store(true)
	return true
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.m.connsMu.Lock()
		if c.m.conns != nil {
			delete(c.m.conns, c)
		}
		c.closed = true
		handed := c.handed.Load()
		c.m.connsMu.Unlock()
		if handed {
			c.m.raftHandlers.Done()
		}
	})
	return c.Conn.Close()
}

func (m *mux) close() {
	m.closeOnce.Do(func() {
		close(m.closed)
		m.ln.Close()
		m.connsMu.Lock()
		conns := m.conns
		m.conns = nil
		m.connsMu.Unlock()
		for c := range conns {
			// Close the socket but leave the trackedConn to its owner: a
			// Raft handler still running closes it when it returns.
			c.(*trackedConn).Conn.Close()
			if !c.(*trackedConn).handed.Load() {
				c.Close()
			}
		}
	})
}

// wait blocks until the accept loop and in-flight routing have ended, and
// then until Raft's connection handlers have returned: a heartbeat being
// handled when Raft shut down still writes to the stable store, which must
// stay open until it is done.
func (m *mux) wait() {
	m.wg.Wait()
	for {
		select {
		case c := <-m.raftConns: // handed over, never accepted
			c.Close()
			continue
		default:
		}
		break
	}
	if !m.waitRaftHandlers(10 * time.Second) {
		m.logger.Warn("raft connection handlers still running at shutdown")
	}
}

// waitRaftHandlers waits up to d for every connection handed to Raft to be
// closed, and reports whether they all were.
func (m *mux) waitRaftHandlers(d time.Duration) bool {
	done := make(chan struct{})
	go func() {
		m.raftHandlers.Wait()
		close(done)
	}()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		return false
	}
}

// raftLayer is the raft.StreamLayer view of the mux.
type raftLayer struct{ m *mux }

func (l raftLayer) Accept() (net.Conn, error) {
	select {
	case c := <-l.m.raftConns:
		return c, nil
	case <-l.m.closed:
		return nil, net.ErrClosed
	}
}

func (l raftLayer) Close() error   { l.m.close(); return nil }
func (l raftLayer) Addr() net.Addr { return l.m.advertise }

func (l raftLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	return l.m.dial(context.Background(), string(addr), connRaft, timeout)
}
