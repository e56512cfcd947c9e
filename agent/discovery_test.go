package agent_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/beaconhq/beacon/agent"
	"github.com/beaconhq/beacon/agent/agenttest"
	"github.com/beaconhq/beacon/api/client"
)

func ids(insts []client.Instance) []string {
	out := []string{}
	for _, i := range insts {
		out = append(out, i.ID)
	}
	sort.Strings(out)
	return out
}

func ttl(initial string) []client.CheckDefinition {
	return []client.CheckDefinition{{TTL: client.Duration(time.Hour), InitialStatus: initial}}
}

// The tests that stop nodes come first: the package's goleak check runs
// after the last test, and gossip probes of a dead peer take a moment to
// end after shutdown.

func TestDiscoveryFiltersAndModesOnEveryNode(t *testing.T) {
	c := agenttest.New(t, 3)
	c.WaitForVoters(3)
	ctx := context.Background()
	f := c.Follower()
	var last uint64
	for _, r := range []struct {
		id  string
		reg client.Registration
	}{
		{"w1", client.Registration{Address: "10.0.0.1", Port: 80, Tags: []string{"v1", "eu"}, Meta: map[string]string{"zone": "a"}, Version: "1.2.0"}},
		{"w2", client.Registration{Address: "10.0.0.2", Port: 80, Tags: []string{"v2", "eu"}, Meta: map[string]string{"zone": "b"}, Version: "1.9.3", Checks: ttl("passing")}},
		{"w3", client.Registration{Address: "10.0.0.3", Port: 80, Tags: []string{"v2"}, Meta: map[string]string{"zone": "a"}, Version: "2.0.0", Checks: ttl("critical")}},
		{"w4", client.Registration{Address: "10.0.0.4", Port: 80, Tags: []string{"v2"}, Version: "1.5.0", Checks: ttl("warning")}},
	} {
		last = agenttest.Register(t, c.Client(f), "web", r.id, &r.reg)
	}
	c.WaitForIndex(last)

	tests := []struct {
		name string
		q    client.QueryOptions
		want []string
	}{
		{"no filter", client.QueryOptions{}, []string{"w1", "w2", "w3", "w4"}},
		{"healthy", client.QueryOptions{Healthy: true}, []string{"w1", "w2"}},
		{"one tag", client.QueryOptions{Tags: []string{"v2"}}, []string{"w2", "w3", "w4"}},
		{"two tags", client.QueryOptions{Tags: []string{"v2", "eu"}}, []string{"w2"}},
		{"meta", client.QueryOptions{Meta: map[string]string{"zone": "a"}}, []string{"w1", "w3"}},
		{"exact version", client.QueryOptions{Version: "1.9.3"}, []string{"w2"}},
		{"version range", client.QueryOptions{Version: ">=1.2.0 <2.0.0"}, []string{"w1", "w2", "w4"}},
		{"everything at once", client.QueryOptions{Healthy: true, Tags: []string{"eu"}, Meta: map[string]string{"zone": "b"}, Version: "~1.9"}, []string{"w2"}},
	}
	modes := []struct {
		name string
		set  func(*client.QueryOptions)
	}{
		{"default", func(*client.QueryOptions) {}},
		{"consistent", func(q *client.QueryOptions) { q.Consistent = true }},
		{"max_stale=1h (local)", func(q *client.QueryOptions) { q.MaxStale = time.Hour }},
		{"max_stale=1ns (too stale on a follower: fresh read)", func(q *client.QueryOptions) { q.MaxStale = time.Nanosecond }},
	}
	leader := c.Leader()
	for i := range c.Nodes() {
		role := "follower"
		if i == leader {
			role = "leader"
		}
		for _, m := range modes {
			for _, tc := range tests {
				t.Run(fmt.Sprintf("%s on the %s (node %d) with %s", tc.name, role, i, m.name), func(t *testing.T) {
					q := tc.q
					m.set(&q)
					insts, meta, err := c.Client(i).Instances(ctx, "web", &q)
					if err != nil {
						t.Fatal(err)
					}
					if got := ids(insts); !slices.Equal(got, tc.want) {
						t.Errorf("got %v, want %v", got, tc.want)
					}
					if meta.Index != last || !meta.KnownLeader || meta.LastContact < 0 {
						t.Errorf("meta %+v, want index %d, a known leader and a last contact", meta, last)
					}
					if role == "leader" && meta.LastContact != 0 {
						t.Errorf("the leader's last contact is %s, want 0", meta.LastContact)
					}
				})
			}
		}
	}

	// A write acknowledged on one node is seen at once by a fresh read on
	// any other: consistent, and max_stale when this node is too stale.
	var lastWrite uint64
	for n := range 10 {
		writer, reader := n%3, (n+1)%3
		id := fmt.Sprintf("fresh-%d", n)
		idx := agenttest.Register(t, c.Client(writer), "fresh", id, &client.Registration{Address: "10.0.1.1", Port: 80})
		lastWrite = idx
		q := &client.QueryOptions{Consistent: true}
		if n%2 == 1 {
			q = &client.QueryOptions{MaxStale: time.Nanosecond}
		}
		var insts []client.Instance
		var meta *client.QueryMeta
		var err error
		agenttest.Retry503(t, "a fresh read", func() error {
			insts, meta, err = c.Client(reader).Instances(ctx, "fresh", q)
			return err
		})
		if meta.Index < idx || !slices.Contains(ids(insts), id) {
			t.Fatalf("fresh read %+v on node %d after a write on node %d at %d: %v %v %+v", q, reader, writer, idx, err, ids(insts), meta)
		}
	}

	t.Run("a follower cut off from the quorum answers default and max_stale reads locally, and refuses fresh ones", func(t *testing.T) {
		// Every node has applied the writes it acknowledged: a node cut off
		// before it applied one refuses every read (503 not_caught_up, its
		// read-your-writes guarantee), which is not what this case is about.
		// The last write above went through a follower, and the leader
		// stopped at once could leave that follower without the commit.
		c.WaitForIndex(lastWrite)
		keep := c.Follower()
		for i := range c.Nodes() {
			if i != keep {
				c.Stop(i)
			}
		}
		cl := c.Client(keep)
		agenttest.Eventually(t, 30*time.Second, func() bool {
			_, meta, err := cl.Instances(ctx, "web", nil)
			return err == nil && meta.LastContact > 2*time.Second
		}, "the last contact to pass 2s")
		insts, meta, err := cl.Instances(ctx, "web", nil)
		if err != nil || len(insts) != 4 || meta.LastContact <= 2*time.Second {
			t.Fatalf("default read: %v %v %+v", err, ids(insts), meta)
		}
		if _, _, err := cl.Instances(ctx, "web", &client.QueryOptions{MaxStale: time.Hour}); err != nil {
			t.Errorf("max_stale=1h: %v", err)
		}
		for _, q := range []*client.QueryOptions{{MaxStale: time.Second}, {Consistent: true}} {
			_, _, err := cl.Instances(ctx, "web", q)
			var ce *client.Error
			if !errors.As(err, &ce) || ce.Status != http.StatusServiceUnavailable {
				t.Errorf("%+v: %v, want a 503", q, err)
			}
		}
	})
}

