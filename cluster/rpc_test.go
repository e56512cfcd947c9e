package cluster

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/beaconhq/beacon/fsm"
	"github.com/beaconhq/beacon/fsm/fsmtest/wait"
	"github.com/hashicorp/go-hclog"
	dto "github.com/prometheus/client_model/go"
)

// Unit tests of the cluster port without Raft: a mux on a loopback
// listener, an RPC server behind it and a pool of clients dialling it
// through another mux, as two nodes do.

type portPair struct {
	server *mux
	rpc    *rpcServer
	client *mux
	pool   *rpcPool
	cancel context.CancelFunc
}

// newPort starts a mux with secret serving an RPC server, and a client pool
// whose dialler uses clientSecret.
func newPort(t *testing.T, secret, clientSecret string) *portPair {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	logger := hclog.NewNullLogger()
	p := &portPair{rpc: newRPCServer(logger)}
	var ctx context.Context
	ctx, p.cancel = context.WithCancel(context.Background())
	p.rpc.ctx = ctx
	p.server = newMux(ln, ln.Addr(), nil, nil, []byte(secret), logger, newMetrics())
	p.server.serve(p.rpc.serveConn)
	// The client side only dials: its listener is never served.
	cln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.client = newMux(cln, cln.Addr(), nil, nil, []byte(clientSecret), logger, newMetrics())
	p.pool = &rpcPool{dial: p.client.dial, peers: map[string]*rpcClient{}}
	t.Cleanup(p.close)
	return p
}

func (p *portPair) addr() string { return p.server.ln.Addr().String() }

func (p *portPair) close() {
	p.pool.close()
	p.client.close()
	p.client.wait()
	p.cancel()
	p.rpc.closeAll()
	p.server.close()
	p.server.wait()
}

