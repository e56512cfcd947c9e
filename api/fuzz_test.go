package api

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/beaconhq/beacon/api/apitest"
	"github.com/beaconhq/beacon/api/client"
	"github.com/beaconhq/beacon/fsm"
)

// The fuzz tests call the handler directly, without a network, so that a
// panic in a handler fails the test instead of being recovered by net/http.

// fuzzServer returns an API over a fresh fake cluster whose catalog holds
// web-1 (with two checks) and api-1. Blocking queries wait at most 1ms.
func fuzzServer(t testing.TB) (http.Handler, *apitest.Cluster) {
	t.Helper()
	cl := apitest.NewCluster(nil)
	cfg := DefaultConfig()
	cfg.DefaultWait, cfg.MaxWait = time.Millisecond, time.Millisecond
	// serve sends Host "beacon": with auth off the site guard admits only
	// the agent's own names, and would answer every request 403.
	cfg.Site.AllowedHosts = []string{"beacon"}
	for _, req := range []*fsm.RegisterRequest{
		{ID: "web-1", Service: "web", Address: "10.0.0.1", Port: 8080, Tags: []string{"v1"}, Meta: map[string]string{"zone": "eu"}, Version: "1.2.0", Weight: 1,
			Checks: []fsm.CheckDefinition{
				{Name: "heartbeat", Type: fsm.CheckTTL, TTL: 30e9, Interval: 10e9, Timeout: 5e9, FailuresBeforeCritical: 1, SuccessesBeforePassing: 1, InitialStatus: fsm.Critical},
				{Name: "http", Type: fsm.CheckHTTP, Target: "http://10.0.0.1:8080/", Method: "GET", Interval: 10e9, Timeout: 5e9, FailuresBeforeCritical: 1, SuccessesBeforePassing: 1, InitialStatus: fsm.Passing},
			}},
		{ID: "api-1", Service: "api", Address: "10.0.0.2", Port: 9000, Weight: 1},
	} {
		cmd, err := fsm.Encode(fsm.RegisterType, req)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cl.Apply(t.Context(), cmd); err != nil {
			t.Fatal(err)
		}
	}
	return New(cfg, cl.Store(), cl).Handler(), cl
}

