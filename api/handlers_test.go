package api

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/beaconhq/beacon/api/client"
	"github.com/beaconhq/beacon/fsm"
)

// getInstance reads one instance, failing the test unless it exists.
func (ts *testServer) getInstance(service, id string) client.Instance {
	ts.t.Helper()
	r := ts.do(http.MethodGet, "/v1/services/"+service+"/instances/"+id, nil)
	if r.status != http.StatusOK {
		ts.t.Fatalf("GET %s/%s: %s", service, id, r)
	}
	var inst client.Instance
	decodeStrict(ts.t, r.body, &inst)
	return inst
}

// discover runs a discovery query and returns the ids it answers, sorted.
func (ts *testServer) discover(service, query string) []string {
	ts.t.Helper()
	r := ts.do(http.MethodGet, "/v1/services/"+service+"/instances?"+query, nil)
	if r.status != http.StatusOK {
		ts.t.Fatalf("discover %s?%s: %s", service, query, r)
	}
	var insts []client.Instance
	decodeStrict(ts.t, r.body, &insts)
	if insts == nil {
		ts.t.Fatalf("discover %s?%s: %s is not a JSON array", service, query, r.body)
	}
	ids := []string{}
	for _, i := range insts {
		ids = append(ids, i.ID)
	}
	slices.Sort(ids)
	return ids
}

