package cluster

import (
	"bufio"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
)

// The internal RPC runs on the cluster port, beside Raft. Every connection on
// that port (Raft's and RPC's) starts with a mutual challenge-response over an
// HMAC of the cluster secret (so a caller must know the secret, and nothing a
// client could copy from a request is enough; see serverHandshake), then an
// RPC connection carries multiplexed frames:
//
//	request:  len u32 | id u64 | op u8     | payload
//	response: len u32 | id u64 | status u8 | payload   (status 1: payload is "code\x00message")
//
// len counts the bytes after itself. Many requests share one connection; a
// writer goroutine batches frames into as few syscalls as the load allows.

// Op identifies an RPC. Ops below 16 belong to this package; others are
// registered by the agent (see Node.HandleRPC).
type Op uint8

const (
	opApply     Op = 1
	opReadIndex Op = 2
	opStatus    Op = 3
	opRemove    Op = 4
	// opRestore 5 and opForceLeave 6: operator.go.
	opApplyOnce    Op = 7
	opLeaderCommit Op = 8
	// opRaftView 9: servers.go; opRemoveAddr 10: node.go.
	opTermAt Op = 11 // restoremark.go
)

const (
	rpcMaxFrame   = 40 << 20 // a snapshot restore (32 MiB at most) travels in one frame
	rpcNonceSize  = 16
	rpcHandshake  = 10 * time.Second
	statusOK      = 0
	statusError   = 1
	handshakeSalt = "beacon-rpc-v1"
)

// rpcWriteTimeout bounds one batch of frames' write to a peer (a restore's
// 32 MiB frame at 1 MB/s or more).
const rpcWriteTimeout = 30 * time.Second

// rpcWriteTimeoutForTest, when not 0, replaces rpcWriteTimeout (tests;
// atomic, as nodes of earlier tests may still be writing).
var rpcWriteTimeoutForTest atomic.Int64

func writeTimeout() time.Duration {
	if d := rpcWriteTimeoutForTest.Load(); d > 0 {
		return time.Duration(d)
	}
	return rpcWriteTimeout
}

// ErrAuth is returned when a peer fails the cluster-secret handshake.
var ErrAuth = errors.New("cluster: rpc authentication failed")

// errAfterProof wraps a server handshake's failure to read the client's
// proof, after the server sent its own: a client that refused it (another
// --cluster-secret) closes the connection there, and so does one that gave
// up (its dial timed out).
var errAfterProof = errors.New("cluster: no proof from the peer after ours")

// ErrConnLost means the connection broke before a response arrived, so the
// outcome of the request is unknown.
var ErrConnLost = errors.New("cluster: rpc connection lost")

// RemoteError is an error returned by the peer's handler.
type RemoteError struct {
	Code string
	Msg  string
}

func (e *RemoteError) Error() string { return e.Msg }

func mac(secret []byte, role byte, a, b []byte) []byte {
	h := hmac.New(sha256.New, secret)
	h.Write([]byte(handshakeSalt))
	h.Write([]byte{role})
	h.Write(a)
	h.Write(b)
	return h.Sum(nil)
}

// rpcHandler serves one op. It returns the response payload, or an error
// whose code (see errorCode) travels to the caller.
type rpcHandler func(ctx context.Context, payload []byte) ([]byte, error)

type rpcServer struct {
	logger   hclog.Logger
	mu       sync.RWMutex
	handlers map[Op]rpcHandler
	ctx      context.Context

	connsMu sync.Mutex
	conns   map[net.Conn]struct{}
}

// newRPCServer returns a server; its ctx must be set before it serves. The
// mux has authenticated every connection it is given.
func newRPCServer(logger hclog.Logger) *rpcServer {
	return &rpcServer{logger: logger, handlers: map[Op]rpcHandler{}, conns: map[net.Conn]struct{}{}}
}

func (s *rpcServer) handle(op Op, h rpcHandler) {
	s.mu.Lock()
	s.handlers[op] = h
	s.mu.Unlock()
}

