package compattest

import (
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"
	"github.com/hashicorp/consul/api/watch"
	"github.com/hashicorp/go-hclog"

	"github.com/beaconhq/beacon/agent/agenttest"
	"github.com/beaconhq/beacon/api/client"
)

// Traefik's consulCatalog provider (v3.7.13, run against a 3-node Beacon
// cluster: docs/consul.md, "Traefik") is not a dependency here; these tests
// replay what it does with the Consul client it is built on. With `watch:
// true` it runs two watch plans of github.com/hashicorp/consul/api/watch,
// "services" (GET /v1/catalog/services?index=N) and "checks" (GET
// /v1/health/state/any?index=N), and on each event of either it reads the
// service list and, for each service whose tags enable it, GET
// /v1/health/service/NAME?tag=traefik.enable%3Dtrue (exposedByDefault:
// false), keeping the instances whose aggregated status is passing or
// warning (strictChecks' default).

// countingTransport counts the requests a client sends.
type countingTransport struct{ n atomic.Int64 }

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.n.Add(1)
	return http.DefaultTransport.RoundTrip(r)
}

// traefikProvider is the provider's request sequence against one agent.
type traefikProvider struct {
	t      testing.TB
	cl     *consulapi.Client
	sent   *countingTransport
	events atomic.Int64
	mu     sync.Mutex
	view   string // "name=host:port" of the instances it would route to, sorted
	err    error
}

func startTraefikProvider(t testing.TB, addr string) *traefikProvider {
	t.Helper()
	sent := &countingTransport{}
	cfg := consulapi.DefaultConfig()
	cfg.Address = addr
	cfg.HttpClient = &http.Client{Transport: sent}
	cl, err := consulapi.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	p := &traefikProvider{t: t, cl: cl, sent: sent}
	p.load()
	changed := make(chan struct{}, 1)
	done := make(chan struct{})
	var wg sync.WaitGroup
	var plans []*watch.Plan
	for _, typ := range []string{"services", "checks"} {
		plan, err := watch.Parse(map[string]any{"type": typ})
		if err != nil {
			t.Fatal(err)
		}
		plan.HybridHandler = func(watch.BlockingParamVal, any) {
			select {
			case changed <- struct{}{}:
			default:
			}
		}
		plans = append(plans, plan)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := plan.RunWithClientAndHclog(cl, hclog.NewNullLogger()); err != nil {
				t.Errorf("%s watch: %v", typ, err)
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			case <-changed:
				p.events.Add(1)
				p.load()
			}
		}
	}()
	t.Cleanup(func() {
		for _, plan := range plans {
			plan.Stop()
		}
		close(done)
		wg.Wait()
	})
	return p
}

// load is the provider's getConsulServicesData and its health filter.
func (p *traefikProvider) load() {
	view, err := func() (string, error) {
		services, _, err := p.cl.Catalog().Services(nil)
		if err != nil {
			return "", err
		}
		var out []string
		for name, tags := range services {
			if !slices.Contains(tags, "traefik.enable=true") {
				continue
			}
			entries, _, err := p.cl.Health().Service(name, "traefik.enable=true", false, nil)
			if err != nil {
				return "", err
			}
			for _, e := range entries {
				if s := e.Checks.AggregatedStatus(); s != consulapi.HealthPassing && s != consulapi.HealthWarning {
					continue
				}
				addr := e.Service.Address
				if addr == "" {
					addr = e.Node.Address
				}
				out = append(out, name+"="+addr+":"+strconv.Itoa(e.Service.Port))
			}
		}
		slices.Sort(out)
		return strings.Join(out, ","), nil
	}()
	p.mu.Lock()
	defer p.mu.Unlock()
	if err != nil {
		p.err = err
		return
	}
	p.view, p.err = view, nil
}

func (p *traefikProvider) current() (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.view, p.err
}

// await waits until the routes the provider would build are want; only the
// watches' events update them.
func (p *traefikProvider) await(what, want string) {
	p.t.Helper()
	agenttest.Eventually(p.t, 20*time.Second, func() bool { v, err := p.current(); return err == nil && v == want }, what)
}

func traefikTags(router string) []string {
	return []string{"traefik.enable=true", "traefik.http.routers." + router + ".rule=Host(`" + router + ".local`)"}
}