func TestRegisterAnswersWithTheIndexAndStoresEveryField(t *testing.T) {
	ts := newTestServer(t)
	reg := client.Registration{
		Address: "10.0.0.5", Port: 8080, Tags: []string{"v2", "canary"},
		Meta: map[string]string{"zone": "eu-1a", "team/owner": "core"}, Version: "1.4.2", Weight: 10, Node: "n2",
		Checks: []client.CheckDefinition{
			{HTTP: "http://10.0.0.5:8080/health", Interval: client.Duration(5 * time.Second), Timeout: client.Duration(time.Second),
				FailuresBeforeCritical: 2, SuccessesBeforePassing: 3, Header: map[string][]string{"X-Probe": {"beacon"}}},
			{Name: "heartbeat", TTL: client.Duration(15 * time.Second), DeregisterCriticalAfter: client.Duration(10 * time.Minute), InitialStatus: "passing"},
			{TCP: "10.0.0.5:8080"},
			{GRPC: "10.0.0.5:50051", GRPCService: "web.v1"},
		},
	}
	idx := ts.register("web", "web-1", reg)
	got := ts.getInstance("web", "web-1")
	if got.ID != "web-1" || got.Service != "web" || got.Address != reg.Address || got.Port != reg.Port ||
		!slices.Equal(got.Tags, reg.Tags) || !reflect.DeepEqual(got.Meta, reg.Meta) || got.Version != reg.Version ||
		got.Weight != reg.Weight || got.Node != reg.Node || got.CreateIndex != idx || got.ModifyIndex != idx {
		t.Fatalf("stored instance %+v does not match the registration %+v at index %d", got, reg, idx)
	}
	want := map[string]client.CheckDefinition{
		"http": {Name: "http", Type: "http", HTTP: reg.Checks[0].HTTP, Method: "GET", Header: reg.Checks[0].Header,
			Interval: reg.Checks[0].Interval, Timeout: reg.Checks[0].Timeout, FailuresBeforeCritical: 2, SuccessesBeforePassing: 3, InitialStatus: "critical"},
		"heartbeat": {Name: "heartbeat", Type: "ttl", TTL: reg.Checks[1].TTL, Interval: client.Duration(DefaultCheckInterval), Timeout: client.Duration(DefaultCheckTimeout),
			FailuresBeforeCritical: 1, SuccessesBeforePassing: 1, InitialStatus: "passing", DeregisterCriticalAfter: reg.Checks[1].DeregisterCriticalAfter},
		"tcp-2": {Name: "tcp-2", Type: "tcp", TCP: reg.Checks[2].TCP, Interval: client.Duration(DefaultCheckInterval), Timeout: client.Duration(DefaultCheckTimeout),
			FailuresBeforeCritical: 1, SuccessesBeforePassing: 1, InitialStatus: "critical"},
		"grpc-3": {Name: "grpc-3", Type: "grpc", GRPC: reg.Checks[3].GRPC, GRPCService: "web.v1", Interval: client.Duration(DefaultCheckInterval), Timeout: client.Duration(DefaultCheckTimeout),
			FailuresBeforeCritical: 1, SuccessesBeforePassing: 1, InitialStatus: "critical"},
	}
	if len(got.Checks) != len(want) {
		t.Fatalf("%d checks stored, want %d: %+v", len(got.Checks), len(want), got.Checks)
	}
	for _, c := range got.Checks {
		w, ok := want[c.Name]
		if !ok {
			t.Errorf("unexpected check %q", c.Name)
			continue
		}
		if !reflect.DeepEqual(c.CheckDefinition, w) {
			t.Errorf("check %q:\n got  %+v\n want %+v", c.Name, c.CheckDefinition, w)
		}
		if c.ID != "web:web-1:"+c.Name || c.Instance != "web-1" || c.Service != "web" {
			t.Errorf("check %q: id %q instance %q service %q", c.Name, c.ID, c.Instance, c.Service)
		}
	}

	t.Run("registering again updates the instance and bumps its modify index", func(t *testing.T) {
		ts := *ts
		ts.t = t
		reg2 := client.Registration{Address: "10.0.0.6", Port: 8081}
		idx2 := ts.register("web", "web-1", reg2)
		got := ts.getInstance("web", "web-1")
		if idx2 <= idx || got.CreateIndex != idx || got.ModifyIndex != idx2 || got.Address != "10.0.0.6" || got.Port != 8081 || len(got.Checks) != 0 || got.Tags != nil {
			t.Fatalf("after re-registering at %d: %+v", idx2, got)
		}
	})
	t.Run("a weight of 0 means the default weight 1", func(t *testing.T) {
		ts := *ts
		ts.t = t
		ts.register("web", "web-2", client.Registration{Address: "10.0.0.7", Port: 80, Weight: 0})
		if w := ts.getInstance("web", "web-2").Weight; w != 1 {
			t.Fatalf("weight %d, want 1", w)
		}
	})
	t.Run("the limits themselves are accepted", func(t *testing.T) {
		ts := *ts
		ts.t = t
		tags := repeat(MaxTags, func(i int) string { return fmt.Sprintf("%0*d", MaxTagLen, i) })
		meta := map[string]string{}
		for i := range MaxMetaKeys {
			meta[fmt.Sprintf("%0*d", MaxMetaKeyLen, i)] = strings.Repeat("v", MaxMetaValueLen)
		}
		checks := repeat(MaxChecks, func(i int) client.CheckDefinition {
			return client.CheckDefinition{Name: fmt.Sprintf("c%0*d", MaxCheckNameLen-1, i), TTL: client.Duration(MinCheckInterval)}
		})
		svc, id := strings.Repeat("s", MaxServiceLen), strings.Repeat("i", MaxIDLen)
		reg := client.Registration{Address: strings.Repeat("a", 63) + "." + strings.Repeat("b", 63) + "." + strings.Repeat("c", 63) + "." + strings.Repeat("d", 63),
			Port: 65535, Tags: tags, Meta: meta, Version: strings.Repeat("1", MaxVersionLen), Weight: MaxWeight, Checks: checks}
		body := mustJSON(t, reg)
		if int64(len(body)) > DefaultConfig().MaxBodyBytes {
			t.Fatalf("test body of %d bytes is over the body limit", len(body))
		}
		ts.register(svc, id, reg)
		got := ts.getInstance(svc, id)
		if len(got.Tags) != MaxTags || len(got.Meta) != MaxMetaKeys || len(got.Checks) != MaxChecks || got.Port != 65535 || got.Weight != MaxWeight {
			t.Fatalf("stored %d tags, %d meta keys, %d checks, port %d, weight %d", len(got.Tags), len(got.Meta), len(got.Checks), got.Port, got.Weight)
		}
	})
}

func TestBodyLimitIsExactly64KiB(t *testing.T) {
	ts := newTestServer(t)
	limit := int(DefaultConfig().MaxBodyBytes)
	if limit != 64<<10 {
		t.Fatalf("the default body limit is %d, documented as 64 KiB", limit)
	}
	pad := func(n int) []byte {
		b := []byte(`{"address":"10.0.0.1","port":80}`)
		return append(b, strings.Repeat(" ", n-len(b))...)
	}
	if r := ts.do(http.MethodPut, instancePath, pad(limit)); r.status != http.StatusOK {
		t.Fatalf("a body of exactly %d bytes: %s", limit, r)
	}
	before := snapshotCatalog(ts.cl.Store())
	r := ts.do(http.MethodPut, instancePath, pad(limit+1))
	assertError(t, r, http.StatusRequestEntityTooLarge, "too_large", "")
	ts.assertUnchanged(before)
}

