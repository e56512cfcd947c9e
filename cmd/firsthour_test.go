package cmd

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/beaconhq/beacon/api/client"
)

// The CLI as a new user meets it (issue 19): what each mistake prints and
// the exit code, as Main would give them.

func runCLI(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errOut bytes.Buffer
	f := &Factory{Out: &out, Err: &errOut, Getenv: func(string) string { return "" }}
	root := NewRootCmd(f)
	root.SetArgs(args)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := root.ExecuteContext(ctx)
	code = exitCode(&errOut, err)
	return out.String(), errOut.String(), code
}

// fakeAgent answers like an agent would (with client.HeaderAgent) and
// records the queries it got.
type fakeAgent struct {
	*httptest.Server
	mu      sync.Mutex
	queries []string
}

func newFakeAgent(t *testing.T, answer func(w http.ResponseWriter, r *http.Request)) *fakeAgent {
	a := &fakeAgent{}
	a.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		a.queries = append(a.queries, r.URL.RawQuery)
		a.mu.Unlock()
		w.Header().Set(client.HeaderAgent, "1")
		w.Header().Set("X-Beacon-Index", "7")
		w.Header().Set("Content-Type", "application/json")
		answer(w, r)
	}))
	t.Cleanup(a.Close)
	return a
}

func (a *fakeAgent) lastQuery() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.queries) == 0 {
		return ""
	}
	return a.queries[len(a.queries)-1]
}

func TestMissingArgumentsPrintTheUsage(t *testing.T) {
	for _, tc := range []struct {
		args  []string
		usage string
	}{
		{[]string{"discover"}, "Usage: beacon discover SERVICE [flags]"},
		{[]string{"deregister", "web"}, "Usage: beacon deregister SERVICE ID"},
		{[]string{"register", "web"}, "Usage: beacon register"},
		{[]string{"force-leave"}, "Usage: beacon force-leave"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			_, stderr, code := runCLI(t, tc.args...)
			if code != exitUsage || !strings.Contains(stderr, tc.usage) || strings.Contains(stderr, "arg(s)") {
				t.Fatalf("exit %d, stderr %q; want %d and %q", code, stderr, exitUsage, tc.usage)
			}
		})
	}
}

func TestNoAgentReachableNamesEveryAddressAndHints(t *testing.T) {
	_, stderr, code := runCLI(t, "--addr", "127.0.0.1:1,127.0.0.2:1", "services")
	for _, want := range []string{"127.0.0.1:1: connection refused", "127.0.0.2:1: connection refused", "Hint:", "BEACON_ADDR", "make up"} {
		if !strings.Contains(stderr, want) {
			t.Fatalf("stderr %q lacks %q", stderr, want)
		}
	}
	if code != exitError {
		t.Fatalf("exit %d", code)
	}
}

func TestAnHTTPServerThatIsNotAnAgentIsNamed(t *testing.T) {
	for name, h := range map[string]http.HandlerFunc{
		"a web page": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(404)
			w.Write([]byte("<html><body>Not Found</body></html>"))
		},
		"a Beacon load balancer": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(404)
			w.Write([]byte(`{"error":"no service routes host \"x\" or path \"/v1/services\"","code":"no_route"}`))
		},
	} {
		t.Run(name, func(t *testing.T) {
			srv := httptest.NewServer(h)
			t.Cleanup(srv.Close)
			_, stderr, code := runCLI(t, "--addr", srv.URL, "services")
			if code != exitError || !strings.Contains(stderr, "is not a Beacon agent API") || !strings.Contains(stderr, "Hint: point --addr") || strings.Contains(stderr, "<html>") {
				t.Fatalf("exit %d, stderr %q", code, stderr)
			}
		})
	}
}

