package consul

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/beaconhq/beacon/api"
	"github.com/beaconhq/beacon/api/apitest"
	"github.com/beaconhq/beacon/fsm"
)

// FuzzFilter: any ?filter either compiles or is a 400 naming "filter", and
// a compiled filter evaluates on every result shape without panicking.
func FuzzFilter(f *testing.F) {
	for _, s := range []string{
		`Service.ID == "web-1"`, `"prod" in Service.Tags`, `Service.Meta.zone != "a"`,
		`Node.Node matches "^node[0-9]+$" and not (Service.Port == 80)`, `ServiceTags contains "x" or NodeMeta is empty`,
		`Status == "passing"`, `(`, `Service.Tags not in "x"`, strings.Repeat("(", 200), `a.b.c.d == 1`,
	} {
		f.Add(s)
	}
	entry := &ServiceEntry{
		Node:    &Node{Node: "n1", Meta: map[string]string{"a": "b"}, TaggedAddresses: map[string]string{}},
		Service: &AgentService{ID: "w", Service: "web", Tags: []string{"x"}, Meta: map[string]string{}},
		Checks:  []*HealthCheck{{CheckID: "serfHealth", Status: "passing", ServiceTags: []string{}}},
	}
	shapes := []any{entry, entry.Node, entry.Service, entry.Checks[0], &CatalogService{ServiceTags: []string{"x"}}}
	f.Fuzz(func(t *testing.T, expr string) {
		flt, err := compileFilter(expr)
		if err != nil {
			var ve *api.ValidationError
			if !errors.As(err, &ve) || ve.Field != "filter" {
				t.Fatalf("error %v is not a filter validation error", err)
			}
			return
		}
		for _, v := range shapes {
			if _, err := flt.match(v); err != nil {
				var ve *api.ValidationError
				if !errors.As(err, &ve) || ve.Field != "filter" {
					t.Fatalf("match error %v is not a filter validation error", err)
				}
			}
		}
	})
}

// FuzzRegisterBody: any body sent to PUT /v1/agent/service/register gets
// 200 or a 4xx with a JSON error; what is accepted is stored as a valid
// instance of this node; nothing is stored otherwise.
func FuzzRegisterBody(f *testing.F) {
	for _, s := range []string{
		`{"Name":"web","Port":80}`,
		`{"ID":"w1","Name":"web","Port":80,"Address":"127.0.0.2","Tags":["a"],"Meta":{"k":"v"},"Weights":{"Passing":3}}`,
		`{"Name":"web","Port":80,"Check":{"HTTP":"http://127.0.0.2/h","Interval":"1s","Timeout":"5s"}}`,
		`{"Name":"web","Port":80,"Checks":[{"TTL":"10s","CheckID":"x"},{"TCP":"127.0.0.2:1","Interval":10000000000}]}`,
		`{"Name":"web","Port":80,"Check":{"ScriptArgs":["x"]}}`, `{"Name":"web","Port":80,"Check":{"GRPC":"127.0.0.2:9/s","Interval":"1s"}}`,
		`{"Name":"web","Port":80,"Check":{"CheckID":"service:web:0","TTL":"1s"}}`, `[]`, `{"Name":1}`, ``, `{"Kind":"x"}`,
	} {
		f.Add(s)
	}
	cl := apitest.NewCluster(nil)
	cfg := DefaultConfig()
	cfg.NodeName, cfg.NodeAddress = "n1", "127.0.0.1"
	s, err := New(cfg, cl.Store(), cl)
	if err != nil {
		f.Fatal(err)
	}
	h := s.Handler()
	f.Fuzz(func(t *testing.T, body string) {
		before := cl.Store().AppliedIndex()
		req := httptest.NewRequest(http.MethodPut, "/v1/agent/service/register", strings.NewReader(body))
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		switch {
		case w.Code == http.StatusOK:
			_, insts := cl.Store().NodeInstances(nil, "n1")
			if len(insts) == 0 || cl.Store().AppliedIndex() == before {
				t.Fatalf("accepted %q but stored nothing", body)
			}
			for _, inst := range insts {
				if inst.Node != "n1" || inst.Port < 1 || inst.Address == "" {
					t.Fatalf("stored %+v", inst)
				}
			}
		case w.Code >= 400 && w.Code < 500:
			var eb struct{ Error, Code string }
			if err := json.Unmarshal(w.Body.Bytes(), &eb); err != nil || eb.Error == "" || eb.Code == "" {
				t.Fatalf("status %d with body %q", w.Code, w.Body)
			}
			if cl.Store().AppliedIndex() != before {
				t.Fatalf("refused %q (%s) but the catalog changed", body, w.Body)
			}
		default:
			t.Fatalf("status %d for %q: %s", w.Code, body, w.Body)
		}
	})
}

