package api

import (
	"encoding/hex"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/beaconhq/beacon/api/client"
	"github.com/beaconhq/beacon/fsm"
	"github.com/hashicorp/raft"
)

func TestRequestTokenReadsHeadersOnly(t *testing.T) {
	cases := []struct {
		name    string
		url     string
		headers map[string]string
		want    string
		err     error
	}{
		{name: "no token is the empty token", url: "/v1/services"},
		{name: "a bearer token is read", headers: map[string]string{"Authorization": "Bearer abc"}, want: "abc"},
		{name: "the scheme is case-insensitive", headers: map[string]string{"Authorization": "BEARER abc"}, want: "abc"},
		{name: "surrounding spaces are trimmed", headers: map[string]string{"Authorization": "Bearer   abc  "}, want: "abc"},
		{name: "X-Beacon-Token is read", headers: map[string]string{"X-Beacon-Token": "xyz"}, want: "xyz"},
		{name: "equal tokens in both headers are fine", headers: map[string]string{"Authorization": "Bearer t", "X-Beacon-Token": "t"}, want: "t"},
		{name: "different tokens in both headers are refused", headers: map[string]string{"Authorization": "Bearer t", "X-Beacon-Token": "u"}, err: errTwoTokens},
		{name: "a basic scheme is refused", headers: map[string]string{"Authorization": "Basic dTpw"}, err: errBadAuthHeader},
		{name: "a bare token without scheme is refused", headers: map[string]string{"Authorization": "abc"}, err: errBadAuthHeader},
		{name: "an empty bearer is refused", headers: map[string]string{"Authorization": "Bearer  "}, err: errBadAuthHeader},
		{name: "a token query parameter is refused", url: "/v1/services?token=abc", err: errTokenInURL},
		{name: "an empty token query parameter is refused too", url: "/v1/services?token=", err: errTokenInURL},
		{name: "an access_token query parameter is refused", url: "/v1/services?access_token=abc", err: errTokenInURL},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			u := tc.url
			if u == "" {
				u = "/v1/services"
			}
			r := httptest.NewRequest(http.MethodGet, u, nil)
			for k, v := range tc.headers {
				r.Header.Set(k, v)
			}
			got, err := requestToken(r, r.URL.Query())
			if !errors.Is(err, tc.err) || got != tc.want {
				t.Fatalf("got %q, %v; want %q, %v", got, err, tc.want, tc.err)
			}
		})
	}
}

