package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/beaconhq/beacon/api/client"
	"github.com/beaconhq/beacon/fsm"
)

// Characters of two, three and four bytes in UTF-8.
var wideChars = []string{"é", "日", "😀"}

// Limits documented in characters count characters, not bytes (QA: 65 × "é"
// was refused as a tag longer than 128 characters). Each limit takes N
// characters of each width, and refuses N+1 leaving the catalog as it was.
func TestLengthLimitsCountCharacters(t *testing.T) {
	const url = "http://10.0.0.1:80/"
	cases := []struct {
		name, field string
		max         int
		reg         func(v string) client.Registration
		stored      func(ts *testServer) string
	}{
		{"tag", "tags[0]", MaxTagLen,
			func(v string) client.Registration { return client.Registration{Tags: []string{v}} },
			func(ts *testServer) string { return ts.getInstance("lim", "l1").Tags[0] }},
		{"meta value", "meta.k", MaxMetaValueLen,
			func(v string) client.Registration { return client.Registration{Meta: map[string]string{"k": v}} },
			func(ts *testServer) string { return ts.getInstance("lim", "l1").Meta["k"] }},
		{"http check target", "checks[0].http", 2048,
			func(v string) client.Registration {
				return client.Registration{Checks: []client.CheckDefinition{{HTTP: url + v}}}
			},
			func(ts *testServer) string { return ts.storedCheck("lim:l1:http").Target }},
		{"http check header value", "checks[0].header.X-H", MaxHeaderValueLen,
			func(v string) client.Registration {
				return client.Registration{Checks: []client.CheckDefinition{{HTTP: url, Header: map[string][]string{"X-H": {v}}}}}
			},
			func(ts *testServer) string { return ts.storedCheck("lim:l1:http").Header["X-H"][0] }},
		{"grpc service", "checks[0].grpc_service", 256,
			func(v string) client.Registration {
				return client.Registration{Checks: []client.CheckDefinition{{GRPC: "10.0.0.1:80", GRPCService: v}}}
			},
			func(ts *testServer) string { return ts.storedCheck("lim:l1:grpc").GRPCService }},
	}
	for _, tc := range cases {
		for _, ch := range wideChars {
			t.Run(tc.name+" of "+ch, func(t *testing.T) {
				ts := newTestServer(t)
				// The URL's own characters count towards the target's limit.
				n := tc.max
				if tc.field == "checks[0].http" {
					n -= len(url)
				}
				put := func(v string) response {
					reg := tc.reg(v)
					reg.Address, reg.Port = "10.0.0.1", 80
					return ts.do(http.MethodPut, "/v1/services/lim/instances/l1", mustJSON(t, reg))
				}
				fits := strings.Repeat(ch, n)
				if r := put(fits); r.status != http.StatusOK {
					t.Fatalf("%d characters (%d bytes): %s", tc.max, len(fits), r)
				}
				if got := tc.stored(ts); !strings.HasSuffix(got, fits) {
					t.Fatalf("stored %q, want %q", got, fits)
				}
				before := snapshotCatalog(ts.cl.Store())
				r := put(fits + ch)
				assertError(t, r, http.StatusBadRequest, "invalid", tc.field)
				if want := fmt.Sprintf("%d printable characters", tc.max); !strings.Contains(string(r.body), want) {
					t.Fatalf("error %s does not say %q", r.body, want)
				}
				ts.assertUnchanged(before)
			})
		}
	}
}

func TestMaintenanceReasonCountsCharacters(t *testing.T) {
	for _, ch := range wideChars {
		t.Run(ch, func(t *testing.T) {
			ts := newTestServer(t)
			ts.register("lim", "l1", client.Registration{Address: "10.0.0.1", Port: 80})
			put := func(reason string) response {
				return ts.do(http.MethodPut, "/v1/services/lim/instances/l1/maintenance",
					mustJSON(t, client.MaintenanceRequest{Mode: "maintenance", Reason: reason}))
			}
			fits := strings.Repeat(ch, MaxReasonLen)
			if r := put(fits); r.status != http.StatusOK {
				t.Fatalf("%d characters: %s", MaxReasonLen, r)
			}
			if m := ts.getInstance("lim", "l1").Maintenance; m == nil || m.Reason != fits {
				t.Fatalf("maintenance %+v, want the reason kept", m)
			}
			before := snapshotCatalog(ts.cl.Store())
			assertError(t, put(fits+ch), http.StatusBadRequest, "invalid", "reason")
			ts.assertUnchanged(before)
		})
	}
}

func TestTokenDescriptionCountsCharacters(t *testing.T) {
	const mgmt = "bcn_charlimit-management-token"
	ts := newTestServer(t, func(c *Config) { c.Auth = AuthConfig{ManagementTokenHash: HashToken(mgmt)} })
	create := func(desc string) response {
		t.Helper()
		req, err := http.NewRequest(http.MethodPost, ts.url+"/v1/tokens",
			bytes.NewReader(mustJSON(t, client.TokenRequest{Policy: "read", Description: desc})))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Beacon-Token", mgmt)
		resp, err := ts.http.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return response{status: resp.StatusCode, header: resp.Header, body: b}
	}
	descriptions := func() []string {
		_, toks := ts.cl.Store().Tokens(nil)
		var out []string
		for _, tok := range toks {
			out = append(out, tok.Description)
		}
		slices.Sort(out)
		return out
	}
	var want []string
	for _, ch := range wideChars {
		fits := strings.Repeat(ch, MaxTokenDescriptionLen)
		if r := create(fits); r.status != http.StatusOK {
			t.Fatalf("%d × %s: %s", MaxTokenDescriptionLen, ch, r)
		}
		want = append(want, fits)
		slices.Sort(want)
		if got := descriptions(); !slices.Equal(got, want) {
			t.Fatalf("descriptions %q, want %q", got, want)
		}
		r := create(fits + ch)
		assertError(t, r, http.StatusBadRequest, "invalid", "description")
		var eb client.ErrorBody
		if err := json.Unmarshal(r.body, &eb); err != nil || !strings.Contains(eb.Error, "characters") {
			t.Fatalf("error %s does not count characters", r.body)
		}
		if got := descriptions(); !slices.Equal(got, want) {
			t.Fatalf("descriptions after a refusal %q, want %q", got, want)
		}
	}
}

// storedCheck returns the check id as the store holds it.
func (ts *testServer) storedCheck(id string) *fsm.Check {
	ts.t.Helper()
	c := ts.cl.Store().Check(nil, id)
	if c == nil {
		ts.t.Fatalf("no check %s", id)
	}
	return c
}