// TestTraefikConsulCatalogFollowsTheCatalog drives the provider's request
// sequence, pointed at a follower, through what docs/consul.md says Traefik
// follows: registrations through Beacon's API and Consul's, a check going
// critical and recovering, maintenance, a tag change, the leader killed
// (the registration made after the election reaches it), a deregistration.
// While nothing changes, its watches hold their requests (a watch that
// returned at once, as with an index of 0, would ask again in a loop).
func TestTraefikConsulCatalogFollowsTheCatalog(t *testing.T) {
	c := agenttest.New(t, 3)
	c.WaitForVoters(3)
	leader := c.Leader()
	watched := c.Follower(leader)
	writeVia := c.Follower(leader, watched)
	w := consulClient(t, c, writeVia, "")
	hs1, hs2 := newHealthServer(t), newHealthServer(t)
	host1, port1 := hs1.hostPort()
	host2, port2 := hs2.hostPort()
	both := fmt.Sprintf("web=%s:%d,web=%s:%d", host1, port1, host2, port2)
	if port2 < port1 {
		both = fmt.Sprintf("web=%s:%d,web=%s:%d", host2, port2, host1, port1)
	}
	only2 := fmt.Sprintf("web=%s:%d", host2, port2)
	only1 := fmt.Sprintf("web=%s:%d", host1, port1)

	p := startTraefikProvider(t, c.Node(watched).HTTPAddr())
	if v, err := p.current(); err != nil || v != "" {
		t.Fatalf("empty catalog: %q %v", v, err)
	}

	// web-1 through Consul's API, web-2 through Beacon's, each with an HTTP
	// check of its backend; a service without traefik.enable is not routed.
	register1 := func(tags []string) error {
		return w.Agent().ServiceRegister(&consulapi.AgentServiceRegistration{
			ID: "web-1", Name: "web", Address: host1, Port: port1, Tags: tags,
			Check: &consulapi.AgentServiceCheck{HTTP: hs1.URL + "/health", Interval: "200ms", Timeout: "150ms"},
		})
	}
	if err := register1(traefikTags("web")); err != nil {
		t.Fatal(err)
	}
	agenttest.Register(t, c.Client(leader), "web", "web-2", &client.Registration{
		Address: host2, Port: port2, Tags: traefikTags("web"),
		Checks: []client.CheckDefinition{{HTTP: hs2.URL + "/health", Interval: client.Duration(200 * time.Millisecond), Timeout: client.Duration(150 * time.Millisecond)}},
	})
	if err := w.Agent().ServiceRegister(&consulapi.AgentServiceRegistration{
		ID: "hidden-1", Name: "hidden", Address: host1, Port: port1, Tags: []string{"traefik.http.routers.hidden.rule=Host(`hidden.local`)"},
	}); err != nil {
		t.Fatal(err)
	}
	p.await("both web instances routed", both)

	hs1.healthy.Store(false)
	p.await("web-1 out of the rotation once its check is critical", only2)
	hs1.healthy.Store(true)
	p.await("web-1 back once its check passes", both)

	if err := w.Agent().EnableServiceMaintenance("web-1", "traefik test"); err != nil {
		t.Fatal(err)
	}
	p.await("web-1 out of the rotation in maintenance", only2)
	if err := w.Agent().DisableServiceMaintenance("web-1"); err != nil {
		t.Fatal(err)
	}
	p.await("web-1 back after maintenance", both)

	// Without traefik.enable the provider's tag filter leaves it out.
	if err := register1(traefikTags("web")[1:]); err != nil {
		t.Fatal(err)
	}
	p.await("web-1 unrouted once its tags drop traefik.enable", only2)
	if err := register1(traefikTags("web")); err != nil {
		t.Fatal(err)
	}
	p.await("web-1 routed again with traefik.enable", both)

	// Quiet: the watches block. A hot loop sends thousands of requests a
	// second; the bound only catches that.
	before, since := p.sent.n.Load(), time.Now()
	time.Sleep(time.Second)
	if n := p.sent.n.Load() - before; n > 50 {
		t.Fatalf("%d requests in %v while nothing changed", n, time.Since(since))
	}

	c.Stop(leader)
	agenttest.Eventually(t, 30*time.Second, func() bool {
		return w.Agent().ServiceRegister(&consulapi.AgentServiceRegistration{
			ID: "api-1", Name: "api", Address: host2, Port: port2, Tags: traefikTags("api"),
			Check: &consulapi.AgentServiceCheck{HTTP: hs2.URL + "/health", Interval: "200ms", Timeout: "150ms"},
		}) == nil
	}, "a registration after the leader died")
	p.await("the registration made after the election routed", fmt.Sprintf("api=%s:%d,", host2, port2)+both)

	if err := w.Agent().ServiceDeregister("web-2"); err != nil {
		t.Fatal(err)
	}
	if err := w.Agent().ServiceDeregister("api-1"); err != nil {
		t.Fatal(err)
	}
	p.await("deregistered instances unrouted", only1)
	t.Logf("%d watch events, %d requests", p.events.Load(), p.sent.n.Load())
}