func TestBuildTokenValidatesPolicyPrefixesAndDescription(t *testing.T) {
	long := strings.Repeat("a", MaxServiceLen+1)
	cases := []struct {
		name  string
		req   client.TokenRequest
		field string // "" means valid
	}{
		{"a read token is valid", client.TokenRequest{Policy: "read", Description: "dashboards"}, ""},
		{"a write token with prefixes is valid", client.TokenRequest{Policy: "write", Prefixes: []string{"web-", "api"}}, ""},
		{"a write token for every service is valid", client.TokenRequest{Policy: "write", Prefixes: []string{""}}, ""},
		{"an empty policy is invalid", client.TokenRequest{}, "policy"},
		{"the management policy cannot be created", client.TokenRequest{Policy: "management"}, "policy"},
		{"a read token with prefixes is invalid", client.TokenRequest{Policy: "read", Prefixes: []string{"web"}}, "prefixes"},
		{"a write token without prefixes is invalid", client.TokenRequest{Policy: "write"}, "prefixes"},
		{"an upper-case prefix is invalid", client.TokenRequest{Policy: "write", Prefixes: []string{"Web"}}, "prefixes[0]"},
		{"a prefix with a dot is invalid", client.TokenRequest{Policy: "write", Prefixes: []string{"web.x"}}, "prefixes[0]"},
		{"a prefix longer than a service name is invalid", client.TokenRequest{Policy: "write", Prefixes: []string{long}}, "prefixes[0]"},
		{"a duplicate prefix is invalid", client.TokenRequest{Policy: "write", Prefixes: []string{"a", "b", "a"}}, "prefixes[2]"},
		{"too many prefixes are invalid", client.TokenRequest{Policy: "write", Prefixes: make([]string, MaxTokenPrefixes+1)}, "prefixes"},
		{"a description with a tab is invalid", client.TokenRequest{Policy: "read", Description: "a\tb"}, "description"},
		{"a description with U+FFFD is invalid", client.TokenRequest{Policy: "read", Description: "a\uFFFDb"}, "description"},
		{"an over-long description is invalid", client.TokenRequest{Policy: "read", Description: strings.Repeat("d", MaxTokenDescriptionLen+1)}, "description"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, _, _, err := buildToken(&tc.req)
			if tc.field == "" {
				if err != nil {
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			var ve *ValidationError
			if !errors.As(err, &ve) || ve.Field != tc.field {
				t.Fatalf("got %v, want an error on %q", err, tc.field)
			}
		})
	}
}

func TestWriteTokensMatchServicesByPrefix(t *testing.T) {
	id := identity{accessor: "a", policy: PolicyWrite, prefixes: []string{"web-", "api"}}
	for svc, want := range map[string]bool{"web-a": true, "web-": true, "web": false, "api": true, "apix": true, "db": false, "": false} {
		if got := id.canWrite(svc); got != want {
			t.Errorf("canWrite(%q) = %v, want %v", svc, got, want)
		}
	}
	if (identity{policy: PolicyRead}).canWrite("web") {
		t.Error("a read token can write")
	}
	if !(identity{policy: PolicyWrite, prefixes: []string{""}}).canWrite("anything") {
		t.Error("the empty prefix does not cover every service")
	}
}

func TestDefaultPolicyClosesUnlistedRoutes(t *testing.T) {
	cases := map[string]policy{
		"GET /v1/something/new":       policyRead,
		"HEAD /v1/something/new":      policyRead,
		"PUT /v1/something/new":       policyManagement,
		"POST /v1/anything":           policyManagement,
		"DELETE /v1/x/{id}":           policyManagement,
		"GET /v1/snapshot":            policyManagement,
		"GET /v1/operator/raft/peers": policyManagement,
		"GET /v1/tokens/{accessor}":   policyManagement,
		"GET /debug/pprof/heap":       policyManagement,
		"PUT /v1/checks/{id}/pass":    policyCheckWrite,
		"GET /healthz":                policyOpen,
		"PUT /v1/services/{service}/instances/{id}/maintenance": policyServiceWrite,
	}
	for pattern, want := range cases {
		if got := policyFor(pattern); got != want {
			t.Errorf("policyFor(%q) = %v, want %v", pattern, got, want)
		}
	}
}

func TestWriteLimiterRefillsPerClientAndGroupsIPv6By64(t *testing.T) {
	l := newWriteLimiter(2, 3) // 2/s, bursts of 3
	now := time.Unix(1000, 0)
	for i := 0; i < 3; i++ {
		if ok, _ := l.allow("10.0.0.1", now); !ok {
			t.Fatalf("write %d of the burst refused", i)
		}
	}
	ok, wait := l.allow("10.0.0.1", now)
	if ok || wait <= 0 || wait > 500*time.Millisecond {
		t.Fatalf("4th write: %v, wait %v; want refused with a wait of at most 500ms", ok, wait)
	}
	if retryAfter(wait) != "1" {
		t.Fatalf("Retry-After %q, want 1", retryAfter(wait))
	}
	if ok, _ := l.allow("10.0.0.2", now); !ok {
		t.Fatal("another client was limited by the first")
	}
	if ok, _ := l.allow("10.0.0.1", now.Add(500*time.Millisecond)); !ok {
		t.Fatal("no refill after 500ms at 2/s")
	}
	// One IPv6 /64 is one client.
	for i := 0; i < 3; i++ {
		l.allow("2001:db8::1", now)
	}
	if ok, _ := l.allow("2001:db8::ffff", now); ok {
		t.Fatal("an address in the same /64 got its own bucket")
	}
	if ok, _ := l.allow("2001:db8:0:1::1", now); !ok {
		t.Fatal("another /64 was limited")
	}
	// A refused write does not consume: after the wait, exactly one passes.
	if ok, _ := l.allow("10.0.0.1", now.Add(500*time.Millisecond)); ok {
		t.Fatal("bucket not empty")
	}
	if newWriteLimiter(0, 10) != nil {
		t.Fatal("a zero rate must disable the limiter")
	}
}

func TestWriteLimiterStaysBounded(t *testing.T) {
	l := newWriteLimiter(1, 1)
	now := time.Unix(0, 0)
	for i := 0; i < maxRateClients+100; i++ {
		ip := net.IPv4(10, byte(i>>16), byte(i>>8), byte(i)).String()
		l.allow(ip, now)
	}
	if n := len(l.clients); n > maxRateClients {
		t.Fatalf("%d clients remembered, cap %d", n, maxRateClients)
	}
}

func TestRetryAfterRoundsUpToWholeSeconds(t *testing.T) {
	for d, want := range map[time.Duration]string{time.Millisecond: "1", time.Second: "1", 1500 * time.Millisecond: "2", 10 * time.Second: "10"} {
		if got := retryAfter(d); got != want {
			t.Errorf("retryAfter(%v) = %q, want %q", d, got, want)
		}
	}
}

// FuzzTokenRequestDecoding feeds arbitrary bodies to the token route's
// decoder and validation: no panic, and whatever is accepted is a valid
// token request.
func FuzzTokenRequestDecoding(f *testing.F) {
	for _, s := range []string{
		`{"policy":"read"}`, `{"policy":"write","prefixes":["web-",""]}`, `{"policy":"write","prefixes":["a","a"]}`,
		`{"policy":"read","description":"x\u0000"}`, `{"policy":"read","policy":"write"}`, `[]`, `{"prefixes":[[[[]]]]}`,
		"{\"policy\":\"read\",\"description\":\"\xff\"}", `{"policy":"write","prefixes":null}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var req client.TokenRequest
		if err := decodeJSON(body, &req); err != nil {
			return
		}
		policy, prefixes, desc, err := buildToken(&req)
		if err != nil {
			return
		}
		if policy != PolicyRead && policy != PolicyWrite {
			t.Fatalf("accepted policy %q", policy)
		}
		if policy == PolicyWrite && len(prefixes) == 0 || policy == PolicyRead && len(prefixes) != 0 {
			t.Fatalf("accepted %s with prefixes %q", policy, prefixes)
		}
		for _, p := range prefixes {
			if !prefixPattern.MatchString(p) || len(p) > MaxServiceLen {
				t.Fatalf("accepted prefix %q", p)
			}
		}
		if !printable(desc) || len(desc) > MaxTokenDescriptionLen {
			t.Fatalf("accepted description %q", desc)
		}
	})
}

// FuzzRequestToken feeds arbitrary header values and query strings to the
// token extraction: no panic, never a token from the URL.
func FuzzRequestToken(f *testing.F) {
	f.Add("Bearer abc", "", "a=b")
	f.Add("", "xyz", "token=1")
	f.Add("Bearer", " ", "%zz")
	f.Fuzz(func(t *testing.T, authz, xtok, query string) {
		r := httptest.NewRequest(http.MethodGet, "/v1/services", nil)
		r.URL.RawQuery = query
		r.Header["Authorization"] = []string{authz}
		r.Header["X-Beacon-Token"] = []string{xtok}
		tok, err := requestToken(r, r.URL.Query())
		if err != nil {
			return
		}
		if r.URL.Query().Has("token") || r.URL.Query().Has("access_token") {
			t.Fatalf("accepted a request with a token in the URL: %q", query)
		}
		if tok != "" && !strings.Contains(authz, tok) && !strings.Contains(xtok, tok) {
			t.Fatalf("token %q from nowhere", tok)
		}
	})
}

func TestAuthenticateComparesHashesNotSecrets(t *testing.T) {
	store := fsm.NewStore()
	s := &Server{cfg: Config{Auth: AuthConfig{ManagementTokenHash: HashToken("management-secret-123")}}, store: store}
	r := httptest.NewRequest(http.MethodGet, "/v1/services", nil)
	r.Header.Set("Authorization", "Bearer management-secret-123")
	if id := s.authenticate(r, r.URL.Query()); id.err != nil || id.policy != PolicyManagement || id.accessor != AccessorManagement {
		t.Fatalf("management token: %+v", id)
	}
	r.Header.Set("Authorization", "Bearer management-secret-12")
	if id := s.authenticate(r, r.URL.Query()); !errors.Is(id.err, errInvalidToken) {
		t.Fatalf("a prefix of the management token: %+v", id)
	}
	if got := hex.EncodeToString(HashToken("abc")); got != "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad" {
		t.Fatalf("HashToken is not SHA-256: %s", got)
	}
}

// BenchmarkAuthenticate measures what auth adds to a request: hashing the
// presented token and finding it among 10,000 stored tokens.
//
//	go test -run '^$' -bench Authenticate -benchmem ./api/
func BenchmarkAuthenticate(b *testing.B) {
	f := fsm.New(nil)
	secrets := make([]string, 10000)
	for i := range secrets {
		secrets[i] = newSecret()
		cmd, _ := fsm.Encode(fsm.TokenSetType, &fsm.TokenSetRequest{Token: fsm.Token{
			Accessor: newAccessor(), SecretHash: hex.EncodeToString(HashToken(secrets[i])), Policy: PolicyRead,
		}})
		if res := f.Apply(&raft.Log{Index: uint64(i + 1), Type: raft.LogCommand, Data: cmd}).(fsm.ApplyResult); res.Err != nil {
			b.Fatal(res.Err)
		}
	}
	s := &Server{cfg: Config{Auth: AuthConfig{ManagementTokenHash: HashToken("management-secret-123")}}, store: f.Store()}
	for _, c := range []struct{ name, tok string }{
		{"stored token", secrets[4242]}, {"management token", "management-secret-123"}, {"wrong token", "bcn_nope"}, {"no token", ""},
	} {
		b.Run(c.name, func(b *testing.B) {
			r := httptest.NewRequest(http.MethodGet, "/v1/services", nil)
			if c.tok != "" {
				r.Header.Set("Authorization", "Bearer "+c.tok)
			}
			b.ReportAllocs()
			for b.Loop() {
				_ = s.authenticate(r, r.URL.Query())
			}
		})
	}
}
