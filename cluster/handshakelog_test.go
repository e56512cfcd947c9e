package cluster

import (
	"bytes"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/beaconhq/beacon/fsm/fsmtest/wait"
	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// The cluster port's log tells a wrong secret proof (WARN, naming
// --cluster-secret) from connections closed before the handshake completed
// (churn after a stall: DEBUG, not counted), and logs the ambiguous case, a
// peer closing after our proof (it refused it, or gave up), at WARN at most
// once a minute. Real connections over loopback, no secret configured on
// either side of the review's case (h7 review, L6: a resumed node logged
// dozens of "is --cluster-secret the same on every server?" WARN lines).
func TestHandshakeFailuresAreLoggedByWhatTheySay(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var logs lockedBuffer
	logger := hclog.New(&hclog.LoggerOptions{Output: &logs, Level: hclog.Debug})
	m := newMux(ln, ln.Addr(), nil, nil, nil, logger, newMetrics())
	m.serve(func(c net.Conn) { c.Close() })
	t.Cleanup(func() { m.close(); m.wait() })

	dial := func() net.Conn {
		t.Helper()
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	// start sends the kind and a nonce and reads the server's proof.
	start := func() net.Conn {
		t.Helper()
		c := dial()
		if _, err := c.Write(append([]byte{connRPC}, make([]byte, rpcNonceSize)...)); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, make([]byte, rpcNonceSize+32)); err != nil {
			t.Fatal(err)
		}
		return c
	}
	waitLines := func(what string, n int) {
		t.Helper()
		wait.Until(t, 10*time.Second, what, func() bool { return strings.Count(logs.String(), what) >= n })
	}

	// Closed before sending a nonce: churn.
	c := dial()
	c.Write([]byte{connRPC})
	c.Close()
	waitLines("closed before its secret handshake completed", 1)

	// Closed after our proof, twice: one WARN, then DEBUG.
	start().Close()
	waitLines("closed during the secret handshake", 1)
	start().Close()
	waitLines("closed during the secret handshake", 2)

	// A wrong proof: a mismatch for sure.
	c = start()
	c.Write(make([]byte, 32))
	waitLines("proof is wrong", 1)
	c.Close()

	out := logs.String()
	var warns []string
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "[WARN]") {
			warns = append(warns, l)
		}
	}
	if len(warns) != 2 || !strings.Contains(warns[0], "closed during the secret handshake") || !strings.Contains(warns[1], "proof is wrong") {
		t.Fatalf("WARN lines %q, want one for the closed handshakes and one for the wrong proof\n%s", warns, out)
	}
	if strings.Contains(out, "cluster secret handshake failed") {
		t.Fatalf("the old message is still logged:\n%s", out)
	}
	if n := testutil.ToFloat64(m.metrics.connRejected.WithLabelValues("secret")); n != 3 {
		t.Fatalf("%v connections counted as rejected for the secret, want 3 (not the one closed before the handshake)", n)
	}
}
