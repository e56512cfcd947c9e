package client_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/beaconhq/beacon/api/client"
	"github.com/beaconhq/beacon/fsm/fsmtest/netx"
	"go.uber.org/goleak"
)

// hungAgent accepts connections and never answers, as a paused (SIGSTOP)
// agent does once the kernel has completed the handshake. It counts the
// bytes it is sent, so a test can tell whether a body reached it.
type hungAgent struct {
	ln    net.Listener
	bytes atomic.Int64
	conns atomic.Int64
	mu    sync.Mutex
	held  []net.Conn
	done  sync.WaitGroup
}

// newHungAgent starts a hung agent. With continues it answers "100
// Continue" to a request's headers (so the client sends the body) and then
// nothing: an agent that froze after it started to act on a write.
func newHungAgent(t *testing.T, continues bool) *hungAgent {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &hungAgent{ln: ln}
	h.done.Add(1)
	go func() {
		defer h.done.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			h.conns.Add(1)
			h.mu.Lock()
			h.held = append(h.held, c)
			h.mu.Unlock()
			h.done.Add(1)
			go func() {
				defer h.done.Done()
				// Read what arrives (headers, and a body if one is sent)
				// without ever answering, but "100 Continue" with continues.
				br := bufio.NewReader(c)
				if continues {
					for {
						line, err := br.ReadString('\n')
						h.bytes.Add(int64(len(line)))
						if err != nil {
							return
						}
						if line == "\r\n" {
							break
						}
					}
					if _, err := io.WriteString(c, "HTTP/1.1 100 Continue\r\n\r\n"); err != nil {
						return
					}
				}
				n, _ := io.Copy(io.Discard, br)
				h.bytes.Add(n)
			}()
		}
	}()
	t.Cleanup(h.close)
	return h
}

func (h *hungAgent) addr() string { return h.ln.Addr().String() }

func (h *hungAgent) close() {
	h.ln.Close()
	h.mu.Lock()
	for _, c := range h.held {
		c.Close()
	}
	h.mu.Unlock()
	h.done.Wait()
}

// recordingAgent is a real HTTP server answering writes and reads like an
// agent, or with a given error, and recording what it received.
type recordingAgent struct {
	*httptest.Server
	mu       sync.Mutex
	requests []string // "METHOD PATH body"
	answer   atomic.Pointer[client.ErrorBody]
	status   atomic.Int32
	delay    atomic.Int64 // nanoseconds before answering
}

func newRecordingAgent(t *testing.T) *recordingAgent {
	a := &recordingAgent{}
	a.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set(client.HeaderAgent, "1") // as every agent's answer
		a.mu.Lock()
		a.requests = append(a.requests, r.Method+" "+r.URL.Path+" "+string(b))
		a.mu.Unlock()
		if d := time.Duration(a.delay.Load()); d > 0 {
			select {
			case <-time.After(d):
			case <-r.Context().Done():
				return
			}
		}
		w.Header().Set("X-Beacon-Index", "7")
		w.Header().Set("X-Beacon-Known-Leader", "true")
		if e := a.answer.Load(); e != nil {
			w.WriteHeader(int(a.status.Load()))
			_ = json.NewEncoder(w).Encode(e)
			return
		}
		if r.Method == http.MethodGet {
			_, _ = io.WriteString(w, `[]`)
			return
		}
		_, _ = io.WriteString(w, `{"index":7}`)
	}))
	t.Cleanup(a.Close)
	return a
}

func (a *recordingAgent) failWith(status int, code string) {
	a.status.Store(int32(status))
	a.answer.Store(&client.ErrorBody{Error: "failing on purpose", Code: code})
}

func (a *recordingAgent) got() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.requests...)
}

func (a *recordingAgent) addr() string { return a.Listener.Addr().String() }

// deadAddr returns a loopback address that refuses connections for the
// whole test.
func deadAddr(t *testing.T) string { return netx.RefusedAddr(t) }