// TestTraefikNamespacesAndKV replays the two configurations that went wrong
// against Beacon. `namespaces: ["team-a", ...]` makes Traefik's client add
// ?ns=team-a: Beacon answered with its one (default) namespace, and Traefik
// routed every service once per namespace listed; now the read is refused,
// as Consul CE refuses it. providers.consul (the KV provider) lists
// /v1/kv/traefik through the same client: Beacon's 404 read as "no such
// key" at index 0, so its watch asked again at once, forever; now the
// store is empty at index 1, and the watch blocks on it (api/consul/kv.go).
func TestTraefikNamespacesAndKV(t *testing.T) {
	c := agenttest.New(t, 3)
	follower := c.Follower()
	cl := consulClient(t, c, follower, "")
	if err := cl.Agent().ServiceRegister(&consulapi.AgentServiceRegistration{ID: "web-1", Name: "web", Port: 8080, Tags: traefikTags("web")}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "web listed", func() bool {
		s, _, err := cl.Catalog().Services(nil)
		return err == nil && s["web"] != nil
	})

	for ns, wantErr := range map[string]bool{"team-a": true, "default": false} {
		cfg := consulapi.DefaultConfig()
		cfg.Address = c.Node(follower).HTTPAddr()
		cfg.Namespace = ns
		nsc, err := consulapi.NewClient(cfg)
		if err != nil {
			t.Fatal(err)
		}
		opts := &consulapi.QueryOptions{RequireConsistent: true, Datacenter: "dc1"}
		services, _, err := nsc.Catalog().Services(opts)
		if wantErr {
			if err == nil || !strings.Contains(err.Error(), "400") {
				t.Errorf("namespace %s: %v %v, want a 400", ns, services, err)
			}
			_, _, err = nsc.Health().Service("web", "", false, opts)
			if err == nil || !strings.Contains(err.Error(), "400") {
				t.Errorf("namespace %s: health: %v, want a 400", ns, err)
			}
			continue
		}
		if err != nil || services["web"] == nil {
			t.Errorf("namespace %s: %v %v", ns, services, err)
		}
	}

	// kvtools/consul's WatchTree: List with a wait, then block on the
	// returned index. Beacon has no KV store: the list is empty at index 1,
	// and the watch on index 1 blocks for its wait instead of asking again
	// at once.
	pairs, meta, err := cl.KV().List("traefik", &consulapi.QueryOptions{WaitTime: 15 * time.Second})
	if err != nil || len(pairs) != 0 || meta.LastIndex != 1 {
		t.Fatalf("KV list: pairs %v, meta %+v, err %v; want none at index 1", pairs, meta, err)
	}
	start := time.Now()
	pairs, meta, err = cl.KV().List("traefik", &consulapi.QueryOptions{WaitIndex: meta.LastIndex, WaitTime: time.Second})
	if err != nil || len(pairs) != 0 || meta.LastIndex != 1 {
		t.Fatalf("KV watch: pairs %v, meta %+v, err %v; want none at index 1", pairs, meta, err)
	}
	if waited := time.Since(start); waited < 900*time.Millisecond {
		t.Fatalf("KV watch at index 1 answered after %v, want its wait (1 s): a watch would loop", waited)
	}
	if pair, _, err := cl.KV().Get("traefik/key", nil); err != nil || pair != nil {
		t.Fatalf("KV get: %v %v, want an absent key", pair, err)
	}
	if _, err := cl.KV().Put(&consulapi.KVPair{Key: "traefik/key", Value: []byte("v")}, nil); err == nil || !strings.Contains(err.Error(), "501") {
		t.Fatalf("KV put: %v, want a 501", err)
	}
}