func TestDNSOnEveryNodeAndRefusedWhenStale(t *testing.T) {
	c := agenttest.New(t, 3, agenttest.WithConfig(func(cfg *agent.Config) {
		cfg.DNSAddr = "127.0.0.1:0"
		cfg.DNSTTL = 3 * time.Second
		cfg.DNSMaxStale = time.Second
	}))
	c.WaitForVoters(3)
	idx := agenttest.Register(t, c.Client(0), "web", "web-1", &client.Registration{Address: "10.0.0.1", Port: 8080, Tags: []string{"v1"}})
	agenttest.Register(t, c.Client(1), "web", "web-2", &client.Registration{Address: "10.0.0.2", Port: 8081, Checks: ttl("critical")})
	last := agenttest.Register(t, c.Client(2), "web", "web-3", &client.Registration{Address: "10.0.0.3", Port: 8082, Tags: []string{"v1"}, Weight: 7})
	c.WaitForIndex(max(idx, last))
	query := func(i int, name string, qtype uint16) *dns.Msg {
		t.Helper()
		m := new(dns.Msg)
		m.SetQuestion(name, qtype)
		r, _, err := (&dns.Client{Timeout: 5 * time.Second}).Exchange(m, c.Node(i).Agent.DNSAddr())
		if err != nil {
			t.Fatalf("node %d %s: %v", i, name, err)
		}
		return r
	}
	for i := range c.Nodes() {
		r := query(i, "web.service.beacon.", dns.TypeA)
		var got []string
		for _, rr := range r.Answer {
			got = append(got, rr.(*dns.A).A.String())
			if rr.Header().Ttl != 3 {
				t.Errorf("node %d: TTL %d, want 3", i, rr.Header().Ttl)
			}
		}
		sort.Strings(got)
		if !slices.Equal(got, []string{"10.0.0.1", "10.0.0.3"}) {
			t.Errorf("node %d A: %v", i, got)
		}
		r = query(i, "v1.web.service.beacon.", dns.TypeSRV)
		var srv []string
		for _, rr := range r.Answer {
			s := rr.(*dns.SRV)
			srv = append(srv, fmt.Sprintf("%d/%d", s.Port, s.Weight))
		}
		sort.Strings(srv)
		if !slices.Equal(srv, []string{"8080/1", "8082/7"}) {
			t.Errorf("node %d SRV: %v", i, srv)
		}
		if r := query(i, "nothing.service.beacon.", dns.TypeA); r.Rcode != dns.RcodeNameError {
			t.Errorf("node %d unknown: %s", i, dns.RcodeToString[r.Rcode])
		}
	}
	keep := c.Follower()
	for i := range c.Nodes() {
		if i != keep {
			c.Stop(i)
		}
	}
	agenttest.Eventually(t, 30*time.Second, func() bool {
		return query(keep, "web.service.beacon.", dns.TypeA).Rcode == dns.RcodeServerFailure
	}, "the cut-off follower to answer SERVFAIL")
	if lc := c.Node(keep).Agent.Node().LastContact(); lc <= time.Second {
		t.Errorf("SERVFAIL with a last contact of %s", lc)
	}
	if !strings.HasPrefix(c.Node(keep).Agent.DNSAddr(), "127.0.0.1:") {
		t.Errorf("DNS address %q", c.Node(keep).Agent.DNSAddr())
	}
}

