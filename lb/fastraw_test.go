//go:build linux

package lb

import (
	"bufio"
	"context"
	"fmt"
	"hash/crc32"
	"io"
	"net"

	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// rawLoopBalancer runs a fast-path balancer with service web on be and
// returns it with a client connection whose first request has been
// answered: the connection's next requests are the raw loop's.
func rawLoopBalancer(t *testing.T, be *testBackend, mutate func(*Config)) (*Balancer, net.Conn, *bufio.Reader) {
	t.Helper()
	cat := newMemCatalog()
	idx := cat.Set("web", be.backend())
	b, url := startBalancer(t, cat, func(c *Config) {
		c.DisableFastPath = false
		// A lost wake-up would show as an answer that comes only at the
		// idle timeout: far beyond the tests' waits.
		c.IdleTimeout = time.Minute
		if mutate != nil {
			mutate(c)
		}
	})
	waitTable(t, b, "web", idx)
	c, br := dialRaw(t, url)
	fmt.Fprint(c, "GET /web/warm HTTP/1.1\r\nHost: x\r\n\r\n")
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if resp := readAnswer(t, br, "first request"); resp.StatusCode != 200 {
		t.Fatalf("first request: %d", resp.StatusCode)
	}
	return b, c, br
}

// expectAnswers reads one answer per want, each 200 with that body.
func expectAnswers(t *testing.T, br *bufio.Reader, want ...string) {
	t.Helper()
	for i, w := range want {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("answer %d (%q): %v", i, w, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != w {
			t.Fatalf("answer %d: %d %q, want %q", i, resp.StatusCode, body, w)
		}
	}
}

// heldBackend is an instance that reports each request's path on got and
// answers "METHOD path"; a path ending in /slow is held until release is
// called (or hold passes).
func heldBackend(t *testing.T, hold time.Duration) (be *testBackend, got chan string, release func()) {
	be = startBackend(t, "web-1")
	got = make(chan string, 4)
	held := make(chan struct{})
	var once sync.Once
	release = func() { once.Do(func() { close(held) }) }
	t.Cleanup(release)
	be.handle(func(w http.ResponseWriter, r *http.Request) {
		got <- r.URL.Path
		if strings.HasSuffix(r.URL.Path, "/slow") {
			select {
			case <-held:
			case <-time.After(hold):
			}
		}
		fmt.Fprint(w, r.Method+" "+r.URL.Path)
	})
	return be, got, release
}

// looped is how many requests the raw loop has answered.
func looped(b *Balancer) int64 { return b.fast.Load().looped.Load() }

// A request that arrives while the raw loop waits on an instance is not
// waited for until the idle timeout: its readiness is not lost.
func TestRawLoopSeesARequestSentDuringAnExchange(t *testing.T) {
	be, got, release := heldBackend(t, 10*time.Second)
	b, c, br := rawLoopBalancer(t, be, nil)
	<-got // warm
	before := looped(b)
	fmt.Fprint(c, "GET /web/slow HTTP/1.1\r\nHost: x\r\n\r\n")
	if p := <-got; p != "/slow" {
		t.Fatalf("the instance got %q", p)
	}
	// The loop is waiting on the instance: the next request comes now.
	fmt.Fprint(c, "GET /web/quick HTTP/1.1\r\nHost: x\r\n\r\n")
	release()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	expectAnswers(t, br, "GET /slow", "GET /quick")
	if n := looped(b) - before; n != 2 {
		t.Fatalf("the raw loop answered %d of the 2 requests", n)
	}
}

// Requests pipelined in one write are all answered, in order, from the
// loop, and a head that comes in pieces is put together.
func TestRawLoopPipelinesAndJoinsAHeadInPieces(t *testing.T) {
	be := startBackend(t, "web-1")
	be.handle(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, r.URL.Path) })
	b, c, br := rawLoopBalancer(t, be, nil)
	before := looped(b)
	var all strings.Builder
	for i := range 5 {
		fmt.Fprintf(&all, "GET /web/p%d HTTP/1.1\r\nHost: x\r\n\r\n", i)
	}
	fmt.Fprint(c, all.String())
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	expectAnswers(t, br, "/p0", "/p1", "/p2", "/p3", "/p4")
	// A head in pieces: the loop waits for the rest of it. Each piece is
	// sent once the previous one has been taken from the socket, as far
	// as the test can tell: it only needs them in separate reads some of
	// the time to exercise the wait, and passes either way when the
	// balancer is right.
	for _, piece := range []string{"GET /web/pie", "ces HTTP/1.1\r\nHo", "st: x\r\n", "\r\n"} {
		if _, err := io.WriteString(c, piece); err != nil {
			t.Fatal(err)
		}
	}
	expectAnswers(t, br, "/pieces")
	if n := looped(b) - before; n != 6 {
		t.Fatalf("the raw loop answered %d of the 6 requests", n)
	}
}

// A half-sent head in the loop is bounded by the read header timeout, not
// the idle timeout: the connection is closed.
func TestRawLoopBoundsAHalfSentHead(t *testing.T) {
	be := startBackend(t, "web-1")
	_, c, br := rawLoopBalancer(t, be, func(c *Config) { c.ReadHeaderTimeout = 300 * time.Millisecond })
	fmt.Fprint(c, "GET /web/x HTTP/1.1\r\nHo")
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
	start := time.Now()
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("read: %v, want the balancer's close", err)
	}
	if took := time.Since(start); took > 15*time.Second {
		t.Fatalf("closed after %v: the idle timeout (1 min), not the read header timeout, bounded the head", took)
	}
}

