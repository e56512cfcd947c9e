package compattest

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/beaconhq/beacon/agent/agenttest"
)

// springClient replays a Spring Cloud Consul application's requests over
// plain HTTP, as its documentation and ConsulServiceRegistry /
// TtlScheduler / ConsulCatalogWatch send them (spring.cloud.consul.
// discovery.heartbeat.enabled=true): register with a TTL check, heartbeat
// PUT /v1/agent/check/pass/service:<instance-id>, re-register when the
// heartbeat answers 404, watch /v1/catalog/services with blocking queries,
// discover with /v1/health/service/<name>?passing=true, deregister on
// shutdown.
type springClient struct {
	t    testing.TB
	base string
	hc   *http.Client
}

func (s *springClient) do(method, path, body string) (int, http.Header, []byte) {
	s.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, s.base+path, rd)
	if err != nil {
		s.t.Fatal(err)
	}
	if body != "" {
		// What Spring's RestTemplate-based Consul client sends.
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := s.hc.Do(req)
	if err != nil {
		s.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

const springRegistration = `{"ID":"orders-8080","Name":"orders","Tags":["secure=false"],"Address":"127.0.0.1","Port":8080,
 "Meta":{"secure":"false","zone":"a"},
 "Check":{"TTL":"30s","DeregisterCriticalServiceAfter":"1m","Status":"passing"}}`

func TestSpringCloudConsulHeartbeatSequence(t *testing.T) {
	c := agenttest.New(t, 3)
	app := &springClient{t: t, base: "http://" + c.Node(0).HTTPAddr(), hc: &http.Client{Timeout: 30 * time.Second}}
	peer := &springClient{t: t, base: "http://" + c.Node(1).HTTPAddr(), hc: &http.Client{Timeout: 30 * time.Second}}

	// Startup: register.
	if code, _, b := app.do(http.MethodPut, "/v1/agent/service/register", springRegistration); code != 200 {
		t.Fatalf("register: %d %s", code, b)
	}
	// Another application watches the catalog and discovers passing instances.
	_, h, _ := peer.do(http.MethodGet, "/v1/catalog/services?wait=1s", "")
	index := h.Get("X-Consul-Index")
	discover := func() []string {
		code, _, b := peer.do(http.MethodGet, "/v1/health/service/orders?passing=true", "")
		if code != 200 {
			t.Fatalf("discover: %d %s", code, b)
		}
		var entries []struct {
			Service struct {
				ID      string
				Address string
				Port    int
			}
		}
		if err := json.Unmarshal(b, &entries); err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, e := range entries {
			ids = append(ids, e.Service.ID)
		}
		return ids
	}
	agenttest.Eventually(t, 10*time.Second, func() bool { return len(discover()) == 1 }, "orders discovered")

	// Heartbeats.
	for i := 0; i < 3; i++ {
		if code, _, b := app.do(http.MethodPut, "/v1/agent/check/pass/service:orders-8080", ""); code != 200 {
			t.Fatalf("heartbeat %d: %d %s", i, code, b)
		}
	}
	// The instance disappears (say, an operator removed it): the heartbeat
	// answers 404 and Spring re-registers.
	if code, _, b := peer.do(http.MethodPut, "/v1/agent/service/deregister/orders-8080", ""); code != 200 {
		t.Fatalf("deregister elsewhere: %d %s", code, b)
	}
	code, _, _ := app.do(http.MethodPut, "/v1/agent/check/pass/service:orders-8080", "")
	if code != 404 {
		t.Fatalf("heartbeat of a removed instance: %d, want 404", code)
	}
	if code, _, b := app.do(http.MethodPut, "/v1/agent/service/register", springRegistration); code != 200 {
		t.Fatalf("re-register: %d %s", code, b)
	}
	if code, _, b := app.do(http.MethodPut, "/v1/agent/check/pass/service:orders-8080", ""); code != 200 {
		t.Fatalf("heartbeat after re-register: %d %s", code, b)
	}
	// The catalog watch (blocking, as ConsulCatalogWatch) follows the
	// changes until it shows the service back (this node may show the
	// removal first, or both at once).
	for deadline := time.Now().Add(15 * time.Second); ; {
		code, h, b := peer.do(http.MethodGet, "/v1/catalog/services?wait=5s&index="+url.QueryEscape(index), "")
		if code != 200 {
			t.Fatalf("catalog watch: %d %s", code, b)
		}
		next := h.Get("X-Consul-Index")
		if next == index {
			t.Fatalf("catalog watch timed out at index %s", index)
		}
		index = next
		if strings.Contains(string(b), `"orders"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("catalog watch never showed orders back: %s", b)
		}
	}
	agenttest.Eventually(t, 10*time.Second, func() bool { return len(discover()) == 1 }, "orders rediscovered")

	// Shutdown: deregister.
	if code, _, b := app.do(http.MethodPut, "/v1/agent/service/deregister/orders-8080", ""); code != 200 {
		t.Fatalf("deregister: %d %s", code, b)
	}
	agenttest.Eventually(t, 10*time.Second, func() bool { return len(discover()) == 0 }, "orders gone")
}