func TestWatchSurvivesTheAgentItTalksToBeingStopped(t *testing.T) {
	c := agenttest.New(t, 3)
	c.WaitForVoters(3)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var addrs []string
	for _, n := range c.Nodes() {
		addrs = append(addrs, n.HTTPAddr())
	}
	cl, err := client.New(client.Config{Addresses: addrs})
	if err != nil {
		t.Fatal(err)
	}
	agenttest.Register(t, c.Client(0), "web", "web-1", &client.Registration{Address: "10.0.0.1", Port: 80})
	updates, err := cl.Watch(ctx, "web", &client.QueryOptions{Healthy: true})
	if err != nil {
		t.Fatal(err)
	}
	next := func() client.WatchUpdate {
		t.Helper()
		select {
		case u := <-updates:
			return u
		case <-time.After(60 * time.Second):
			t.Fatal("no update")
			return client.WatchUpdate{}
		}
	}
	u := next()
	if got := ids(u.Instances); !slices.Equal(got, []string{"web-1"}) {
		// The watch may start on a node that had not applied web-1 yet.
		if u = next(); !slices.Equal(ids(u.Instances), []string{"web-1"}) {
			t.Fatalf("first updates: %v", ids(u.Instances))
		}
	}
	for round, id := range []string{"web-2", "web-3"} {
		victim := -1
		for i, n := range c.Nodes() {
			if n.HTTPAddr() == u.Meta.Agent {
				victim = i
			}
		}
		if victim < 0 {
			t.Fatalf("update from unknown agent %s", u.Meta.Agent)
		}
		t.Logf("round %d: stopping node %d, which the watch talks to", round, victim)
		c.Stop(victim)
		writer := (victim + 1) % 3
		if !c.Node(writer).Running() {
			writer = (victim + 2) % 3
		}
		c.WaitForLeader()
		agenttest.Register(t, c.Client(writer), "web", id, &client.Registration{Address: "10.0.0.2", Port: 80})
		for {
			u = next()
			if slices.Contains(ids(u.Instances), id) {
				break
			}
		}
		if u.Meta.Agent == c.Node(victim).HTTPAddr() {
			t.Fatalf("update from the stopped agent")
		}
		if round == 0 {
			// Bring it back so the next round keeps a quorum.
			c.Restart(victim)
			c.WaitForLeader()
		}
	}
}