func TestRPCOverTheClusterPort(t *testing.T) {
	p := newPort(t, "secret", "secret")
	p.rpc.handle(opStatus, func(ctx context.Context, b []byte) ([]byte, error) {
		return append([]byte("echo:"), b...), nil
	})
	release := make(chan struct{})
	p.rpc.handle(opRemove, func(ctx context.Context, b []byte) ([]byte, error) {
		<-release
		return nil, nil
	})
	hold := make(chan struct{})
	p.rpc.handle(opLeaderCommit, func(ctx context.Context, b []byte) ([]byte, error) {
		<-hold
		return []byte("answered"), nil
	})
	p.rpc.handle(opReadIndex, func(ctx context.Context, b []byte) ([]byte, error) {
		switch string(b) {
		case "reject":
			return nil, &fsm.RejectError{Kind: fsm.ErrNotFound, Msg: "no such thing"}
		case "no-leader":
			return nil, ErrNoLeader
		case "actor":
			a, ok := ActorFrom(ctx)
			if !ok {
				return nil, errors.New("no actor")
			}
			return []byte(a.Accessor + "|" + a.Remote + "|" + a.Node), nil
		}
		return appendIndex(nil, 42), nil
	})
	ctx := context.Background()

	t.Run("many concurrent calls share one connection and each gets its own answer", func(t *testing.T) {
		var wg sync.WaitGroup
		errs := make(chan error, 64)
		for i := range 64 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				want := fmt.Sprintf("echo:%d", i)
				got, err := p.pool.call(ctx, p.addr(), opStatus, []byte(fmt.Sprint(i)), 5*time.Second)
				if err != nil || string(got) != want {
					errs <- fmt.Errorf("call %d: %q %v", i, got, err)
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		p.rpc.connsMu.Lock()
		n := len(p.rpc.conns)
		p.rpc.connsMu.Unlock()
		if n != 1 {
			t.Fatalf("%d server connections, want 1", n)
		}
	})

	t.Run("an index travels as a number", func(t *testing.T) {
		got, err := p.pool.call(ctx, p.addr(), opReadIndex, nil, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if idx, err := parseIndex(got); err != nil || idx != 42 {
			t.Fatalf("index %d %v from %x", idx, err, got)
		}
	})

	t.Run("a handler's error arrives with its code", func(t *testing.T) {
		_, err := p.pool.call(ctx, p.addr(), opReadIndex, []byte("reject"), 5*time.Second)
		var re *RemoteError
		if !errors.As(err, &re) || re.Code != "not_found" || re.Msg != "no such thing" {
			t.Fatalf("got %#v", err)
		}
		if !errors.Is(fromRemote(err), fsm.ErrNotFound) {
			t.Fatalf("fromRemote(%v) = %v", err, fromRemote(err))
		}
		_, err = p.pool.call(ctx, p.addr(), opReadIndex, []byte("no-leader"), 5*time.Second)
		if !errors.Is(fromRemote(err), ErrNoLeader) {
			t.Fatalf("no leader: %v", fromRemote(err))
		}
		_, err = p.pool.call(ctx, p.addr(), Op(99), nil, 5*time.Second)
		if !errors.As(err, &re) || re.Code != "internal" {
			t.Fatalf("unknown op: %#v", err)
		}
	})

	t.Run("the actor travels with the request", func(t *testing.T) {
		a := Actor{Accessor: "acc", Remote: "10.0.0.9:1234", Node: "n2"}
		got, err := p.pool.call(ctx, p.addr(), opReadIndex|opWithActor, append(encodeActor(a), "actor"...), 5*time.Second)
		if err != nil || string(got) != "acc|10.0.0.9:1234|n2" {
			t.Fatalf("got %q %v", got, err)
		}
	})

	t.Run("the caller's deadline ends a call whose handler does not answer", func(t *testing.T) {
		cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		defer cancel()
		if _, err := p.pool.call(cctx, p.addr(), opRemove, nil, 5*time.Second); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("got %v", err)
		}
	})

	t.Run("stop ends a call in flight, which forgets its waiter", func(t *testing.T) {
		stop := make(chan struct{})
		done := make(chan error, 1)
		go func() {
			_, err := p.pool.callStop(ctx, stop, nil, p.addr(), opRemove, nil, 5*time.Second)
			done <- err
		}()
		rc := p.pool.client(p.addr())
		wait.Until(t, 30*time.Second, "the call to become pending", func() bool { return pendingCalls(rc) > 0 })
		close(stop)
		select {
		case err := <-done:
			if !errors.Is(err, errLeaderChanged) {
				t.Fatalf("got %v, want errLeaderChanged", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("the call did not end when stop was closed")
		}
		if n := pendingCalls(rc); n != 0 {
			t.Fatalf("%d waiters left on the connection", n)
		}
	})

	t.Run("a stop that still holds ends nothing; the next one that does not ends the call", func(t *testing.T) {
		// still says "go on" while followOn is true: the leader the call
		// went to still leads (Node.forward).
		var followOn atomic.Bool
		followOn.Store(true)
		var asked atomic.Int32
		stops := make(chan chan struct{}, 4)
		stop := make(chan struct{})
		still := func() (<-chan struct{}, bool) {
			asked.Add(1)
			next := make(chan struct{})
			stops <- next
			return next, followOn.Load()
		}
		type result struct {
			b   []byte
			err error
		}
		done := make(chan result, 1)
		go func() {
			b, err := p.pool.callStop(ctx, stop, still, p.addr(), opLeaderCommit, nil, 5*time.Second)
			done <- result{b, err}
		}()
		rc := p.pool.client(p.addr())
		wait.Until(t, 30*time.Second, "the call to become pending", func() bool { return pendingCalls(rc) > 0 })
		close(stop)
		wait.Until(t, 30*time.Second, "the call to ask still", func() bool { return asked.Load() == 1 })
		select {
		case r := <-done:
			t.Fatalf("the call ended on a stop that still held: %q %v", r.b, r.err)
		default:
		}
		close(hold)
		select {
		case r := <-done:
			if r.err != nil || string(r.b) != "answered" {
				t.Fatalf("got %q %v, want the answer", r.b, r.err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("no answer")
		}
		<-stops

		// A second call: the first stop holds, the next does not.
		stop = make(chan struct{})
		release2 := make(chan struct{})
		p.rpc.handle(opLeaderCommit, func(ctx context.Context, b []byte) ([]byte, error) {
			<-release2
			return []byte("late"), nil
		})
		defer close(release2)
		asked.Store(0)
		go func() {
			b, err := p.pool.callStop(ctx, stop, still, p.addr(), opLeaderCommit, nil, 5*time.Second)
			done <- result{b, err}
		}()
		wait.Until(t, 30*time.Second, "the second call to become pending", func() bool { return pendingCalls(rc) > 0 })
		close(stop)
		next := <-stops
		followOn.Store(false)
		close(next)
		select {
		case r := <-done:
			if !errors.Is(r.err, errLeaderChanged) {
				t.Fatalf("got %q %v, want errLeaderChanged", r.b, r.err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("the call did not end when a stop no longer held")
		}
		if n := pendingCalls(rc); n != 0 {
			t.Fatalf("%d waiters left on the connection", n)
		}
	})

	t.Run("stop ends a dial to a peer that never finishes the handshake", func(t *testing.T) {
		silent, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer silent.Close()
		held := make(chan net.Conn, 1)
		go func() {
			c, err := silent.Accept()
			if err == nil {
				held <- c // accepted, never answered
			}
		}()
		stop := make(chan struct{})
		done := make(chan error, 1)
		go func() {
			_, err := p.pool.callStop(ctx, stop, nil, silent.Addr().String(), opStatus, nil, time.Minute)
			done <- err
		}()
		var c net.Conn
		select {
		case c = <-held:
			defer c.Close()
		case <-time.After(30 * time.Second):
			t.Fatal("the dial never reached the peer")
		}
		close(stop)
		select {
		case err := <-done:
			var de errDial
			if !errors.As(err, &de) {
				t.Fatalf("got %v, want an errDial (not sent)", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("the dial went on after stop was closed (its timeout is a minute)")
		}
	})

	t.Run("a connection lost before the answer is ErrConnLost, and the next call redials", func(t *testing.T) {
		done := make(chan error, 1)
		go func() {
			_, err := p.pool.call(ctx, p.addr(), opRemove, nil, 5*time.Second)
			done <- err
		}()
		// Wait for the request to be pending on the client, then break
		// every server connection.
		rc := p.pool.client(p.addr())
		wait.Until(t, 30*time.Second, "the call to become pending", func() bool { return pendingCalls(rc) > 0 })
		p.rpc.connsMu.Lock()
		for c := range p.rpc.conns {
			c.Close()
		}
		p.rpc.connsMu.Unlock()
		if err := <-done; !errors.Is(err, ErrConnLost) {
			t.Fatalf("got %v, want ErrConnLost", err)
		}
		close(release) // the handlers still blocked on the server end
		if got, err := p.pool.call(ctx, p.addr(), opStatus, []byte("again"), 5*time.Second); err != nil || string(got) != "echo:again" {
			t.Fatalf("after the break: %q %v", got, err)
		}
	})
}

// pendingCalls is the number of calls waiting on rc's connection.
func pendingCalls(rc *rpcClient) int {
	rc.mu.Lock()
	conn := rc.conn
	rc.mu.Unlock()
	if conn == nil {
		return 0
	}
	conn.mu.Lock()
	defer conn.mu.Unlock()
	return len(conn.pending)
}

// TestAConnectionClosedBeforeTheProofIsNotAnAuthFailure: a peer that
// closes the connection before sending its proof (shutting down, or a
// stale connection it had queued) has refused nothing: the dialer must not
// take it for a secret mismatch (which marks a member untrusted).
func TestAConnectionClosedBeforeTheProofIsNotAnAuthFailure(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	c, err := net.DialTimeout("tcp", ln.Addr().String(), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	err = clientHandshake(c, []byte("secret"))
	if err == nil || errors.Is(err, ErrAuth) || refusedCredentials(err) {
		t.Fatalf("handshake with a peer that closed at once: %v; want an error that is not an authentication failure", err)
	}
}

func TestClusterPortRefusesWhoLacksTheSecret(t *testing.T) {
	p := newPort(t, "secret", "another-secret")
	p.rpc.handle(opStatus, func(ctx context.Context, b []byte) ([]byte, error) { return []byte("never"), nil })
	_, err := p.pool.call(context.Background(), p.addr(), opStatus, nil, 5*time.Second)
	if !errors.Is(err, ErrAuth) {
		t.Fatalf("got %v, want ErrAuth", err)
	}
	var de errDial
	if !errors.As(err, &de) {
		t.Fatalf("%v is not marked as never sent", err)
	}
	rejected := func() float64 {
		var m dto.Metric
		_ = p.server.metrics.connRejected.WithLabelValues("secret").Write(&m)
		return m.GetCounter().GetValue()
	}
	wait.Until(t, 30*time.Second, "the rejection to be counted", func() bool { return rejected() >= 1 })
}

func TestClusterPortRoutesRaftConnectionsAndDropsUnknownKinds(t *testing.T) {
	p := newPort(t, "secret", "secret")
	layer := raftLayer{p.server}
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := layer.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	c, err := p.client.dial(context.Background(), p.addr(), connRaft, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var sc net.Conn
	select {
	case sc = <-accepted:
	case <-time.After(10 * time.Second):
		t.Fatal("the raft connection was not handed to Raft")
	}
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	_ = sc.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(sc, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("read %q %v", buf, err)
	}
	sc.Close()

	// A connection of an unknown kind is closed without a handshake.
	raw, err := net.Dial("tcp", p.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if _, err := raw.Write([]byte{'X'}); err != nil {
		t.Fatal(err)
	}
	_ = raw.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := raw.Read(buf); err == nil {
		t.Fatalf("read %d bytes from a connection of an unknown kind", n)
	}
}

func TestFramesRoundTripAndBadLengthsAreRefused(t *testing.T) {
	var b bytes.Buffer
	for _, f := range []struct {
		id      uint64
		kind    byte
		payload []byte
	}{{1, 7, []byte("hello")}, {1 << 40, statusError, nil}} {
		frame := make([]byte, 13+len(f.payload))
		binary.BigEndian.PutUint32(frame[:4], uint32(9+len(f.payload)))
		binary.BigEndian.PutUint64(frame[4:12], f.id)
		frame[12] = f.kind
		copy(frame[13:], f.payload)
		b.Write(frame)
	}
	r := bufio.NewReader(&b)
	if id, kind, p, err := readFrame(r); err != nil || id != 1 || kind != 7 || string(p) != "hello" {
		t.Fatalf("first frame: %d %d %q %v", id, kind, p, err)
	}
	if id, kind, p, err := readFrame(r); err != nil || id != 1<<40 || kind != statusError || len(p) != 0 {
		t.Fatalf("second frame: %d %d %q %v", id, kind, p, err)
	}
	for _, n := range []uint32{0, 8, rpcMaxFrame + 1} {
		var hdr [4]byte
		binary.BigEndian.PutUint32(hdr[:], n)
		if _, _, _, err := readFrame(bufio.NewReader(bytes.NewReader(hdr[:]))); err == nil {
			t.Errorf("length %d accepted", n)
		}
	}
}

func TestActorEncodingRoundTripsAndRefusesDamage(t *testing.T) {
	a := Actor{Accessor: "acc", Remote: "10.0.0.1:5", Node: "n1"}
	enc := append(encodeActor(a), "rest"...)
	got, rest, err := decodeActor(enc)
	if err != nil || got != a || string(rest) != "rest" {
		t.Fatalf("got %+v %q %v", got, rest, err)
	}
	for _, bad := range [][]byte{nil, {2}, {1, 0xff}, encodeActor(a)[:5]} {
		if _, _, err := decodeActor(bad); err == nil {
			t.Errorf("decoded %x", bad)
		}
	}
	// Fields over the bound are cut to it; the size computed up front is
	// the encoding's, whatever the lengths (one- and two-byte varints).
	long := strings.Repeat("x", maxActorField+40)
	for _, a := range []Actor{{}, a, {Accessor: long, Remote: strings.Repeat("r", 127), Node: strings.Repeat("n", 128)}} {
		enc := encodeActor(a)
		if len(enc) != actorSize(a) || cap(enc) != len(enc) {
			t.Errorf("%d-byte encoding, size said %d (cap %d)", len(enc), actorSize(a), cap(enc))
		}
		got, rest, err := decodeActor(append(enc, 'z'))
		want := Actor{Accessor: a.Accessor[:min(len(a.Accessor), maxActorField)], Remote: a.Remote, Node: a.Node}
		if err != nil || got != want || string(rest) != "z" {
			t.Errorf("decoded %d/%d/%d-byte fields, %q, %v", len(got.Accessor), len(got.Remote), len(got.Node), rest, err)
		}
	}
}

func TestIndexEncoding(t *testing.T) {
	for _, idx := range []uint64{0, 1, 127, 128, 1 << 40, 1<<64 - 1} {
		b := appendIndex(nil, idx)
		if b[0] != 0 {
			t.Fatalf("%d encodes as %x: no leading zero byte", idx, b)
		}
		if got, err := parseIndex(b); err != nil || got != idx {
			t.Fatalf("%d: got %d %v", idx, got, err)
		}
	}
	// An earlier release's answer (decimal text) is still read.
	if got, err := parseIndex([]byte("12345678")); err != nil || got != 12345678 {
		t.Fatalf("decimal: %d %v", got, err)
	}
	for _, bad := range [][]byte{nil, {0}, {0, 0x80}, append(appendIndex(nil, 5), 1), []byte("12a")} {
		if _, err := parseIndex(bad); err == nil {
			t.Errorf("parsed %x", bad)
		}
	}
}

func FuzzParseIndex(f *testing.F) {
	f.Add([]byte{0, 5})
	f.Add([]byte("42"))
	f.Fuzz(func(t *testing.T, b []byte) {
		idx, err := parseIndex(b)
		if err == nil && len(b) > 0 && b[0] == 0 {
			if again := appendIndex(nil, idx); !bytes.Equal(again, b) {
				t.Fatalf("%x parsed as %d, which encodes as %x", b, idx, again)
			}
		}
	})
}

// A Raft connection that the closing mux closed between its handshake and
// its hand-over must not be counted as handed to Raft: nobody would ever
// give the count back, and mux.wait (so the node's Shutdown) would sit out
// its whole wait (the rare "shutdown abandoned while closing connections").
// Both orders of the two, on connections of a real listener.
func TestAConnectionClosedBeforeItsHandOverIsNotCounted(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := newMux(ln, ln.Addr(), nil, nil, []byte("s"), hclog.NewNullLogger(), newMetrics())
	defer ln.Close()
	conn := func() *trackedConn {
		cl, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cl.Close() })
		sc, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		c := &trackedConn{Conn: sc, m: m}
		if !m.track(c) {
			t.Fatal("mux refused to track")
		}
		return c
	}
	closedFirst := conn()
	closedFirst.Close()
	if closedFirst.handOver() {
		t.Fatal("a closed connection was handed over")
	}
	handedFirst := conn()
	if !handedFirst.handOver() {
		t.Fatal("an open connection was not handed over")
	}
	handedFirst.Close() // as Raft's handler does when it returns
	handedFirst.Close() // and again: counted once
	if !m.waitRaftHandlers(30 * time.Second) {
		t.Fatal("raft handler count not back to zero")
	}
}