// FuzzCatalogRegisterBody: whatever the body of PUT /v1/catalog/register,
// the answer is 200 or a 4xx JSON error; a refused body changes nothing,
// and every external node in the catalog has a valid name and an address,
// and never takes the name of this agent (a member).
func FuzzCatalogRegisterBody(f *testing.F) {
	for _, s := range []string{
		`{"Node":"ext-db","Address":"127.0.0.5","Service":{"Service":"db","Port":5432}}`,
		`{"Node":"ext-db","Address":"127.0.0.5","TaggedAddresses":{"lan":"127.0.0.5","wan":"198.51.100.5"},"NodeMeta":{"external-node":"true"}}`,
		`{"Node":"ext-db","SkipNodeUpdate":true,"Service":{"ID":"db-2","Service":"db","Port":5433}}`,
		`{"Node":"ext-db","Address":"127.0.0.5","Service":{"Service":"db","Port":5432},"Checks":[{"CheckID":"c","ServiceID":"db","Definition":{"TCP":"127.0.0.5:5432","Interval":"1h"}}]}`,
		`{"Node":"n1","Address":"10.0.0.9","Service":{"Service":"db","Port":1}}`, `{"Node":"n1","Service":{"Service":"db","Port":1}}`,
		`{"Node":"beacon-external","Address":"127.0.0.5"}`, `{"Node":"ext","NodeMeta":{"beacon-role":"server"},"Address":"127.0.0.5"}`,
		`{"Node":"ext","Address":"0.0.0.0"}`, `{"Node":"a b"}`, `{}`, `[]`, ``, `{"Node":1}`,
	} {
		f.Add(s)
	}
	cl := apitest.NewCluster(nil)
	if _, err := cl.Apply(context.Background(), mustEncode(f, fsm.NodeUpdateType, &fsm.NodeUpdateRequest{
		Upserts: []fsm.NodeState{{Name: "n1", Address: "127.0.0.1:8750", Role: fsm.RoleServer, Status: fsm.NodeAlive}}, Time: 1})); err != nil {
		f.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.NodeName, cfg.NodeAddress = "n1", "127.0.0.1"
	s, err := New(cfg, cl.Store(), cl)
	if err != nil {
		f.Fatal(err)
	}
	h := s.Handler()
	f.Fuzz(func(t *testing.T, body string) {
		before := cl.Store().AppliedIndex()
		req := httptest.NewRequest(http.MethodPut, "/v1/catalog/register", strings.NewReader(body))
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		switch {
		case w.Code == http.StatusOK:
			if w.Body.String() != "true" {
				t.Fatalf("answered %q", w.Body)
			}
		case w.Code >= 400 && w.Code < 500:
			var eb struct{ Error, Code string }
			if err := json.Unmarshal(w.Body.Bytes(), &eb); err != nil || eb.Error == "" || eb.Code == "" {
				t.Fatalf("status %d with body %q", w.Code, w.Body)
			}
			if cl.Store().AppliedIndex() != before {
				t.Fatalf("refused %q (%s) but the catalog changed", body, w.Body)
			}
		default:
			t.Fatalf("status %d for %q: %s", w.Code, body, w.Body)
		}
		_, nodes := cl.Store().Nodes(nil)
		for _, n := range nodes {
			if n.Name == "n1" && (n.External() || n.Address != "127.0.0.1:8750") {
				t.Fatalf("the member's node changed: %+v", n)
			}
			if n.External() && (fsm.ValidateName(n.Name) != nil || n.Address == "" || n.Name == externalNode) {
				t.Fatalf("stored external node %+v", n)
			}
		}
	})
}

func mustEncode(t testing.TB, typ fsm.MessageType, body any) []byte {
	t.Helper()
	b, err := fsm.Encode(typ, body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestCheckNameRoundTrips: a Consul check ID maps to a Beacon check name
// and back.
func TestCheckNameRoundTrips(t *testing.T) {
	for _, id := range []string{"service:web-1", "service:web-1:1", "service:web-1:12", "web-ttl"} {
		name, ok := checkName(id, "web-1")
		if !ok {
			t.Fatalf("%q refused", id)
		}
		c := &fsm.Check{Instance: "web-1", Service: "web", CheckDefinition: &fsm.CheckDefinition{Name: name}}
		if back := consulCheckID(c); back != id {
			t.Errorf("%q -> %q -> %q", id, name, back)
		}
	}
	for _, id := range []string{"service:web-1:0", "service:web-1:01", "service:web-1:x", "a:b"} {
		if _, ok := checkName(id, "web-1"); ok {
			t.Errorf("%q accepted", id)
		}
	}
	_ = time.Second
}
