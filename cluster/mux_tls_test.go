package cluster

import (
	"context"
	"crypto/tls"
	mrand "math/rand/v2"
	"net"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/beaconhq/beacon/fsm/fsmtest/netx"
)

// testTLS returns server and client TLS configurations for 127.0.0.1 from a
// self-signed certificate made for the test, each side verifying the other.
func testTLS(t *testing.T) (server, client *tls.Config) {
	t.Helper()
	pair, pool := netx.SelfSigned(t)
	server = &tls.Config{Certificates: []tls.Certificate{pair}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12}
	client = &tls.Config{Certificates: []tls.Certificate{pair}, RootCAs: pool, MinVersion: tls.VersionTLS12}
	return server, client
}

// A dial whose context ends while the TLS handshake completes must not race
// with itself: the callback that breaks the handshake on cancellation and
// the code that replaces the plain connection by the TLS one ran on the same
// variable (found by the race detector in CI, in agent's TLS cluster test,
// when a node shut down with a read-index request in flight). Cancelling at
// spread-out moments around the handshake's end makes the race detector
// see the overlap if it comes back.
func TestTLSDialCancelledDuringHandshakeIsRaceFree(t *testing.T) {
	srvTLS, cliTLS := testTLS(t)
	logger := hclog.NewNullLogger()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rpc := newRPCServer(logger)
	ctx, cancel := context.WithCancel(context.Background())
	rpc.ctx = ctx
	server := newMux(ln, ln.Addr(), srvTLS, cliTLS, []byte("s3cret"), logger, newMetrics())
	server.serve(rpc.serveConn)
	cln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	client := newMux(cln, cln.Addr(), srvTLS, cliTLS, []byte("s3cret"), logger, newMetrics())
	t.Cleanup(func() {
		client.close()
		client.wait()
		cancel()
		rpc.closeAll()
		server.close()
		server.wait()
	})
	addr := ln.Addr().String()

	// How long one complete dial takes here, to spread the cancellations
	// over it.
	start := time.Now()
	c, err := client.dial(context.Background(), addr, connRPC, 10*time.Second)
	if err != nil {
		t.Fatalf("a dial without cancellation failed: %v", err)
	}
	c.Close()
	full := time.Since(start)

	ok, cancelled := 0, 0
	for i := 0; i < 400; i++ {
		dctx, dcancel := context.WithCancel(context.Background())
		delay := time.Duration(mrand.Int64N(int64(2*full) + 1))
		timer := time.AfterFunc(delay, dcancel)
		c, err := client.dial(dctx, addr, connRPC, 10*time.Second)
		timer.Stop()
		dcancel()
		if err != nil {
			cancelled++
			continue
		}
		ok++
		c.Close()
	}
	t.Logf("one dial %v; of 400 dials cancelled within 2x that, %d completed and %d were stopped", full, ok, cancelled)
}