// serveConn serves one (authenticated) connection until it breaks.
func (s *rpcServer) serveConn(c net.Conn) {
	s.connsMu.Lock()
	if s.conns == nil {
		s.connsMu.Unlock()
		c.Close()
		return
	}
	s.conns[c] = struct{}{}
	s.connsMu.Unlock()
	defer func() {
		s.connsMu.Lock()
		delete(s.conns, c)
		s.connsMu.Unlock()
		c.Close()
	}()
	w := newFrameWriter(c)
	defer w.close()
	r := bufio.NewReaderSize(c, 32<<10)
	var inflight sync.WaitGroup
	defer inflight.Wait()
	for {
		id, op, payload, err := readFrame(r)
		if err != nil {
			return
		}
		ctx := s.ctx
		if Op(op)&opWithActor != 0 {
			// The request carries who asked for it (for the audit log).
			var a Actor
			var err error
			if a, payload, err = decodeActor(payload); err != nil {
				return
			}
			ctx = WithActor(ctx, a)
			op &^= byte(opWithActor)
		}
		s.mu.RLock()
		h := s.handlers[Op(op)]
		s.mu.RUnlock()
		inflight.Add(1)
		go func() {
			defer inflight.Done()
			var resp []byte
			var herr error
			if h == nil {
				herr = fmt.Errorf("cluster: unknown rpc op %d", op)
			} else {
				resp, herr = h(ctx, payload)
			}
			if herr != nil {
				code, msg := errorCode(herr)
				w.send(id, statusError, []byte(code+"\x00"+msg), nil)
				return
			}
			w.send(id, statusOK, resp, nil)
		}()
	}
}

// serverHandshake authenticates a peer that dialled the cluster port: it
// reads the client's nonce, answers with its own nonce and its HMAC over both
// (proving it knows the secret), and checks the client's HMAC (with another
// role byte, so the server's answer cannot be reflected back as the client's).
// Fresh nonces on both sides defeat replay. The handshake authenticates the
// connection's start only; on an untrusted network, TLS on the cluster port
// protects what follows.
func serverHandshake(c net.Conn, secret []byte) error {
	_ = c.SetDeadline(time.Now().Add(rpcHandshake))
	defer c.SetDeadline(time.Time{})
	cn := make([]byte, rpcNonceSize)
	if _, err := io.ReadFull(c, cn); err != nil {
		return err
	}
	sn := make([]byte, rpcNonceSize)
	_, _ = rand.Read(sn)
	if _, err := c.Write(append(append([]byte{}, sn...), mac(secret, 's', cn, sn)...)); err != nil {
		return err
	}
	got := make([]byte, sha256.Size)
	if _, err := io.ReadFull(c, got); err != nil {
		return fmt.Errorf("%w: %w", errAfterProof, err)
	}
	if !hmac.Equal(got, mac(secret, 'c', cn, sn)) {
		return ErrAuth
	}
	return nil
}

// closeAll breaks every served connection and waits for their handlers.
func (s *rpcServer) closeAll() {
	s.connsMu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.conns = nil
	s.connsMu.Unlock()
}

func readFrame(r *bufio.Reader) (id uint64, kind byte, payload []byte, err error) {
	var hdr [13]byte
	if _, err = io.ReadFull(r, hdr[:4]); err != nil {
		return
	}
	n := binary.BigEndian.Uint32(hdr[:4])
	if n < 9 || n > rpcMaxFrame {
		return 0, 0, nil, fmt.Errorf("cluster: bad rpc frame length %d", n)
	}
	if _, err = io.ReadFull(r, hdr[4:13]); err != nil {
		return
	}
	id = binary.BigEndian.Uint64(hdr[4:12])
	kind = hdr[12]
	payload = make([]byte, n-9)
	_, err = io.ReadFull(r, payload)
	return
}

// frameWriter serialises frames onto a connection from many goroutines,
// flushing once per burst rather than once per frame.
type frameWriter struct {
	c    net.Conn
	ch   chan []byte
	done chan struct{}
	once sync.Once
}

func newFrameWriter(c net.Conn) *frameWriter {
	w := &frameWriter{c: c, ch: make(chan []byte, 256), done: make(chan struct{})}
	go w.loop()
	return w
}

func (w *frameWriter) loop() {
	bw := bufio.NewWriterSize(w.c, 64<<10)
	for {
		var f []byte
		select {
		case f = <-w.ch:
		case <-w.done:
			return
		}
		// A peer that stopped reading (frozen, or its host gone without a
		// reset) fills the socket's buffers and the write blocks: past
		// rpcWriteTimeout the connection is closed, its callers get
		// ErrConnLost, and senders are released (drain).
		if err := w.c.SetWriteDeadline(time.Now().Add(writeTimeout())); err != nil {
			w.c.Close()
			w.drain()
			return
		}
		for yielded := false; ; {
			if _, err := bw.Write(f); err != nil {
				w.c.Close()
				w.drain()
				return
			}
			var ok bool
			if f, ok = w.queued(); !ok && !yielded {
				// Let the goroutines that are about to send run first, so
				// that their frames go in this write.
				yielded = true
				runtime.Gosched()
				f, ok = w.queued()
			}
			if !ok {
				break
			}
		}
		if err := bw.Flush(); err != nil {
			w.c.Close()
			w.drain()
			return
		}
	}
}