func TestMetaIsKeyEqualsValueEverywhere(t *testing.T) {
	a := newFakeAgent(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut {
			w.Write([]byte(`{"index": 7}`))
			return
		}
		if strings.HasPrefix(r.URL.Path, "/v1/services/") {
			w.Write([]byte(`[]`))
			return
		}
		w.Write([]byte(`{"services": []}`))
	})
	for _, tc := range []struct {
		args     []string
		code     int
		query    string // what the agent must have been asked (discover, services)
		stderrIs string
	}{
		{[]string{"discover", "web", "--meta", "zone=eu"}, exitOK, "meta=zone%3Aeu", ""},
		{[]string{"services", "--meta", "zone=eu"}, exitOK, "meta=zone%3Aeu", ""},
		{[]string{"discover", "web", "--meta", "url=http://x:80"}, exitOK, "meta=url%3Ahttp%3A%2F%2Fx%3A80", ""},
		{[]string{"discover", "web", "--meta", "zone:eu"}, exitOK, "meta=zone%3Aeu", `note: --meta "zone:eu" read as zone=eu; write --meta key=value`},
		{[]string{"register", "web", "w1", "--address", "10.0.0.1", "--port", "80", "--meta", "zone:eu"}, exitOK, "", "read as zone=eu"},
		{[]string{"discover", "web", "--meta", "zone"}, exitUsage, "", `--meta "zone": want key=value`},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			_, stderr, code := runCLI(t, append([]string{"--addr", a.URL}, tc.args...)...)
			if code != tc.code || !strings.Contains(stderr, tc.stderrIs) {
				t.Fatalf("exit %d, stderr %q; want %d and %q", code, stderr, tc.code, tc.stderrIs)
			}
			if tc.query != "" && !strings.Contains(a.lastQuery(), tc.query) {
				t.Fatalf("the agent was asked %q, want %q in it", a.lastQuery(), tc.query)
			}
		})
	}
}

func TestStatusBeforeTheClusterFormsSaysNoLeaderYet(t *testing.T) {
	a := newFakeAgent(t, func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(client.ClusterStatus{Node: "n1", State: "Follower", LastContactMS: -1})
	})
	stdout, _, code := runCLI(t, "--addr", a.URL, "status")
	if code != exitOK || !strings.Contains(stdout, "none yet") || strings.Contains(stdout, "()") ||
		!strings.Contains(stdout, "--bootstrap-expect") || !strings.Contains(stdout, "beacon join") {
		t.Fatalf("exit %d, stdout %q", code, stdout)
	}
}

func TestChecksTableSaysWhatAFlappingCheckCountsAs(t *testing.T) {
	a := newFakeAgent(t, func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode([]client.Check{{ID: "web:w1:http", Service: "web", Instance: "w1",
			CheckDefinition: client.CheckDefinition{Type: "http"}, Status: "critical", ResultStatus: "passing", Flapping: true}})
	})
	stdout, _, code := runCLI(t, "--addr", a.URL, "checks")
	if code != exitOK || !strings.Contains(stdout, "critical (flapping; results passing)") {
		t.Fatalf("exit %d, stdout %q", code, stdout)
	}
}

func TestAgentHelpShowsEachFlagOnce(t *testing.T) {
	stdout, _, code := runCLI(t, "agent", "--help")
	if code != exitOK {
		t.Fatalf("exit %d", code)
	}
	found := 0
	for _, line := range strings.Split(stdout, "\n") {
		switch {
		case strings.HasPrefix(strings.TrimSpace(line), "--node "):
			found++
			if strings.Contains(line, `(default "`) {
				t.Fatalf("--node shows a second default: %q", line)
			}
		case strings.HasPrefix(strings.TrimSpace(line), "--gossip-key "):
			found++
			if !strings.Contains(line, "--gossip-key string") || !strings.Contains(line, "'beacon keygen'") {
				t.Fatalf("--gossip-key help: %q", line)
			}
		}
	}
	if found != 2 {
		t.Fatalf("--node and --gossip-key not both in the help:\n%s", stdout)
	}
}

// TestAnAgentThatDoesNotAnswerGetsAHint: a paused or stuck agent (the
// connection accepted, no answer) is named as such, not left without a word.
func TestAnAgentThatDoesNotAnswerGetsAHint(t *testing.T) {
	err := &client.AttemptsError{Attempts: []client.Attempt{{Agent: "127.0.0.1:8750", Err: fmt.Errorf("%w (30s)", client.ErrAttemptTimeout)}}}
	if h := hintFor(err); !strings.Contains(h, "did not answer in time") {
		t.Fatalf("hint %q", h)
	}
}
