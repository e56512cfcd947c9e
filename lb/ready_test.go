package lb

import (
	"encoding/json"
	"net/http/httptest"
	"testing"
)

// A balancer limited to some services (beacon lb --service web) has no
// service list to read: /readyz answered 200 from the start, while every
// request got 503 not_ready because no table had been read (the registry
// unreachable). It is ready once every followed service's table is.
func TestReadyzWithServicesWaitsForTheirTables(t *testing.T) {
	cat := newMemCatalog()
	idx := cat.Set("web", startBackend(t, "web-1").backend())
	cat.SetDown(true)
	b, url := startBalancer(t, cat, func(c *Config) { c.Services = []string{"web", "api"} })
	adm := httptest.NewServer(b.AdminHandler())
	defer adm.Close()
	c := newClient(t)

	code, body, _ := get(t, c, adm.URL+"/readyz")
	var eb ErrorBody
	if code != 503 || json.Unmarshal([]byte(body), &eb) != nil || eb.Code != CodeNotReady {
		t.Fatalf("readyz before any table was read: %d %s, want 503 not_ready", code, body)
	}
	if code, body, _ := get(t, c, url+"/web/"); code != 503 || json.Unmarshal([]byte(body), &eb) != nil || eb.Code != CodeNotReady {
		t.Fatalf("a request before the table was read: %d %s, want 503 not_ready", code, body)
	}

	cat.SetDown(false)
	waitTable(t, b, "web", idx)
	eventually(t, func() bool {
		code, _, _ := get(t, c, adm.URL+"/readyz")
		return code == 200
	}, "readyz to answer 200 once both tables (web, and api, which has no instance) are read")
	if code, body, _ := get(t, c, url+"/web/"); code != 200 || body != "web-1" {
		t.Fatalf("after the tables were read: %d %s", code, body)
	}
}