// queued returns a frame already waiting, if there is one.
func (w *frameWriter) queued() ([]byte, bool) {
	select {
	case f := <-w.ch:
		return f, true
	default:
		return nil, false
	}
}

// drain discards frames after a write error until close.
func (w *frameWriter) drain() {
	for {
		select {
		case <-w.ch:
		case <-w.done:
			return
		}
	}
}

// send queues a frame; it reports false if the writer has closed. A
// caller's give-up (a nil channel for none) ends the wait for room in the
// queue too, with false: the frame was not queued.
func (w *frameWriter) send(id uint64, kind byte, payload []byte, giveUp <-chan struct{}) bool {
	f := make([]byte, 13+len(payload))
	binary.BigEndian.PutUint32(f[:4], uint32(9+len(payload)))
	binary.BigEndian.PutUint64(f[4:12], id)
	f[12] = kind
	copy(f[13:], payload)
	select {
	case w.ch <- f:
		return true
	default:
	}
	select {
	case w.ch <- f:
		return true
	case <-w.done:
		return false
	case <-giveUp:
		return false
	}
}

func (w *frameWriter) close() { w.once.Do(func() { close(w.done) }) }

// rpcClient is a multiplexed connection to one peer, redialled on demand.
// The dial function returns connections the mux has authenticated.
type rpcClient struct {
	addr string
	dial func(ctx context.Context, addr string, kind byte, timeout time.Duration) (net.Conn, error)

	mu      sync.Mutex
	conn    *rpcConn
	closed  bool
	dialErr error
}

type rpcConn struct {
	c       net.Conn
	w       *frameWriter
	mu      sync.Mutex
	nextID  uint64
	pending map[uint64]chan rpcResult
	broken  chan struct{}
}

type rpcResult struct {
	status  byte
	payload []byte
}

// live returns the client's connection when it has one that is not broken
// (nil: get must dial).
func (rc *rpcClient) live() *rpcConn {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if rc.closed || rc.conn == nil {
		return nil
	}
	select {
	case <-rc.conn.broken:
		return nil
	default:
		return rc.conn
	}
}

func (rc *rpcClient) get(ctx context.Context, timeout time.Duration) (*rpcConn, error) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if rc.closed {
		return nil, net.ErrClosed
	}
	if rc.conn != nil {
		select {
		case <-rc.conn.broken:
			rc.conn = nil
		default:
			return rc.conn, nil
		}
	}
	c, err := rc.dial(ctx, rc.addr, connRPC, timeout)
	if err != nil {
		return nil, err
	}
	conn := &rpcConn{c: c, w: newFrameWriter(c), pending: map[uint64]chan rpcResult{}, broken: make(chan struct{})}
	go conn.readLoop()
	rc.conn = conn
	return conn, nil
}

// clientHandshake is the dialler's side of serverHandshake.
// The caller sets the connection's deadline.
func clientHandshake(c net.Conn, secret []byte) error {
	cn := make([]byte, rpcNonceSize)
	_, _ = rand.Read(cn)
	if _, err := c.Write(cn); err != nil {
		return err
	}
	buf := make([]byte, rpcNonceSize+sha256.Size)
	if _, err := io.ReadFull(c, buf); err != nil {
		// The server sends its proof before it checks ours, whatever its
		// secret: a connection that ends before the proof was closed (a
		// peer shutting down, a stale queued connection), not refused.
		return fmt.Errorf("cluster: the peer closed the connection before proving the cluster secret: %w", err)
	}
	sn, smac := buf[:rpcNonceSize], buf[rpcNonceSize:]
	if !hmac.Equal(smac, mac(secret, 's', cn, sn)) {
		return ErrAuth
	}
	_, err := c.Write(mac(secret, 'c', cn, sn))
	return err
}

func (conn *rpcConn) readLoop() {
	r := bufio.NewReaderSize(conn.c, 32<<10)
	for {
		id, status, payload, err := readFrame(r)
		if err != nil {
			break
		}
		conn.mu.Lock()
		ch := conn.pending[id]
		delete(conn.pending, id)
		conn.mu.Unlock()
		if ch != nil {
			ch <- rpcResult{status: status, payload: payload}
		}
	}
	conn.mu.Lock()
	close(conn.broken)
	conn.pending = nil
	conn.mu.Unlock()
	conn.w.close()
	conn.c.Close()
}