// A body that cannot be whole in the loop's buffer leaves the loop; the
// ordinary path reads it, and the connection goes on.
func TestRawLoopHandsALongBodyToTheOrdinaryPath(t *testing.T) {
	be := startBackend(t, "web-1")
	be.handle(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		fmt.Fprint(w, n)
	})
	b, c, br := rawLoopBalancer(t, be, nil)
	before := looped(b)
	body := strings.Repeat("b", 3*fastReadBufSize)
	fmt.Fprintf(c, "POST /web/up HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", len(body))
	if _, err := io.WriteString(c, body); err != nil {
		t.Fatal(err)
	}
	fmt.Fprint(c, "GET /web/after HTTP/1.1\r\nHost: x\r\n\r\n")
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	expectAnswers(t, br, strconv.Itoa(len(body)), "0")
	if n := looped(b) - before; n != 1 {
		t.Fatalf("the raw loop answered %d requests, want 1 (the GET after the long POST)", n)
	}
}

// A client that leaves while its request, served in the loop, waits on a
// stalled instance gets its instance connection closed (the watch waits on
// a copy of the socket while the loop holds it).
func TestRawLoopClientGoneReleasesTheUpstreamConnection(t *testing.T) {
	sb := startStallingBackend(t, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\nabc")
	ok := startBackend(t, "ok-1")
	cat := newMemCatalog()
	webIdx := cat.Set("web", sb.backend())
	idx := cat.Set("ok", ok.backend())
	b, url := startBalancer(t, cat, func(c *Config) {
		c.DisableFastPath = false
		c.ResponseHeaderTimeout = time.Minute
	})
	waitTable(t, b, "ok", idx)
	waitTable(t, b, "web", webIdx)
	c, br := dialRaw(t, url)
	fmt.Fprint(c, "GET /ok/x HTTP/1.1\r\nHost: x\r\n\r\n")
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	readAnswer(t, br, "first request")
	before := looped(b)
	fmt.Fprint(c, "GET /web/x HTTP/1.1\r\nHost: x\r\n\r\n")
	sb.waitAnswered(t)
	if looped(b) == before {
		t.Fatal("the stalled request was not the raw loop's")
	}
	c.Close()
	select {
	case <-sb.gone:
	case <-time.After(5 * time.Second):
		sb.close()
		t.Fatal("the upstream connection is still open 5 s after the client left")
	}
}

// Shutdown closes a connection idle in the loop at once and returns.
func TestRawLoopShutdownClosesAnIdleConnection(t *testing.T) {
	be := startBackend(t, "web-1")
	b, _, br := rawLoopBalancer(t, be, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("read: %v, want EOF", err)
	}
}

// Requests of every shape the loop meets (bodies, pipelining, heads and
// bodies cut anywhere into separate writes) are answered in order and
// whole, whether the loop or the ordinary path takes each.
func TestRawLoopAnswersRequestsCutAnywhere(t *testing.T) {
	be := startBackend(t, "web-1")
	be.handle(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s %d %x", r.Method, r.URL.Path, len(body), crc(body))
	})
	b, c, br := rawLoopBalancer(t, be, nil)
	before := looped(b)
	rnd := uint64(20261206)
	next := func(n int) int {
		rnd = rnd*6364136223846793005 + 1442695040888963407
		return int((rnd >> 33) % uint64(n))
	}
	var stream []byte
	var want []string
	for i := range 60 {
		path := "/web/r" + strconv.Itoa(i)
		switch next(3) {
		case 0:
			stream = fmt.Appendf(stream, "GET %s HTTP/1.1\r\nHost: x\r\nX-Pad: %s\r\n\r\n", path, strings.Repeat("p", next(200)))
			want = append(want, fmt.Sprintf("GET /r%d 0 %x", i, crc(nil)))
		default:
			body := make([]byte, next(3*fastReadBufSize))
			for k := range body {
				body[k] = byte('a' + next(26))
			}
			stream = fmt.Appendf(stream, "POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", path, len(body), body)
			want = append(want, fmt.Sprintf("POST /r%d %d %x", i, len(body), crc(body)))
		}
	}
	done := make(chan error, 1)
	go func() {
		for len(stream) > 0 {
			n := min(len(stream), 1+next(600))
			if _, err := c.Write(stream[:n]); err != nil {
				done <- err
				return
			}
			stream = stream[n:]
		}
		done <- nil
	}()
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	expectAnswers(t, br, want...)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if looped(b) == before {
		t.Fatal("the raw loop answered none of the requests")
	}
	t.Logf("the raw loop answered %d of %d", looped(b)-before, len(want))
}

func crc(b []byte) uint32 { return crc32.ChecksumIEEE(b) }

// A client that sends its next request while its last one, in the loop,
// has waited long enough to be watched (on a copy of the socket) is not
// taken for gone: the watch sees the request's first byte, leaves it where
// the loop reads it, and both answers come in order.
func TestRawLoopWatchSeesTheNextRequestAndLeavesIt(t *testing.T) {
	be, got, release := heldBackend(t, 20*time.Second)
	b, c, br := rawLoopBalancer(t, be, nil)
	<-got // warm
	fs := b.fast.Load()
	watches := fs.dupWaits.Load()
	fmt.Fprint(c, "GET /web/slow HTTP/1.1\r\nHost: x\r\n\r\n")
	<-got
	// The watch starts once the request has run for watchAfter.
	for deadline := time.Now().Add(10 * time.Second); fs.dupWaits.Load() == watches; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no watch started on the slow request within 10 s")
		}
	}
	saw := fs.dupSawNext.Load()
	fmt.Fprint(c, "GET /web/next HTTP/1.1\r\nHost: x\r\n\r\n")
	// The slow answer is held until the watch has seen the next request.
	for deadline := time.Now().Add(10 * time.Second); fs.dupSawNext.Load() == saw; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the watch did not see the next request within 10 s")
		}
	}
	release()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	expectAnswers(t, br, "GET /slow", "GET /next")
}