// orderedClient returns a client over addrs that always starts with the first
// (the client picks a random start; tests rotate until it is the first).
func orderedClient(t *testing.T, attempt time.Duration, addrs ...string) *client.Client {
	t.Helper()
	for range 1000 {
		c, err := client.New(client.Config{Addresses: addrs, AttemptTimeout: attempt, Timeout: 20 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if c.FirstAddress() == addrs[0] {
			return c
		}
	}
	t.Fatal("the client never started with the first address")
	return nil
}

// testAttempt is the attempt timeout of the subtests with an agent that
// hangs (each such attempt costs that long); answerAttempt that of those
// where every agent answers, long enough for a loaded machine.
const (
	testAttempt   = time.Second
	answerAttempt = 10 * time.Second
)

func TestFailoverPolicy(t *testing.T) {
	defer goleak.VerifyNone(t)
	ctx := context.Background()
	reg := &client.Registration{Address: "127.0.0.1", Port: 8080}

	t.Run("a lone hung agent is a timeout, not a cancellation", func(t *testing.T) {
		// With one agent the call's bound and the attempt's are the same
		// length; whichever timer fires first, the error says the agent
		// did not answer in time (it said "context canceled" when the
		// attempt's fired first).
		hung := newHungAgent(t, false)
		for range 3 {
			c, err := client.New(client.Config{Addresses: []string{hung.addr()}, Timeout: testAttempt})
			if err != nil {
				t.Fatal(err)
			}
			_, _, err = c.Instances(ctx, "web", nil)
			if !errors.Is(err, client.ErrAttemptTimeout) || errors.Is(err, context.Canceled) {
				t.Fatalf("a lone hung agent: %v; want a timeout", err)
			}
		}
	})

	t.Run("a read moves past a hung agent after one attempt timeout", func(t *testing.T) {
		hung, ok := newHungAgent(t, false), newRecordingAgent(t)
		c := orderedClient(t, testAttempt, hung.addr(), ok.addr())
		start := time.Now()
		_, meta, err := c.Instances(ctx, "web", nil)
		if err != nil {
			t.Fatal(err)
		}
		if meta.Agent != ok.addr() {
			t.Fatalf("answered by %s, want %s", meta.Agent, ok.addr())
		}
		if took := time.Since(start); took < testAttempt {
			t.Fatalf("took %s: the hung agent was not tried first", took)
		}
		// The client now starts with the agent that answered.
		if _, meta, err := c.Instances(ctx, "web", nil); err != nil || meta.Agent != ok.addr() {
			t.Fatalf("second read: %v %+v", err, meta)
		}
	})

	t.Run("a write moves past a hung agent that never asked for its body", func(t *testing.T) {
		hung, ok := newHungAgent(t, false), newRecordingAgent(t)
		c := orderedClient(t, testAttempt, hung.addr(), ok.addr())
		idx, err := c.Register(ctx, "web", "web-1", reg)
		if err != nil || idx != 7 {
			t.Fatalf("register: %d %v", idx, err)
		}
		if got := ok.got(); len(got) != 1 || !strings.HasPrefix(got[0], "PUT /v1/services/web/instances/web-1 {") {
			t.Fatalf("the healthy agent got %q", got)
		}
		hung.close() // ends the reader: what it counted is final
		if hung.conns.Load() != 1 {
			t.Fatalf("the hung agent saw %d connections, want 1", hung.conns.Load())
		}
		// Headers only: the body (with its address) never reached it.
		if n := hung.bytes.Load(); n == 0 || n > 1024 {
			t.Fatalf("the hung agent received %d bytes", n)
		}
	})

	t.Run("a deregister moves past a hung agent that never asked for its body", func(t *testing.T) {
		hung, ok := newHungAgent(t, false), newRecordingAgent(t)
		c := orderedClient(t, testAttempt, hung.addr(), ok.addr())
		idx, err := c.Deregister(ctx, "web", "web-1")
		if err != nil || idx != 7 {
			t.Fatalf("deregister: %d %v", idx, err)
		}
		if got := ok.got(); len(got) != 1 || got[0] != "DELETE /v1/services/web/instances/web-1 {}" {
			t.Fatalf("the healthy agent got %q", got)
		}
		hung.close() // ends the reader: what it counted is final
		// Headers only: the hung agent never asked for the body.
		if n := hung.bytes.Load(); n == 0 || n > 1024 {
			t.Fatalf("the hung agent received %d bytes", n)
		}
	})

	t.Run("operator writes move past a hung agent that never asked for their body", func(t *testing.T) {
		calls := []struct {
			name string
			do   func(c *client.Client) error
			want string
		}{
			{"remove-peer", func(c *client.Client) error { return c.RemovePeer(ctx, "n9") }, "DELETE /v1/cluster/peers/n9 {}"},
			{"force-leave", func(c *client.Client) error { return c.ForceLeave(ctx, "n9") }, "POST /v1/cluster/force-leave/n9 {}"},
			{"token delete", func(c *client.Client) error { _, err := c.DeleteToken(ctx, "0123456789abcdef"); return err },
				"DELETE /v1/tokens/0123456789abcdef {}"},
		}
		for _, call := range calls {
			hung, ok := newHungAgent(t, false), newRecordingAgent(t)
			c := orderedClient(t, testAttempt, hung.addr(), ok.addr())
			if err := call.do(c); err != nil {
				t.Fatalf("%s: %v", call.name, err)
			}
			if got := ok.got(); len(got) != 1 || got[0] != call.want {
				t.Fatalf("%s: the healthy agent got %q, want %q", call.name, got, call.want)
			}
			hung.close()
			if n := hung.bytes.Load(); n == 0 || n > 1024 {
				t.Fatalf("%s: the hung agent received %d bytes (want its headers only)", call.name, n)
			}
		}
	})

	t.Run("a write whose body reached an agent that then hung is not sent again elsewhere", func(t *testing.T) {
		hung, ok := newHungAgent(t, true), newRecordingAgent(t)
		c := orderedClient(t, testAttempt, hung.addr(), ok.addr())
		_, err := c.DeleteToken(ctx, "0123456789abcdef")
		if !errors.Is(err, client.ErrAttemptTimeout) || !strings.Contains(err.Error(), "may have been applied") || !strings.Contains(err.Error(), hung.addr()) {
			t.Fatalf("token delete: %v", err)
		}
		if got := ok.got(); len(got) != 0 {
			t.Fatalf("the write went to a second agent: %q", got)
		}
	})

	t.Run("refused connections are skipped by reads and writes", func(t *testing.T) {
		dead, ok := deadAddr(t), newRecordingAgent(t)
		c := orderedClient(t, answerAttempt, dead, ok.addr())
		if _, err := c.Deregister(ctx, "web", "web-1"); err != nil {
			t.Fatal(err)
		}
		c = orderedClient(t, answerAttempt, dead, ok.addr())
		if _, _, err := c.Instances(ctx, "web", nil); err != nil {
			t.Fatal(err)
		}
		if got := ok.got(); len(got) != 2 {
			t.Fatalf("the healthy agent got %q", got)
		}
	})

	t.Run("a 5xx or 429 moves a read on; a 4xx ends it", func(t *testing.T) {
		for _, tc := range []struct {
			status int
			code   string
			next   bool
		}{
			{500, "internal", true}, {503, "shutting_down", true}, {429, "too_many_blocking_queries", true},
			{404, "not_found", false}, {400, "invalid", false},
		} {
			bad, ok := newRecordingAgent(t), newRecordingAgent(t)
			bad.failWith(tc.status, tc.code)
			c := orderedClient(t, answerAttempt, bad.addr(), ok.addr())
			_, meta, err := c.Instances(ctx, "web", nil)
			if tc.next && (err != nil || meta.Agent != ok.addr()) {
				t.Fatalf("%d: %v %+v, want an answer from the next agent", tc.status, err, meta)
			}
			var ce *client.Error
			if !tc.next && (!errors.As(err, &ce) || ce.Status != tc.status || len(ok.got()) != 0) {
				t.Fatalf("%d: %v, and the next agent got %q", tc.status, err, ok.got())
			}
		}
	})

	t.Run("a write moves on after 503 no_leader or not_leader only", func(t *testing.T) {
		for _, tc := range []struct {
			status int
			code   string
			next   bool
		}{
			{503, "no_leader", true}, {503, "not_leader", true},
			{503, "unknown_outcome", false}, {500, "internal", false}, {503, "shutting_down", false}, {409, "conflict", false},
		} {
			bad, ok := newRecordingAgent(t), newRecordingAgent(t)
			bad.failWith(tc.status, tc.code)
			c := orderedClient(t, answerAttempt, bad.addr(), ok.addr())
			_, err := c.Register(ctx, "web", "web-1", reg)
			if tc.next && (err != nil || len(ok.got()) != 1) {
				t.Fatalf("%s: %v, next agent got %q", tc.code, err, ok.got())
			}
			var ce *client.Error
			if !tc.next && (!errors.As(err, &ce) || ce.Code != tc.code || len(ok.got()) != 0) {
				t.Fatalf("%s: %v, and the next agent got %q", tc.code, err, ok.got())
			}
		}
	})

	t.Run("when every agent fails the error names each", func(t *testing.T) {
		hung, dead, bad := newHungAgent(t, false), deadAddr(t), newRecordingAgent(t)
		bad.failWith(503, "no_leader")
		c := orderedClient(t, testAttempt, hung.addr(), dead, bad.addr())
		_, _, err := c.Instances(ctx, "web", nil)
		var ae *client.AttemptsError
		if !errors.As(err, &ae) || len(ae.Attempts) != 3 {
			t.Fatalf("got %v", err)
		}
		for _, a := range []string{hung.addr(), dead, bad.addr()} {
			if !strings.Contains(err.Error(), a) {
				t.Fatalf("%q does not name %s", err, a)
			}
		}
		var ce *client.Error
		if !errors.As(err, &ce) || ce.Code != "no_leader" {
			t.Fatalf("the last answer is not reachable with errors.As: %v", err)
		}
		if !errors.Is(ae.Attempts[0].Err, client.ErrAttemptTimeout) {
			t.Fatalf("first attempt: %v", ae.Attempts[0].Err)
		}
	})

	t.Run("a blocking query's attempt lasts its wait plus the attempt timeout", func(t *testing.T) {
		slow, dead := newRecordingAgent(t), deadAddr(t)
		slow.delay.Store(int64(2 * testAttempt))
		c := orderedClient(t, testAttempt, slow.addr(), dead)
		if _, _, err := c.Instances(ctx, "web", &client.QueryOptions{WaitIndex: 3, WaitTime: 2 * testAttempt}); err != nil {
			t.Fatalf("a blocking query answered after its wait was cut short: %v", err)
		}
		_, _, err := c.Instances(ctx, "web", nil)
		var ue *client.UnreachableError
		if !errors.As(err, &ue) || len(ue.Errs) != 2 || !errors.Is(ue.Errs[0], client.ErrAttemptTimeout) {
			t.Fatalf("a read answered after twice the attempt timeout: %v", err)
		}
	})

	t.Run("with one agent the call's timeout alone bounds it", func(t *testing.T) {
		slow := newRecordingAgent(t)
		slow.delay.Store(int64(2 * testAttempt))
		c := orderedClient(t, testAttempt, slow.addr())
		if _, _, err := c.Instances(ctx, "web", nil); err != nil {
			t.Fatalf("a slow answer from the only agent: %v", err)
		}
	})

	t.Run("the caller's deadline ends the call at once", func(t *testing.T) {
		hung := newHungAgent(t, false)
		c := orderedClient(t, 10*time.Second, hung.addr(), deadAddr(t))
		cctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		defer cancel()
		if _, _, err := c.Instances(cctx, "web", nil); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("got %v", err)
		}
	})

	// QA: the agent holding a balancer's blocking read was killed; the
	// retry on a healthy agent blocked too and, started late in the call,
	// was cut off by the first attempt's deadline. The next agent is now
	// asked without waiting, and answers at once.
	t.Run("a blocking query whose agent dies mid-wait is answered by the next agent at once", func(t *testing.T) {
		cat := newCatalog()
		cat.set(5, "w1")
		dying, ok := newAgent(t, cat), newAgent(t, cat)
		c := orderedClient(t, answerAttempt, dying.host(), ok.host())
		type result struct {
			meta *client.QueryMeta
			err  error
		}
		res := make(chan result, 1)
		cctx, cancel := context.WithCancel(ctx)
		defer cancel() // a call still waiting must not hold the agents' Close
		go func() {
			_, meta, err := c.Instances(cctx, "web", &client.QueryOptions{WaitIndex: 5, WaitTime: 10 * time.Minute})
			res <- result{meta, err}
		}()
		waitUntil(t, func() bool { return dying.blocked.Load() == 1 }, "the blocking read to wait on the first agent")
		// The process dies: its port refuses, its connections are cut.
		_ = dying.Listener.Close()
		dying.CloseClientConnections()
		select {
		case r := <-res:
			if r.err != nil || r.meta.Agent != ok.host() || r.meta.Index != 5 {
				t.Fatalf("answer %+v, %v: want the second agent's, index 5", r.meta, r.err)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("no answer within 20 s of the first agent's death: the retry waited")
		}
		if n := ok.blocked.Load(); n != 0 {
			t.Fatalf("%d blocking reads held on the second agent", n)
		}
	})
}