// serve sends one request to h and records the answer.
func serve(h http.Handler, method string, u *url.URL, body []byte) response {
	req := &http.Request{
		Method: method, URL: u, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: http.Header{"Content-Type": {"application/json"}}, Host: "beacon",
		Body: io.NopCloser(bytes.NewReader(body)), ContentLength: int64(len(body)),
		RemoteAddr: "127.0.0.1:40000", RequestURI: u.RequestURI(),
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return response{status: rec.Code, header: rec.Header(), body: rec.Body.Bytes()}
}

// instanceURL is the URL of instance id of service, each escaped as a path
// segment (so a "/" in either stays inside its segment).
func instanceURL(service, id string) *url.URL {
	return &url.URL{
		Path:    "/v1/services/" + service + "/instances/" + id,
		RawPath: "/v1/services/" + url.PathEscape(service) + "/instances/" + url.PathEscape(id),
	}
}

// checkAnswer fails the test on a 5xx, and on a 4xx that is not a JSON
// error body.
func checkAnswer(t *testing.T, r response) {
	t.Helper()
	if r.status >= 500 || r.status < 200 {
		t.Fatalf("answered %s", r)
	}
	if r.status >= 400 {
		var eb client.ErrorBody
		dec := json.NewDecoder(bytes.NewReader(r.body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&eb); err != nil || eb.Code == "" || eb.Error == "" || r.header.Get("Content-Type") != "application/json" {
			t.Fatalf("error answer is not a JSON error body (%v): %s", err, r)
		}
	}
}

// splitInstancePath returns the service and id of a target of the form
// /v1/services/{service}/instances/{id}, unescaped.
func splitInstancePath(target string) (service, id string, ok bool) {
	rest, ok := strings.CutPrefix(target, "/v1/services/")
	if !ok {
		return "", "", false
	}
	svc, id, ok := strings.Cut(rest, "/instances/")
	if !ok || strings.Contains(id, "/") || strings.Contains(id, "?") {
		return "", "", false
	}
	svc, err1 := url.PathUnescape(svc)
	id, err2 := url.PathUnescape(id)
	return svc, id, err1 == nil && err2 == nil
}

// FuzzRegister sends random registrations. The API never answers 5xx or
// panics; a refusal changes nothing; an accepted registration reads back
// as sent.
func FuzzRegister(f *testing.F) {
	for _, tc := range hostileCases {
		if tc.method != "" && tc.method != http.MethodPut {
			continue
		}
		target := tc.target
		if target == "" {
			target = instancePath
		}
		if svc, id, ok := splitInstancePath(target); ok {
			f.Add(svc, id, []byte(tc.body))
		}
	}
	f.Add("web", "web-1", []byte(body(nil)))
	f.Add("web", "web-2", []byte(withChecks(map[string]any{"http": "http://10.0.0.9:80/", "method": "post", "header": map[string]any{"X-A": []string{"b"}}},
		map[string]any{"name": "hb", "ttl": "10s", "deregister_critical_after": "1m"}, map[string]any{"tcp": "db.internal:5432", "interval": "1s", "timeout": "1s"},
		map[string]any{"grpc": "[::1]:50051", "grpc_service": "x", "failures_before_critical": 3})))
	f.Add("db", "db-1", []byte(`{"address":"::1","port":1,"tags":[],"meta":{},"weight":0,"version":"1.0.0+build","node":"n1"}`))
	for _, p := range []string{"/web/v2", "/web/../api", "/web/%2e%2e/api", "/web/.%2E", "/web/./x", "/web//x", "web%2F..%2Fapi", "/web/%zz", "/web/v1.2..3"} {
		f.Add("web", "web-3", []byte(`{"address":"10.0.0.3","port":80,"meta":{"route_prefix":"`+p+`"}}`))
	}
	f.Fuzz(func(t *testing.T, service, id string, in []byte) {
		h, cl := fuzzServer(t)
		before := snapshotCatalog(cl.Store())
		r := serve(h, http.MethodPut, instanceURL(service, id), in)
		checkAnswer(t, r)
		if r.status != http.StatusOK {
			if after := snapshotCatalog(cl.Store()); !reflect.DeepEqual(before, after) {
				t.Fatalf("refused with %s, yet the catalog changed", r)
			}
			return
		}
		var res client.WriteResult
		if err := json.Unmarshal(r.body, &res); err != nil || res.Index == 0 || r.header.Get(HeaderIndex) != strconv.FormatUint(res.Index, 10) {
			t.Fatalf("accepted with %s, %s %q", r, HeaderIndex, r.header.Get(HeaderIndex))
		}
		var reg client.Registration
		if err := json.Unmarshal(in, &reg); err != nil {
			t.Fatalf("accepted a body encoding/json refuses: %v", err)
		}
		g := serve(h, http.MethodGet, instanceURL(service, id), nil)
		if g.status != http.StatusOK {
			t.Fatalf("accepted, but the read answers %s", g)
		}
		var got client.Instance
		if err := json.Unmarshal(g.body, &got); err != nil {
			t.Fatalf("read: %v", err)
		}
		assertRoundTrip(t, service, id, &reg, &got, res.Index)
		assertWithinLimits(t, &got)
	})
}

// The documented limits (docs/api.md, "Limits"), written out again here
// rather than taken from validate.go, so that the fuzzer checks the code
// against the documentation.
var (
	docService = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	docID      = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)
	docMetaKey = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$`)
	docVersion = regexp.MustCompile(`^([A-Za-z0-9][A-Za-z0-9.+_-]{0,63})?$`)
)

func docPrintable(s string, maxLen int) bool {
	if len(s) > maxLen || !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if unicode.IsControl(r) || unicode.In(r, unicode.Cf, unicode.Zl, unicode.Zp) {
			return false
		}
	}
	return true
}

// assertWithinLimits fails the test if a stored instance breaks a
// documented limit.
func assertWithinLimits(t *testing.T, i *client.Instance) {
	t.Helper()
	var bad []string
	if !docService.MatchString(i.Service) {
		bad = append(bad, "service")
	}
	if !docID.MatchString(i.ID) {
		bad = append(bad, "id")
	}
	if i.Node != "" && !docID.MatchString(i.Node) {
		bad = append(bad, "node")
	}
	if i.Address == "" || len(i.Address) > 255 || !docPrintable(i.Address, 255) || strings.ContainsAny(i.Address, " /:@") && net.ParseIP(i.Address) == nil {
		bad = append(bad, "address")
	}
	if i.Port < 1 || i.Port > 65535 {
		bad = append(bad, "port")
	}
	if len(i.Tags) > 64 {
		bad = append(bad, "tags")
	}
	for _, tag := range i.Tags {
		if tag == "" || !docPrintable(tag, 128) {
			bad = append(bad, "tag "+strconv.Quote(tag))
		}
	}
	if len(i.Meta) > 64 {
		bad = append(bad, "meta")
	}
	for k, v := range i.Meta {
		if !docMetaKey.MatchString(k) || !docPrintable(v, 512) {
			bad = append(bad, "meta "+strconv.Quote(k))
		}
	}
	if p, ok := i.Meta["route_prefix"]; ok {
		// docs/security.md, "Route prefixes": no ".", ".." or empty
		// segments, also once decoded, and no escaped "/".
		for _, seg := range strings.Split(strings.Trim(p, "/"), "/") {
			if d, err := url.PathUnescape(seg); err != nil || d == "" || d == "." || d == ".." || strings.Contains(d, "/") {
				bad = append(bad, "meta route_prefix "+strconv.Quote(p))
			}
		}
	}
	if !docVersion.MatchString(i.Version) {
		bad = append(bad, "version")
	}
	if i.Weight < 1 || i.Weight > 10000 {
		bad = append(bad, "weight")
	}
	if len(i.Checks) > 16 {
		bad = append(bad, "checks")
	}
	for _, c := range i.Checks {
		if c.Type != "ttl" && (time.Duration(c.Interval) < 100*time.Millisecond || time.Duration(c.Interval) > 24*time.Hour || c.Timeout > c.Interval) {
			bad = append(bad, "check interval "+c.Name)
		}
		if c.FailuresBeforeCritical < 1 || c.FailuresBeforeCritical > 100 || c.SuccessesBeforePassing < 1 || c.SuccessesBeforePassing > 100 {
			bad = append(bad, "check thresholds "+c.Name)
		}
	}
	if len(bad) > 0 {
		t.Fatalf("stored an instance beyond the documented limits (%s): %+v", strings.Join(bad, ", "), i)
	}
}

func emptyToNil[S ~[]E, E any](s S) S {
	if len(s) == 0 {
		return nil
	}
	return s
}

func emptyMapToNil[M ~map[K]V, K comparable, V any](m M) M {
	if len(m) == 0 {
		return nil
	}
	return m
}

// assertRoundTrip fails the test unless got is what registering reg as id
// of service at index must store.
func assertRoundTrip(t *testing.T, service, id string, reg *client.Registration, got *client.Instance, index uint64) {
	t.Helper()
	weight := reg.Weight
	if weight == 0 {
		weight = 1
	}
	if got.ID != id || got.Service != service || got.Address != reg.Address || got.Port != reg.Port ||
		!slices.Equal(emptyToNil(got.Tags), emptyToNil(reg.Tags)) || !reflect.DeepEqual(emptyMapToNil(got.Meta), emptyMapToNil(reg.Meta)) ||
		got.Version != reg.Version || got.Weight != weight || got.Node != reg.Node || got.ModifyIndex != index {
		t.Fatalf("stored %+v at %d; registered %+v", got, index, reg)
	}
	if net.ParseIP(got.Address) == nil && validateHost("address", got.Address) != nil {
		t.Fatalf("stored address %q", got.Address)
	}
	if len(got.Checks) != len(reg.Checks) {
		t.Fatalf("stored %d checks, registered %d", len(got.Checks), len(reg.Checks))
	}
	stored := map[string]client.Check{}
	for _, c := range got.Checks {
		stored[c.Name] = c
	}
	for i, c := range reg.Checks {
		name := c.Name
		if name == "" {
			// The default name is the type, then type-i after the first.
			switch {
			case c.HTTP != "":
				name = "http"
			case c.TCP != "":
				name = "tcp"
			case c.GRPC != "":
				name = "grpc"
			default:
				name = "ttl"
			}
			if i > 0 {
				name += "-" + strconv.Itoa(i)
			}
		}
		s, ok := stored[name]
		if !ok {
			t.Fatalf("check %d (%q) not stored: %+v", i, name, got.Checks)
		}
		if s.HTTP != c.HTTP || s.TCP != c.TCP || s.GRPC != c.GRPC || s.TTL != c.TTL || s.GRPCService != c.GRPCService ||
			(c.Interval != 0 && s.Interval != c.Interval) || (c.Timeout != 0 && s.Timeout != c.Timeout) ||
			(c.InitialStatus != "" && s.InitialStatus != c.InitialStatus) || !reflect.DeepEqual(emptyMapToNil(s.Header), emptyMapToNil(c.Header)) ||
			s.DeregisterCriticalAfter != c.DeregisterCriticalAfter || s.ID != fsm.CheckID(service, id, s.Name) || s.Status != s.InitialStatus {
			t.Fatalf("check %d stored as %+v; registered %+v", i, s, c)
		}
		if s.FailuresBeforeCritical < 1 || s.SuccessesBeforePassing < 1 || time.Duration(s.Timeout) <= 0 {
			t.Fatalf("check %d stored without defaults: %+v", i, s)
		}
	}
}

// readTargets are the routes FuzzQuery sends its query strings to.
var readTargets = []string{
	"/v1/services/web/instances",
	"/v1/services/nobody/instances",
	"/v1/services/web/instances/web-1",
	"/v1/services",
}

// FuzzQuery sends random query strings to the read routes: never a 5xx,
// a 200 always carries a positive index and a JSON body.
func FuzzQuery(f *testing.F) {
	for _, tc := range hostileCases {
		if _, q, ok := strings.Cut(tc.target, "?"); ok && tc.method == http.MethodGet {
			f.Add(uint8(0), q)
		}
	}
	for i, q := range []string{"", "healthy=true&tag=v1&tag=canary&meta=zone:eu", "version=%3E%3D1.2.0+%3C2.0.0", "version=~1.4", "version=1.x",
		"index=1&wait=1s", "index=7&wait=10m", "consistent", "max_stale=5s", "limit=2&cursor=web&prefix=w", "meta=a:b:c", "version=%5E1.2.3%7C%7C~0.1"} {
		f.Add(uint8(i), q)
	}
	h, _ := fuzzServer(f)
	f.Fuzz(func(t *testing.T, route uint8, rawQuery string) {
		target := readTargets[int(route)%len(readTargets)]
		u := &url.URL{Path: target, RawQuery: rawQuery}
		r := serve(h, http.MethodGet, u, nil)
		checkAnswer(t, r)
		if r.status != http.StatusOK {
			return
		}
		if idx, err := strconv.ParseUint(r.header.Get(HeaderIndex), 10, 64); err != nil || idx == 0 {
			t.Fatalf("%s?%s: %s %q", target, rawQuery, HeaderIndex, r.header.Get(HeaderIndex))
		}
		if !json.Valid(r.body) {
			t.Fatalf("%s?%s: body is not JSON: %s", target, rawQuery, r)
		}
	})
}

// FuzzJoin sends random join bodies: never a 5xx, and the cluster is asked
// to join only valid host:port addresses, exactly those sent.
func FuzzJoin(f *testing.F) {
	for _, tc := range hostileCases {
		if tc.target == "/v1/cluster/join" {
			f.Add([]byte(tc.body))
		}
	}
	f.Add([]byte(`{"addresses":["10.0.0.1:8752","[::1]:8752","node-2.internal:8752"]}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		h, cl := fuzzServer(t)
		r := serve(h, http.MethodPost, &url.URL{Path: "/v1/cluster/join"}, in)
		checkAnswer(t, r)
		joined := cl.Joined()
		if r.status != http.StatusOK {
			if len(joined) != 0 {
				t.Fatalf("refused with %s, yet the cluster was asked to join %q", r, joined)
			}
			return
		}
		var req client.JoinRequest
		if err := json.Unmarshal(in, &req); err != nil {
			t.Fatalf("accepted a body encoding/json refuses: %v", err)
		}
		var res client.JoinResult
		if err := json.Unmarshal(r.body, &res); err != nil || len(joined) != 1 || !slices.Equal(joined[0], req.Addresses) || res.Joined != len(req.Addresses) {
			t.Fatalf("answered %s; the cluster was asked to join %q; sent %q", r, joined, req.Addresses)
		}
		for _, a := range req.Addresses {
			host, port, err := net.SplitHostPort(a)
			p, perr := strconv.Atoi(port)
			if err != nil || host == "" || perr != nil || p < 1 || p > 65535 {
				t.Fatalf("joined the bad address %q", a)
			}
		}
	})
}

// FuzzServiceName: serviceName accepts exactly what the pattern it
// replaced accepts.
func FuzzServiceName(f *testing.F) {
	pattern := regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?$`)
	for _, s := range []string{"", "a", "-", "a-", "-a", "a-b", "web", "Web", "w_b", "a--b", "0", "é", "a\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := serviceName(s), pattern.MatchString(s); got != want {
			t.Fatalf("serviceName(%q) = %v, the pattern says %v", s, got, want)
		}
	})
}
