package lb

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/beaconhq/beacon/fsm/fsmtest/wait"
)

// memCatalog is an in-memory registry with the blocking semantics of the
// real one; tests change it and can make it unreachable.
type memCatalog struct {
	mu        sync.Mutex
	index     uint64
	listIndex uint64
	services  map[string]*memService
	changed   chan struct{}
	down      bool
	reads     atomic.Int64
}

type memService struct {
	index    uint64
	backends []Backend
}

func newMemCatalog() *memCatalog {
	return &memCatalog{services: map[string]*memService{}, changed: make(chan struct{}), index: 1, listIndex: 1}
}

func (c *memCatalog) wakeLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// Set replaces a service's instances and returns the new index.
func (c *memCatalog) Set(service string, bs ...Backend) uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.index++
	if _, ok := c.services[service]; !ok {
		c.listIndex = c.index
	}
	c.services[service] = &memService{index: c.index, backends: append([]Backend(nil), bs...)}
	c.wakeLocked()
	return c.index
}

// Update changes one instance of a service in place.
func (c *memCatalog) Update(service, id string, fn func(*Backend)) uint64 {
	c.mu.Lock()
	s := c.services[service]
	bs := append([]Backend(nil), s.backends...)
	c.mu.Unlock()
	for i := range bs {
		if bs[i].ID == id {
			fn(&bs[i])
		}
	}
	return c.Set(service, bs...)
}

// SetDown makes every read fail (and wakes blocked ones) until SetDown(false).
func (c *memCatalog) SetDown(down bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.down = down
	c.wakeLocked()
}

var errRegistryDown = errors.New("memcatalog: registry unreachable")

func (c *memCatalog) wait(ctx context.Context, read func() (uint64, bool)) (uint64, error) {
	c.reads.Add(1)
	for {
		c.mu.Lock()
		if c.down {
			c.mu.Unlock()
			return 0, errRegistryDown
		}
		idx, ready := read()
		ch := c.changed
		c.mu.Unlock()
		if ready {
			return idx, nil
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-ch:
		}
	}
}

func (c *memCatalog) Services(ctx context.Context, index uint64) (*ServiceList, error) {
	var names []string
	idx, err := c.wait(ctx, func() (uint64, bool) {
		names = names[:0]
		for n := range c.services {
			names = append(names, n)
		}
		return c.listIndex, c.listIndex != index
	})
	if err != nil {
		return nil, err
	}
	return &ServiceList{Index: idx, Names: names, Source: Source{Node: "mem", KnownLeader: true}}, nil
}

func (c *memCatalog) Instances(ctx context.Context, service string, index uint64) (*InstanceList, error) {
	var bs []Backend
	idx, err := c.wait(ctx, func() (uint64, bool) {
		s := c.services[service]
		if s == nil {
			return c.listIndex, c.listIndex != index
		}
		bs = append([]Backend(nil), s.backends...)
		return s.index, s.index != index
	})
	if err != nil {
		return nil, err
	}
	return &InstanceList{Index: idx, Backends: bs, Source: Source{Node: "mem", KnownLeader: true}}, nil
}

// testBackend is a real HTTP server on loopback that counts its requests
// and answers with its name.
type testBackend struct {
	name    string
	ln      net.Listener
	srv     *http.Server
	hits    atomic.Int64
	handler atomic.Pointer[http.HandlerFunc]
	port    int
}

func startBackend(t testing.TB, name string) *testBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &testBackend{name: name, ln: ln, port: ln.Addr().(*net.TCPAddr).Port}
	b.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.hits.Add(1)
		if h := b.handler.Load(); h != nil {
			(*h)(w, r)
			return
		}
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("X-Backend", name)
		fmt.Fprint(w, name)
	}), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = b.srv.Serve(ln) }()
	t.Cleanup(b.kill)
	return b
}

// handle replaces the backend's handler (it still counts hits).
func (b *testBackend) handle(h http.HandlerFunc) { b.handler.Store(&h) }

// kill stops the backend at once, dropping its connections: the process is
// gone. The listener is closed here too: Server.Close closes only listeners
// its Serve has started on, and a Serve goroutine not yet running would
// leave the port accepting into its backlog (a balancer's connection there
// is reset later, instead of refused now).
func (b *testBackend) kill() {
	_ = b.srv.Close()
	_ = b.ln.Close()
}

// backend returns its registry record: passing, weight 1.
func (b *testBackend) backend() Backend {
	return Backend{ID: b.name, Address: "127.0.0.1", Port: b.port, Weight: 1, Status: Passing}
}

// startBalancer runs a balancer over cat on loopback; it stops when the
// test ends. mutate may adjust the config.
func startBalancer(t testing.TB, cat Catalog, mutate func(*Config)) (*Balancer, string) {
	t.Helper()
	cfg := DefaultConfig()
	cfg.RegistryBackoffMin, cfg.RegistryBackoffMax = 10*time.Millisecond, 100*time.Millisecond
	cfg.AllowLoopback = true // the test backends listen on 127.0.0.1
	cfg.DisableFastPath = netHTTPPathOnly
	if mutate != nil {
		mutate(&cfg)
	}
	b, err := New(cfg, cat)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		// A test that ends before Serve begins shuts the balancer down
		// first: Serve then answers http.ErrServerClosed, as net/http's does.
		if err := b.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("serve: %v", err)
		}
		_ = ln.Close()
	}()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = b.Shutdown(ctx)
		<-done
	})
	return b, "http://" + ln.Addr().String()
}

// waitTable waits until the balancer's table for service has index or later.
func waitTable(t testing.TB, b *Balancer, service string, index uint64) *Table {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.WaitForIndex(ctx, service, index); err != nil {
		t.Fatal(err)
	}
	return b.Table(service)
}

// newClient returns an HTTP client that keeps no connections after the test.
func newClient(t testing.TB) *http.Client {
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// get sends a GET and returns status, body and the serving backend's name.
func get(t testing.TB, c *http.Client, url string, hdr ...string) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		if strings.EqualFold(hdr[i], "Host") {
			req.Host = hdr[i+1]
			continue
		}
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: read body: %v", url, err)
	}
	return resp.StatusCode, string(body), resp.Header
}

// eventually polls cond until it holds, for at most 30 s (wait.Until).
func eventually(t testing.TB, cond func() bool, what string) {
	t.Helper()
	wait.Until(t, 30*time.Second, what, cond)
}

// rawUpgrade sends a WebSocket-style upgrade request over a raw connection
// and returns the connection after the 101 response.
func rawUpgrade(t testing.TB, addr, path, host string) (net.Conn, *bufio.Reader) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", path, host)
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		conn.Close()
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		conn.Close()
		t.Fatalf("upgrade answered %d, want 101", resp.StatusCode)
	}
	return conn, br
}