// call sends one request and waits for its response, ctx, or stop (nil:
// never), whichever comes first; after stop it returns errLeaderChanged,
// unless still (if not nil), asked then, says the call should go on after
// all and gives the channel to wait on from then on. A
// new connection must be made within dialTimeout (and ctx, and before stop);
// an error before the request was handed to the connection is an errDial
// (it was not sent).
//
// stop spares a caller that must also give up on another event (forward:
// Raft reporting a new leader) a derived context and a goroutine per call;
// the goroutine is made here only when a connection must be dialled.
func (rc *rpcClient) call(ctx context.Context, stop <-chan struct{}, still func() (<-chan struct{}, bool), op Op, payload []byte, dialTimeout time.Duration) ([]byte, error) {
	conn := rc.live()
	if conn == nil {
		dctx := ctx
		if stop != nil {
			var cancel context.CancelFunc
			dctx, cancel = context.WithCancel(ctx)
			defer cancel()
			go func() {
				select {
				case <-stop:
					cancel()
				case <-dctx.Done():
				}
			}()
		}
		var err error
		if conn, err = rc.get(dctx, dialTimeout); err != nil {
			return nil, errDial{fmt.Errorf("cluster: rpc to %s: %w", rc.addr, err)}
		}
	}
	ch := make(chan rpcResult, 1)
	conn.mu.Lock()
	if conn.pending == nil {
		conn.mu.Unlock()
		return nil, errDial{errors.New("cluster: rpc connection closed before send")}
	}
	conn.nextID++
	id := conn.nextID
	conn.pending[id] = ch
	conn.mu.Unlock()
	if !conn.w.send(id, byte(op), payload, ctx.Done()) {
		// Not queued, so certainly not sent.
		conn.forget(id)
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		return nil, errDial{errors.New("cluster: rpc connection closed before send")}
	}
	// From here the request may have reached the peer. (A variable of its
	// own: the dial's goroutine above may still be reading stop.)
	wait := stop
	for {
		select {
		case res := <-ch:
			return res.result()
		case <-conn.broken:
			// The response may have been delivered just before the break.
			select {
			case res := <-ch:
				return res.result()
			default:
			}
			return nil, ErrConnLost
		case <-ctx.Done():
			conn.forget(id)
			return nil, ctx.Err()
		case <-wait:
			if still != nil {
				if next, ok := still(); ok {
					wait = next
					continue
				}
			}
			conn.forget(id)
			return nil, errLeaderChanged
		}
	}
}

// result is the response's payload, or the peer's error.
func (res rpcResult) result() ([]byte, error) {
	if res.status != statusOK {
		code, msg, _ := strings.Cut(string(res.payload), "\x00")
		return nil, &RemoteError{Code: code, Msg: msg}
	}
	return res.payload, nil
}

// forget drops the waiter of request id (its caller gave up on it).
func (conn *rpcConn) forget(id uint64) {
	conn.mu.Lock()
	if conn.pending != nil {
		delete(conn.pending, id)
	}
	conn.mu.Unlock()
}

func (rc *rpcClient) close() {
	rc.mu.Lock()
	rc.closed = true
	conn := rc.conn
	rc.conn = nil
	rc.mu.Unlock()
	if conn != nil {
		conn.c.Close()
		<-conn.broken
	}
}

// rpcPool keeps one client per peer address.
type rpcPool struct {
	dial   func(ctx context.Context, addr string, kind byte, timeout time.Duration) (net.Conn, error)
	mu     sync.Mutex
	peers  map[string]*rpcClient
	closed bool
}

func (p *rpcPool) client(addr string) *rpcClient {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c := p.peers[addr]; c != nil {
		return c
	}
	c := &rpcClient{addr: addr, dial: p.dial, closed: p.closed}
	p.peers[addr] = c
	return c
}

func (p *rpcPool) call(ctx context.Context, addr string, op Op, payload []byte, dialTimeout time.Duration) ([]byte, error) {
	return p.client(addr).call(ctx, nil, nil, op, payload, dialTimeout)
}

// callStop is call that also gives up when stop is closed, unless still
// says otherwise (rpcClient.call).
func (p *rpcPool) callStop(ctx context.Context, stop <-chan struct{}, still func() (<-chan struct{}, bool), addr string, op Op, payload []byte, dialTimeout time.Duration) ([]byte, error) {
	return p.client(addr).call(ctx, stop, still, op, payload, dialTimeout)
}

func (p *rpcPool) close() {
	p.mu.Lock()
	peers := p.peers
	p.peers = map[string]*rpcClient{}
	p.closed = true
	p.mu.Unlock()
	for _, c := range peers {
		c.close()
	}
}