func TestPaginationWalksFiveThousandServicesWhileRegistrationsContinue(t *testing.T) {
	c := agenttest.New(t, 3)
	c.WaitForVoters(3)
	ctx := context.Background()
	const total, workers = 5000, 16
	var next atomic.Int64
	var wg sync.WaitGroup
	var maxIdx atomic.Uint64
	start := time.Now()
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl := c.Client(w % 3)
			for {
				n := next.Add(1) - 1
				if n >= total {
					return
				}
				name := fmt.Sprintf("svc-%05d", n)
				agenttest.Retry503(t, "register "+name, func() error {
					idx, err := cl.Register(ctx, name, name+"-1", &client.Registration{Address: "10.0.0.1", Port: 80, Tags: []string{fmt.Sprintf("t%d", n%7)}})
					for cur := maxIdx.Load(); idx > cur && !maxIdx.CompareAndSwap(cur, idx); cur = maxIdx.Load() {
					}
					return err
				})
			}
		}()
	}
	wg.Wait()
	t.Logf("registered %d services in %s", total, time.Since(start).Round(time.Millisecond))
	c.WaitForIndex(maxIdx.Load())

	// Registrations go on during the walk: new services (some sorting between
	// the existing ones) and updates of existing ones.
	stop := make(chan struct{})
	var churn sync.WaitGroup
	churn.Add(1)
	var added, writes atomic.Int64
	go func() {
		defer churn.Done()
		cl := c.Client(c.Leader())
		for n := 0; ; n++ {
			select {
			case <-stop:
				return
			default:
			}
			name := fmt.Sprintf("svc-%05d-new", (n*37)%total)
			reg := &client.Registration{Address: "10.0.0.2", Port: 81}
			if n%2 == 1 {
				// An update that keeps the instance's tag.
				num := (n * 53) % total
				name = fmt.Sprintf("svc-%05d", num)
				reg.Tags = []string{fmt.Sprintf("t%d", num%7)}
			} else {
				added.Add(1)
			}
			if _, err := cl.Register(ctx, name, name+"-1", reg); err == nil {
				writes.Add(1)
			}
		}
	}()

	f := c.Follower()
	for _, tc := range []struct {
		name  string
		q     client.QueryOptions
		match func(n int) bool
	}{
		{"every service", client.QueryOptions{Limit: 100}, func(int) bool { return true }},
		{"a tag filter", client.QueryOptions{Limit: 250, Tags: []string{"t3"}}, func(n int) bool { return n%7 == 3 }},
		{"a prefix", client.QueryOptions{Limit: 1000, Prefix: "svc-01"}, func(n int) bool { return n >= 1000 && n < 2000 }},
	} {
		t.Run(tc.name+" walks completely with no duplicates or gaps", func(t *testing.T) {
			q := tc.q
			var names []string
			pages := 0
			for {
				page, _, err := c.Client(f).Services(ctx, &q)
				if err != nil {
					t.Fatal(err)
				}
				pages++
				if len(page.Services) > q.Limit {
					t.Fatalf("page of %d, limit %d", len(page.Services), q.Limit)
				}
				for _, s := range page.Services {
					names = append(names, s.Name)
				}
				if page.NextCursor == "" {
					break
				}
				q.Cursor = page.NextCursor
				// Let at least one registration land between two pages.
				w := writes.Load()
				agenttest.Eventually(t, 30*time.Second, func() bool { return writes.Load() > w }, "a registration during the walk")
			}
			for i := 1; i < len(names); i++ {
				if names[i] <= names[i-1] {
					t.Fatalf("out of order or duplicate: %q then %q", names[i-1], names[i])
				}
			}
			seen := map[string]bool{}
			for _, n := range names {
				seen[n] = true
				var num int
				if _, err := fmt.Sscanf(n, "svc-%05d", &num); err != nil || num >= total {
					t.Errorf("unexpected service %q", n)
				}
			}
			want := 0
			for n := range total {
				if !tc.match(n) {
					continue
				}
				want++
				if name := fmt.Sprintf("svc-%05d", n); !seen[name] {
					t.Errorf("gap: %s missing", name)
				}
			}
			t.Logf("%d pages, %d services (%d expected from before the walk)", pages, len(names), want)
		})
	}
	close(stop)
	churn.Wait()
	t.Logf("%d registrations (%d new services) during the walks", writes.Load(), added.Load())
}

// percentiles returns p50, p99 and max of ds.
func percentiles(ds []time.Duration) (time.Duration, time.Duration, time.Duration) {
	s := slices.Clone(ds)
	slices.Sort(s)
	at := func(p float64) time.Duration { return s[min(len(s)-1, int(p*float64(len(s))))] }
	return at(0.50), at(0.99), s[len(s)-1]
}