func TestDeregister(t *testing.T) {
	ts := newTestServer(t)
	populate(ts)
	r := ts.do(http.MethodDelete, "/v1/services/web/instances/web-1", nil)
	if r.status != http.StatusOK {
		t.Fatalf("deregister: %s", r)
	}
	var res client.WriteResult
	decodeStrict(t, r.body, &res)
	if res.Index == 0 || r.header.Get(HeaderIndex) != fmt.Sprint(res.Index) {
		t.Fatalf("deregister answered index %d, header %q", res.Index, r.header.Get(HeaderIndex))
	}
	assertError(t, ts.do(http.MethodGet, "/v1/services/web/instances/web-1", nil), http.StatusNotFound, "not_found", "")
	if _, checks := ts.cl.Store().Checks(nil, "web"); len(checks) != 0 {
		t.Fatalf("the instance's checks remain: %v", checks)
	}
	if r := ts.do(http.MethodDelete, "/v1/services/web/instances/web-1", nil); r.status != http.StatusOK {
		t.Fatalf("deregistering again must succeed (idempotent): %s", r)
	}
}

// A deregister may carry the body "{}" (the Go client and the CLI send it,
// with "Expect: 100-continue", to fail over safely past a hung agent). The
// agent reads the body before applying anything: it answers 100 Continue
// while the instance is still registered, and removes it only once the body
// came. A request without a body (older clients) works as before; any other
// body is refused.
func TestDeregisterReadsItsBodyBeforeApplying(t *testing.T) {
	ts := newTestServer(t)
	populate(ts)
	registered := func(id string) bool {
		_, inst, _ := ts.cl.Store().Instance(nil, "web", id)
		return inst != nil
	}

	conn, err := net.Dial("tcp", strings.TrimPrefix(ts.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	_, err = io.WriteString(conn, "DELETE /v1/services/web/instances/web-1 HTTP/1.1\r\nHost: "+conn.RemoteAddr().String()+"\r\n"+
		"Content-Type: application/json\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n")
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	line, err := br.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "HTTP/1.1 100 ") {
		t.Fatalf("first answer line %q (%v), want 100 Continue", line, err)
	}
	if line, err := br.ReadString('\n'); err != nil || line != "\r\n" {
		t.Fatalf("after 100 Continue: %q (%v)", line, err)
	}
	// The handler now waits for the body: nothing was applied.
	if !registered("web-1") {
		t.Fatal("the instance was removed before the body was sent")
	}
	if _, err := io.WriteString(conn, "{}"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("deregister with {}: %d %s", resp.StatusCode, b)
	}
	if registered("web-1") {
		t.Fatal("web-1 is still registered")
	}

	// No body, as older clients send it.
	if r := ts.do(http.MethodDelete, "/v1/services/web/instances/web-2", nil); r.status != http.StatusOK || registered("web-2") {
		t.Fatalf("deregister without a body: %s", r)
	}
	// Anything but an empty object is refused, and nothing is applied.
	ts.register("web", "web-3", client.Registration{Address: "10.0.0.3", Port: 8080})
	for _, body := range []string{`{"force":true}`, `[]`, `{`} {
		r := ts.do(http.MethodDelete, "/v1/services/web/instances/web-3", []byte(body))
		if r.status != http.StatusBadRequest || !registered("web-3") {
			t.Fatalf("deregister with body %s: %s (registered: %v), want 400 and nothing applied", body, r, registered("web-3"))
		}
	}
}

func TestDiscoveryFilters(t *testing.T) {
	ts := newTestServer(t)
	for _, r := range []struct {
		id  string
		reg client.Registration
	}{
		{"a-1", client.Registration{Address: "10.0.0.1", Port: 80, Tags: []string{"v1", "canary"}, Meta: map[string]string{"zone": "eu"}, Version: "1.2.0"}},
		{"a-2", client.Registration{Address: "10.0.0.2", Port: 80, Tags: []string{"v1"}, Meta: map[string]string{"zone": "us"}, Version: "1.4.2",
			Checks: []client.CheckDefinition{{TTL: client.Duration(10 * time.Second)}}}}, // critical until it reports
		{"a-3", client.Registration{Address: "10.0.0.3", Port: 80, Tags: []string{"v2", "canary"}, Meta: map[string]string{"zone": "eu", "tier": "gold"}, Version: "2.0.0"}},
		{"a-4", client.Registration{Address: "10.0.0.4", Port: 80, Version: "1.4.9-rc.1"}},
		{"a-5", client.Registration{Address: "10.0.0.5", Port: 80, Version: "nightly"}},
	} {
		ts.register("app", r.id, r.reg)
	}
	ts.register("other", "o-1", client.Registration{Address: "10.0.1.1", Port: 80, Tags: []string{"v1"}, Version: "1.2.0"})

	for _, tc := range []struct {
		name, query string
		want        []string
	}{
		{"no filter lists every instance of the service", "", []string{"a-1", "a-2", "a-3", "a-4", "a-5"}},
		{"healthy=true leaves out the critical instance", "healthy=true", []string{"a-1", "a-3", "a-4", "a-5"}},
		{"healthy=false is no filter", "healthy=false", []string{"a-1", "a-2", "a-3", "a-4", "a-5"}},
		{"one tag", "tag=v1", []string{"a-1", "a-2"}},
		{"two tags must both match", "tag=v1&tag=canary", []string{"a-1"}},
		{"a tag nobody has matches nothing", "tag=v3", []string{}},
		{"one meta pair", "meta=zone:eu", []string{"a-1", "a-3"}},
		{"two meta pairs must both match", "meta=zone:eu&meta=tier:gold", []string{"a-3"}},
		{"a meta value may contain a colon", "meta=zone:eu:west", []string{}},
		{"an exact version", "version=1.2.0", []string{"a-1"}},
		{"an exact version that is not semver", "version=nightly", []string{"a-5"}},
		{"a range", "version=" + url.QueryEscape(">=1.2.0 <2.0.0"), []string{"a-1", "a-2"}},
		{"a tilde range", "version=" + url.QueryEscape("~1.4"), []string{"a-2"}},
		{"a wildcard range", "version=1.x", []string{"a-1", "a-2"}},
		{"a caret range", "version=" + url.QueryEscape("^2"), []string{"a-3"}},
		{"filters combine", "tag=canary&meta=zone:eu&version=" + url.QueryEscape("<2.0.0") + "&healthy=true", []string{"a-1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := *ts
			ts.t = t
			if got := ts.discover("app", tc.query); !slices.Equal(got, tc.want) {
				t.Fatalf("?%s: %v, want %v", tc.query, got, tc.want)
			}
		})
	}
	t.Run("a service nobody registered is an empty list", func(t *testing.T) {
		ts := *ts
		ts.t = t
		if got := ts.discover("nobody", ""); len(got) != 0 {
			t.Fatalf("got %v", got)
		}
	})
}

func TestInstanceReadHasChecksAndTransitions(t *testing.T) {
	ts := newTestServer(t)
	ts.register("web", "web-1", client.Registration{Address: "10.0.0.1", Port: 80,
		Checks: []client.CheckDefinition{{Name: "heartbeat", TTL: client.Duration(10 * time.Second)}}})
	got := ts.getInstance("web", "web-1")
	if got.Status != "critical" || got.Healthy || len(got.Checks) != 1 || got.Checks[0].Status != "critical" {
		t.Fatalf("a new TTL check starts critical: %+v", got)
	}
	at := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	idx := ts.applyCmd(fsm.CheckUpdateType, &fsm.CheckUpdateRequest{Time: at.UnixNano(),
		Updates: []fsm.CheckUpdate{{Check: "web:web-1:heartbeat", Status: fsm.Passing, Output: "all good"}}})
	got = ts.getInstance("web", "web-1")
	if got.Status != "passing" || !got.Healthy || got.HealthySince == nil || !got.HealthySince.Equal(at) || got.ModifyIndex != idx {
		t.Fatalf("after the TTL passed at index %d: %+v", idx, got)
	}
	c := got.Checks[0]
	if c.ID != "web:web-1:heartbeat" || c.Status != "passing" || c.Output != "all good" || !c.StatusSince.Equal(at) || c.ModifyIndex != idx {
		t.Fatalf("check: %+v", c)
	}
	want := []client.Transition{{Time: at, Check: "web:web-1:heartbeat", From: "critical", To: "passing", Output: "all good"}}
	if !reflect.DeepEqual(got.Transitions, want) {
		t.Fatalf("transitions %+v, want %+v", got.Transitions, want)
	}
	// Lists leave checks and transitions out.
	r := ts.do(http.MethodGet, "/v1/services/web/instances", nil)
	var list []client.Instance
	decodeStrict(t, r.body, &list)
	if len(list) != 1 || list[0].Checks != nil || list[0].Transitions != nil || list[0].Status != "passing" {
		t.Fatalf("discovery: %+v", list)
	}
}

// services reads GET /v1/services?query.
func (ts *testServer) services(query string) client.ServiceList {
	ts.t.Helper()
	r := ts.do(http.MethodGet, "/v1/services?"+query, nil)
	if r.status != http.StatusOK {
		ts.t.Fatalf("services?%s: %s", query, r)
	}
	var l client.ServiceList
	decodeStrict(ts.t, r.body, &l)
	return l
}

func names(l client.ServiceList) []string {
	out := []string{}
	for _, s := range l.Services {
		out = append(out, s.Name)
	}
	return out
}

func TestServicesList(t *testing.T) {
	ts := newTestServer(t)
	svcs := []string{"alpha", "beta", "beta-2", "delta", "gamma"}
	for i, s := range svcs {
		reg := client.Registration{Address: "10.0.0.1", Port: 80 + i, Tags: []string{s}, Meta: map[string]string{"n": strconv.Itoa(i % 2)}}
		ts.register(s, s+"-1", reg)
	}
	ts.register("beta", "beta-x", client.Registration{Address: "10.0.0.2", Port: 80, Tags: []string{"extra"},
		Checks: []client.CheckDefinition{{TTL: client.Duration(10 * time.Second)}}})

	all := ts.services("")
	if !slices.Equal(names(all), svcs) || all.NextCursor != "" {
		t.Fatalf("all services: %v (next %q)", names(all), all.NextCursor)
	}
	beta := all.Services[1]
	if beta.Instances != 2 || beta.Passing != 1 || beta.Critical != 1 || !slices.Equal(beta.Tags, []string{"beta", "extra"}) || beta.ModifyIndex == 0 {
		t.Fatalf("beta: %+v", beta)
	}
	for _, tc := range []struct {
		name, query string
		want        []string
	}{
		{"prefix", "prefix=be", []string{"beta", "beta-2"}},
		{"a prefix nothing has", "prefix=zz", []string{}},
		{"tag", "tag=extra", []string{"beta"}},
		{"meta", "meta=n:1", []string{"beta", "delta"}},
		{"healthy", "healthy=true&tag=extra", []string{}},
		{"prefix and meta", "prefix=b&meta=n:0", []string{"beta-2"}},
	} {
		t.Run("filter by "+tc.name, func(t *testing.T) {
			ts := *ts
			ts.t = t
			if got := names(ts.services(tc.query)); !slices.Equal(got, tc.want) {
				t.Fatalf("?%s: %v, want %v", tc.query, got, tc.want)
			}
		})
	}
	t.Run("pages of two walk every service once", func(t *testing.T) {
		ts := *ts
		ts.t = t
		var walked []string
		cursor := ""
		for pages := 0; ; pages++ {
			if pages > len(svcs) {
				t.Fatalf("more pages than services; walked %v", walked)
			}
			l := ts.services("limit=2&cursor=" + url.QueryEscape(cursor))
			if len(l.Services) > 2 {
				t.Fatalf("page of %d", len(l.Services))
			}
			walked = append(walked, names(l)...)
			if l.NextCursor == "" {
				break
			}
			cursor = l.NextCursor
		}
		if !slices.Equal(walked, svcs) {
			t.Fatalf("walked %v, want %v", walked, svcs)
		}
	})
	t.Run("a page that ends the list has no cursor", func(t *testing.T) {
		ts := *ts
		ts.t = t
		if l := ts.services("limit=5"); len(l.Services) != 5 || l.NextCursor != "" {
			t.Fatalf("limit=5: %v next %q", names(l), l.NextCursor)
		}
		if l := ts.services("limit=1000&prefix=beta"); !slices.Equal(names(l), []string{"beta", "beta-2"}) || l.NextCursor != "" {
			t.Fatalf("limit=1000: %v next %q", names(l), l.NextCursor)
		}
	})
}

// readRoutes are every read route, over the catalog populate builds.
var readRoutes = []string{
	"/v1/services",
	"/v1/services/web/instances",
	"/v1/services/web/instances/web-1",
	"/v1/services/nobody/instances",
	"/v1/cluster/status",
	"/v1/cluster/members",
	"/v1/cluster/servers",
}

func TestReadHeaders(t *testing.T) {
	for _, populated := range []bool{false, true} {
		ts := newTestServer(t)
		if populated {
			populate(ts)
		}
		for _, route := range readRoutes {
			if !populated && strings.Contains(route, "web-1") {
				continue
			}
			t.Run(fmt.Sprintf("%s on a catalog populated=%v carries the read headers", route, populated), func(t *testing.T) {
				ts := *ts
				ts.t = t
				ts.cl.SetLeader(true, 0)
				r := ts.do(http.MethodGet, route, nil)
				if r.status != http.StatusOK {
					t.Fatalf("%s", r)
				}
				idx, err := strconv.ParseUint(r.header.Get(HeaderIndex), 10, 64)
				if err != nil || idx == 0 {
					t.Fatalf("%s: %q, want a positive index", HeaderIndex, r.header.Get(HeaderIndex))
				}
				if idx > ts.cl.FSM().AppliedIndex() && idx != 1 {
					t.Fatalf("%s: %d, beyond the applied index %d", HeaderIndex, idx, ts.cl.FSM().AppliedIndex())
				}
				if h := r.header.Get(HeaderKnownLeader); h != "true" {
					t.Fatalf("%s: %q", HeaderKnownLeader, h)
				}
				if h := r.header.Get(HeaderLastContact); h != "0" {
					t.Fatalf("%s: %q", HeaderLastContact, h)
				}
				ts.cl.SetLeader(false, 2500*time.Millisecond)
				r = ts.do(http.MethodGet, route, nil)
				if r.header.Get(HeaderKnownLeader) != "false" || r.header.Get(HeaderLastContact) != "2500" {
					t.Fatalf("a follower without leader: %s %q, %s %q", HeaderKnownLeader, r.header.Get(HeaderKnownLeader), HeaderLastContact, r.header.Get(HeaderLastContact))
				}
			})
		}
	}
}

func TestConsistencyModes(t *testing.T) {
	ts := newTestServer(t)
	populate(ts)
	for _, tc := range []struct {
		name        string
		query       string
		lastContact time.Duration
		fresh       bool // a consistent read is expected
	}{
		{"a default read is local", "", time.Hour, false},
		{"consistent asks the leader", "consistent", 0, true},
		{"consistent=true asks the leader", "consistent=true", 0, true},
		{"consistent=false is a local read", "consistent=false", time.Hour, false},
		{"max_stale within the contact age is local", "max_stale=5s", time.Second, false},
		{"max_stale beyond the contact age asks the leader", "max_stale=5s", 10 * time.Second, true},
	} {
		for _, route := range []string{"/v1/services", "/v1/services/web/instances", "/v1/services/web/instances/web-1"} {
			t.Run(tc.name+" on "+route, func(t *testing.T) {
				ts := *ts
				ts.t = t
				ts.cl.SetLeader(true, tc.lastContact)
				before := ts.cl.ConsistentReads()
				if r := ts.do(http.MethodGet, route+"?"+tc.query, nil); r.status != http.StatusOK {
					t.Fatalf("%s", r)
				}
				if got := ts.cl.ConsistentReads() - before; got != map[bool]int{false: 0, true: 1}[tc.fresh] {
					t.Fatalf("%d consistent reads, want fresh=%v", got, tc.fresh)
				}
			})
		}
	}
}

func TestClusterRoutes(t *testing.T) {
	ts := newTestServer(t)
	populate(ts)

	var st client.ClusterStatus
	r := ts.do(http.MethodGet, "/v1/cluster/status", nil)
	decodeStrict(t, r.body, &st)
	if r.status != http.StatusOK || st.Node == "" || st.AppliedIndex != ts.cl.FSM().AppliedIndex() || len(st.Peers) != 1 {
		t.Fatalf("status: %s", r)
	}
	var members []client.Member
	r = ts.do(http.MethodGet, "/v1/cluster/members", nil)
	decodeStrict(t, r.body, &members)
	if r.status != http.StatusOK || len(members) != 1 || members[0].Status != "alive" {
		t.Fatalf("members: %s", r)
	}
	var servers client.ClusterServers
	r = ts.do(http.MethodGet, "/v1/cluster/servers", nil)
	decodeStrict(t, r.body, &servers)
	if r.status != http.StatusOK || len(servers.Servers) != 1 || servers.Servers[0].View == nil ||
		servers.Servers[0].View.AppliedIndex != ts.cl.FSM().AppliedIndex() || servers.Servers[0].Error != "" {
		t.Fatalf("servers: %s", r)
	}

	r = ts.do(http.MethodPost, "/v1/cluster/join", []byte(`{"addresses":["10.0.0.1:8752","[::1]:8752","node-3.internal:8752"]}`))
	var jr client.JoinResult
	decodeStrict(t, r.body, &jr)
	if r.status != http.StatusOK || jr.Joined != 3 || !reflect.DeepEqual(ts.cl.Joined(), [][]string{{"10.0.0.1:8752", "[::1]:8752", "node-3.internal:8752"}}) {
		t.Fatalf("join: %s; the cluster was asked %v", r, ts.cl.Joined())
	}
	ts.cl.SetJoinError(errors.New("memberlist: no peer answered"))
	assertError(t, ts.do(http.MethodPost, "/v1/cluster/join", []byte(`{"addresses":["10.0.0.9:8752"]}`)), http.StatusBadGateway, "join_failed", "")
	ts.cl.SetJoinError(nil)

	if r := ts.do(http.MethodDelete, "/v1/cluster/peers/n3", nil); r.status != http.StatusOK || !slices.Equal(ts.cl.Removed(), []string{"n3"}) {
		t.Fatalf("remove peer: %s; removed %v", r, ts.cl.Removed())
	}
	// An ID that breaks the rule of node names (a server named by an older
	// release) is taken as it is, and a server is removed by its address.
	if r := ts.do(http.MethodDelete, "/v1/cluster/peers/my%20node", nil); r.status != http.StatusOK || !slices.Equal(ts.cl.Removed(), []string{"n3", "my node"}) {
		t.Fatalf("remove peer 'my node': %s; removed %v", r, ts.cl.Removed())
	}
	r = ts.do(http.MethodDelete, "/v1/cluster/peers?address=10.0.0.9:8751", nil)
	var rr client.RemovePeerResult
	decodeStrict(t, r.body, &rr)
	if r.status != http.StatusOK || rr != (client.RemovePeerResult{Removed: true, ID: "10.0.0.9:8751", Address: "10.0.0.9:8751"}) ||
		!slices.Equal(ts.cl.Removed(), []string{"n3", "my node", "address=10.0.0.9:8751"}) {
		t.Fatalf("remove peer by address: %s; removed %v", r, ts.cl.Removed())
	}
	if r := ts.do(http.MethodPost, "/v1/cluster/leave", nil); r.status != http.StatusOK || ts.cl.Left() != 1 {
		t.Fatalf("leave: %s; left %d times", r, ts.cl.Left())
	}
	if r := ts.do(http.MethodGet, "/healthz", nil); r.status != http.StatusOK {
		t.Fatalf("healthz: %s", r)
	}
	if r := ts.do(http.MethodGet, "/readyz", nil); r.status != http.StatusOK {
		t.Fatalf("readyz with a leader: %s", r)
	}
	msg := "replication stalled: applied index 7, the leader committed 9 at least 6s ago"
	ts.cl.SetStalled(msg)
	assertError(t, ts.do(http.MethodGet, "/readyz", nil), http.StatusServiceUnavailable, "replication_stalled", "")
	ts.cl.SetStalled("")
	ts.cl.SetLeader(true, time.Minute)
	assertError(t, ts.do(http.MethodGet, "/readyz", nil), http.StatusServiceUnavailable, "stale", "")
	ts.cl.SetLeader(false, time.Duration(1<<63-1))
	r = ts.do(http.MethodGet, "/readyz", nil)
	assertError(t, r, http.StatusServiceUnavailable, "no_leader", "")
	if r.header.Get("Retry-After") == "" {
		t.Fatalf("a 503 without Retry-After")
	}
	if r := ts.do(http.MethodGet, "/v1/services", nil); r.header.Get(HeaderLastContact) != "-1" {
		t.Fatalf("never heard from a leader: %s %q, want -1", HeaderLastContact, r.header.Get(HeaderLastContact))
	}
}

func TestHeadOnReadRoutes(t *testing.T) {
	ts := newTestServer(t)
	populate(ts)
	for _, route := range readRoutes {
		if r := ts.do(http.MethodHead, route, nil); r.status != http.StatusOK || r.header.Get(HeaderIndex) == "" || len(r.body) != 0 {
			t.Errorf("HEAD %s: %s, %s %q", route, r, HeaderIndex, r.header.Get(HeaderIndex))
		}
	}
}

// Instance IDs are unique per service, as the paths scope them: web/web-1
// and api/web-1 are two instances, each with its own checks, read,
// discovered and deregistered apart.
func TestSameIDInTwoServices(t *testing.T) {
	ts := newTestServer(t)
	ttl := []client.CheckDefinition{{Name: "heartbeat", TTL: client.Duration(10 * time.Second), InitialStatus: "passing"}}
	ts.register("web", "web-1", client.Registration{Address: "10.0.0.1", Port: 80, Meta: map[string]string{"zone": "a"}, Checks: ttl})
	apiIdx := ts.register("api", "web-1", client.Registration{Address: "10.0.0.2", Port: 90, Meta: map[string]string{"zone": "b"}, Checks: ttl})

	web, api := ts.getInstance("web", "web-1"), ts.getInstance("api", "web-1")
	if web.Address != "10.0.0.1" || web.Meta["zone"] != "a" || api.Address != "10.0.0.2" || api.Meta["zone"] != "b" || api.CreateIndex != apiIdx {
		t.Fatalf("web/web-1 = %+v\napi/web-1 = %+v\nwant each its own registration", web, api)
	}
	if len(web.Checks) != 1 || web.Checks[0].ID != "web:web-1:heartbeat" || len(api.Checks) != 1 || api.Checks[0].ID != "api:web-1:heartbeat" {
		t.Fatalf("checks %+v and %+v, want web:web-1:heartbeat and api:web-1:heartbeat", web.Checks, api.Checks)
	}
	for _, svc := range []string{"web", "api"} {
		if ids := ts.discover(svc, "meta=zone:a"); svc == "web" && !reflect.DeepEqual(ids, []string{"web-1"}) || svc == "api" && len(ids) != 0 {
			t.Errorf("discover %s?meta=zone:a = %v", svc, ids)
		}
	}

	if r := ts.do(http.MethodDelete, "/v1/services/api/instances/web-1", nil); r.status != http.StatusOK {
		t.Fatalf("deregister api/web-1: %s", r)
	}
	if r := ts.do(http.MethodGet, "/v1/services/api/instances/web-1", nil); r.status != http.StatusNotFound {
		t.Fatalf("api/web-1 after its deregistration: %s, want 404", r)
	}
	if got := ts.getInstance("web", "web-1"); got.ModifyIndex != web.ModifyIndex || len(got.Checks) != 1 {
		t.Fatalf("web/web-1 changed by api/web-1's deregistration: %+v", got)
	}
	// Deregistering what is not there is harmless, as always.
	if r := ts.do(http.MethodDelete, "/v1/services/api/instances/web-1", nil); r.status != http.StatusOK {
		t.Fatalf("deregister api/web-1 again: %s", r)
	}
}

// TestADivergedServerRefusesCatalogReadsOnly: a server that applied entries
// the cluster never committed (cluster.Node.Diverged) answers catalog reads
// 503 diverged, and still its cluster status, members and servers (an
// operator looks at it), its liveness, and writes (forwarded to the leader).
func TestADivergedServerRefusesCatalogReadsOnly(t *testing.T) {
	ts := newTestServer(t)
	populate(ts)
	ts.cl.SetDiverged(true)
	for _, route := range []string{"/v1/services", "/v1/services/web/instances", "/v1/services/web/instances/web-1", "/v1/checks", "/v1/snapshot", "/v1/ui/summary"} {
		assertError(t, ts.do(http.MethodGet, route, nil), http.StatusServiceUnavailable, "diverged", "")
		if r := ts.do(http.MethodHead, route, nil); r.status != http.StatusServiceUnavailable {
			t.Errorf("HEAD %s on a diverged server: %s", route, r)
		}
	}
	for _, route := range []string{"/v1/cluster/status", "/v1/cluster/members", "/v1/cluster/servers", "/healthz"} {
		if r := ts.do(http.MethodGet, route, nil); r.status != http.StatusOK {
			t.Errorf("GET %s on a diverged server: %s", route, r)
		}
	}
	if r := ts.do(http.MethodPut, "/v1/services/web/instances/web-9", []byte(`{"address":"127.0.0.1","port":80}`)); r.status != http.StatusOK {
		t.Errorf("a registration through a diverged server: %s", r)
	}
	ts.cl.SetDiverged(false)
	if r := ts.do(http.MethodGet, "/v1/services/web/instances", nil); r.status != http.StatusOK {
		t.Errorf("once no longer diverged: %s", r)
	}
}
