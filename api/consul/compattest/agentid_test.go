package compattest

import (
	"bytes"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	consulapi "github.com/hashicorp/consul/api"

	"github.com/beaconhq/beacon/agent"
	"github.com/beaconhq/beacon/agent/agenttest"
	"github.com/beaconhq/beacon/api/client"
)

// logCapture keeps every agent's log lines (agenttest.WithLogWriter).
type logCapture struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logCapture) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// lines are the lines that contain every one of substr.
func (l *logCapture) lines(substr ...string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, line := range strings.Split(l.buf.String(), "\n") {
		match := true
		for _, s := range substr {
			match = match && strings.Contains(line, s)
		}
		if match {
			out = append(out, line)
		}
	}
	return out
}

const rootToken = "root-secret-0123456789"

// TestConsulClientRenameTTLAndAuditAcrossAgents drives, with the real
// Consul client against a 3-node cluster with tokens, what QA found apart
// from Consul: a rename by re-registering a service ID, a TTL update by a
// custom CheckID through agents other than the registering one, a
// re-registration without checks, and the audit log's accessor for writes
// authorized by X-Consul-Token or Bearer.
func TestConsulClientRenameTTLAndAuditAcrossAgents(t *testing.T) {
	logs := &logCapture{}
	c := agenttest.New(t, 3, agenttest.WithConfig(func(cfg *agent.Config) {
		cfg.ManagementToken = rootToken
		cfg.AnonymousRead = false
	}), agenttest.WithClient(func(cc *client.Config) { cc.Token = rootToken }), agenttest.WithLogWriter(logs))
	clients := []*consulapi.Client{consulClient(t, c, 0, rootToken), consulClient(t, c, 1, rootToken), consulClient(t, c, 2, rootToken)}
	cl := clients[0]

	t.Run("re-registering an ID under a new name replaces it", func(t *testing.T) {
		for _, name := range []string{"old-name", "new-name"} {
			if err := cl.Agent().ServiceRegister(&consulapi.AgentServiceRegistration{ID: "r-1", Name: name, Port: 40910, Address: "127.0.0.1",
				Check: &consulapi.AgentServiceCheck{TTL: "60s", Status: "passing"}}); err != nil {
				t.Fatal(err)
			}
		}
		waitFor(t, "only new-name in node3's catalog", func() bool {
			svcs, _, err := clients[2].Catalog().Services(nil)
			_, old := svcs["old-name"]
			_, cur := svcs["new-name"]
			return err == nil && cur && !old
		})
		svcs, err := cl.Agent().Services()
		if err != nil || svcs["r-1"] == nil || svcs["r-1"].Service != "new-name" {
			t.Fatalf("agent services: %+v %v", svcs, err)
		}
		if err := cl.Agent().ServiceDeregister("r-1"); err != nil {
			t.Fatal(err)
		}
		svcs, err = cl.Agent().Services()
		if err != nil || len(svcs) != 0 {
			t.Fatalf("agent services after the deregistration: %+v %v", svcs, err)
		}
	})

	t.Run("a custom CheckID's TTL through every agent", func(t *testing.T) {
		if err := cl.Agent().ServiceRegister(&consulapi.AgentServiceRegistration{ID: "c-1", Name: "cttl", Port: 40980, Address: "127.0.0.1",
			Checks: consulapi.AgentServiceChecks{{CheckID: "c-1-ttl", TTL: "60s"}}}); err != nil {
			t.Fatal(err)
		}
		// Each agent answers the update (the bug: a 404 from all but
		// node1). Passes only: alternating statuses would make it flap.
		for i, other := range clients {
			agenttest.Retry503(t, "TTL update", func() error {
				return other.Agent().UpdateTTL("c-1-ttl", "beat", consulapi.HealthPassing)
			})
			if s := statusOf(t, other, "cttl", "c-1-ttl"); s != consulapi.HealthPassing {
				t.Fatalf("after a pass through node%d: %q", i+1, s)
			}
		}
	})

	t.Run("a TTL check registered through one agent is reported through another at once", func(t *testing.T) {
		// The other agent may not have applied the registration when the
		// report reaches it: it catches up with the leader before a 404.
		for i := range 10 {
			id := fmt.Sprintf("q-%d", i)
			if err := cl.Agent().ServiceRegister(&consulapi.AgentServiceRegistration{ID: id, Name: "quick", Port: 40990 + i, Address: "127.0.0.1",
				Checks: consulapi.AgentServiceChecks{{CheckID: id + "-ttl", TTL: "60s"}}}); err != nil {
				t.Fatal(err)
			}
			other := clients[1+i%2]
			agenttest.Retry503(t, "TTL update", func() error {
				return other.Agent().UpdateTTL(id+"-ttl", "up", consulapi.HealthPassing)
			})
		}
	})

	t.Run("a re-registration without checks keeps them", func(t *testing.T) {
		if err := cl.Agent().ServiceRegister(&consulapi.AgentServiceRegistration{ID: "c-1", Name: "cttl", Port: 40980, Address: "127.0.0.1",
			Tags: []string{"v2"}}); err != nil {
			t.Fatal(err)
		}
		if s := statusOf(t, cl, "cttl", "c-1-ttl"); s != consulapi.HealthPassing {
			t.Fatalf("check c-1-ttl after re-registering without it: %q, want passing (kept; a new one starts critical)", s)
		}
		if err := cl.Agent().ServiceRegisterOpts(&consulapi.AgentServiceRegistration{ID: "c-1", Name: "cttl", Port: 40980, Address: "127.0.0.1",
			Tags: []string{"v3"}}, consulapi.ServiceRegisterOpts{ReplaceExistingChecks: true}); err != nil {
			t.Fatal(err)
		}
		if s := statusOf(t, cl, "cttl", "c-1-ttl"); s != "" {
			t.Fatalf("check c-1-ttl after replace-existing-checks: %q, want gone", s)
		}
	})

	t.Run("writes are audited with the accessor of X-Consul-Token or Bearer", func(t *testing.T) {
		waitFor(t, "the rename's audit lines", func() bool {
			return len(logs.lines("audit: write accepted", "op=register", "instance=r-1", "accessor=management")) == 2 &&
				len(logs.lines("audit: write accepted", "op=deregister", "instance=r-1", "accessor=management")) >= 1
		})
		req, err := http.NewRequest(http.MethodPut, "http://"+c.Node(1).HTTPAddr()+"/v1/agent/service/maintenance/c-1?enable=true&reason=bearer", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+rootToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("maintenance with Bearer: %s", resp.Status)
		}
		waitFor(t, "the maintenance's audit line", func() bool {
			return len(logs.lines("audit: write accepted", "op=maintenance", "instance=c-1", "accessor=management")) == 1
		})
		if l := logs.lines("audit: write accepted", "accessor=anonymous"); len(l) != 0 {
			t.Fatalf("writes audited as anonymous:\n%s", strings.Join(l, "\n"))
		}
	})
}