func TestBlockingQueryOnAFollowerWakesForARegistrationOnAnotherNode(t *testing.T) {
	c := agenttest.New(t, 3)
	c.WaitForVoters(3)
	ctx := context.Background()
	f := c.Follower()
	srv := c.Node(f).Agent.API()
	idx := agenttest.Register(t, c.Client(0), "lat", "lat-0", &client.Registration{Address: "10.0.0.1", Port: 80})
	c.WaitForIndex(idx)
	const samples = 200
	var fromWrite, fromAck []time.Duration
	for n := 1; n <= samples; n++ {
		writer := (f + 1 + n%2) % 3 // the leader and the other follower in turn
		_, meta, err := c.Client(f).Instances(ctx, "lat", nil)
		if err != nil {
			t.Fatal(err)
		}
		before := srv.BlockingStats().Active
		type result struct {
			insts []client.Instance
			meta  *client.QueryMeta
			err   error
			at    time.Time
		}
		done := make(chan result, 1)
		go func() {
			insts, m, err := c.Client(f).Instances(ctx, "lat", &client.QueryOptions{WaitIndex: meta.Index, WaitTime: time.Minute})
			done <- result{insts, m, err, time.Now()}
		}()
		agenttest.Eventually(t, 10*time.Second, func() bool { return srv.BlockingStats().Active > before }, "the reader to block")
		id := fmt.Sprintf("lat-%d", n)
		writeStart := time.Now()
		var widx uint64
		agenttest.Retry503(t, "register", func() error {
			var err error
			widx, err = c.Client(writer).Register(ctx, "lat", id, &client.Registration{Address: "10.0.0.1", Port: 80 + n})
			return err
		})
		ack := time.Now()
		var r result
		select {
		case r = <-done:
		case <-time.After(30 * time.Second):
			t.Fatalf("sample %d: the blocked reader did not wake", n)
		}
		if r.err != nil || r.meta.Index < widx || !slices.Contains(ids(r.insts), id) {
			t.Fatalf("sample %d: woke with %v %+v %v, want index >= %d with %s", n, r.err, r.meta, ids(r.insts), widx, id)
		}
		fromWrite = append(fromWrite, r.at.Sub(writeStart))
		fromAck = append(fromAck, r.at.Sub(ack))
	}
	p50, p99, mx := percentiles(fromWrite)
	t.Logf("follower wake-up after a registration on another node, %d samples: from the write's start p50 %s p99 %s max %s", samples, p50, p99, mx)
	p50, p99, mx = percentiles(fromAck)
	t.Logf("  measured from the writer's acknowledgement (negative: the follower woke first): p50 %s p99 %s max %s", p50, p99, mx)
}

func TestBlockedReaderOfOneServiceSleepsThroughChangesToAnother(t *testing.T) {
	c := agenttest.New(t, 3)
	c.WaitForVoters(3)
	ctx := context.Background()
	f := c.Follower()
	srv := c.Node(f).Agent.API()
	idx := agenttest.Register(t, c.Client(f), "a", "a-1", &client.Registration{Address: "10.0.0.1", Port: 80})
	agenttest.Register(t, c.Client(f), "b", "b-1", &client.Registration{Address: "10.0.0.1", Port: 80})
	before := srv.BlockingStats()
	type result struct {
		meta *client.QueryMeta
		err  error
	}
	done := make(chan result, 1)
	go func() {
		_, meta, err := c.Client(f).Instances(ctx, "a", &client.QueryOptions{WaitIndex: idx, WaitTime: 3 * time.Second})
		done <- result{meta, err}
	}()
	agenttest.Eventually(t, 10*time.Second, func() bool { return srv.BlockingStats().Active > before.Active }, "the reader to block")
	var bIdx uint64
	for n := range 20 {
		bIdx = agenttest.Register(t, c.Client(n%3), "b", fmt.Sprintf("b-%d", n+2), &client.Registration{Address: "10.0.0.1", Port: 80})
	}
	r := <-done
	if r.err != nil || r.meta.Index != idx {
		t.Fatalf("reader of a: %v %+v, want the unchanged index %d (b is at %d)", r.err, r.meta, idx, bIdx)
	}
	if woken := srv.BlockingStats().Wakeups - before.Wakeups; woken != 0 {
		t.Errorf("the reader of a was woken %d times by changes to b", woken)
	}
}
