package agent_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/beaconhq/beacon/agent/agenttest"
	"github.com/beaconhq/beacon/api/client"
)

// TestParkedQueriesOfADeletedTokenAnswer403 (docs/security.md, "The
// management token and auth"): a blocking query parked with a token that is
// deleted while it waits answers 403 invalid_token when it wakes, on the
// Beacon API, the web UI's watch and the Consul API, and never the data
// written after the deletion.
func TestParkedQueriesOfADeletedTokenAnswer403(t *testing.T) {
	c := agenttest.New(t, 1, withAuth(false), withToken(testManagementToken))
	agenttest.Register(t, c.Client(0), "web", "web-0", &client.Registration{Address: "10.0.0.1", Port: 80})
	n := c.Node(0)
	base := "http://" + n.HTTPAddr()
	get := func(path, header, tok string) (*http.Response, []byte) {
		req, err := http.NewRequest(http.MethodGet, base+path, nil)
		if err != nil {
			t.Error(err)
			return nil, nil
		}
		req.Header.Set(header, tok)
		resp, err := (&http.Client{Timeout: 2 * time.Minute}).Do(req)
		if err != nil {
			t.Error(err)
			return nil, nil
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, b
	}
	paths := []struct {
		name, path, header, index string
	}{
		{"Beacon API", "/v1/services/web/instances", "X-Beacon-Token", "X-Beacon-Index"},
		{"web UI watch", "/v1/ui/watch", "X-Beacon-Token", "X-Beacon-Index"},
		{"Consul API", "/v1/health/service/web", "X-Consul-Token", "X-Consul-Index"},
	}
	for i, p := range paths {
		t.Run(p.name, func(t *testing.T) {
			tok := createToken(t, c.Client(0), client.TokenRequest{Policy: "read", Description: "parked"})
			resp, body := get(p.path, p.header, tok.Secret)
			if resp == nil || resp.StatusCode != http.StatusOK {
				t.Fatalf("first read: %v %s", resp, body)
			}
			idx := resp.Header.Get(p.index)
			parked := n.Agent.API().BlockingStats().Parked
			type answer struct {
				status int
				body   []byte
			}
			done := make(chan answer, 1)
			go func() {
				resp, body := get(fmt.Sprintf("%s?index=%s&wait=60s", p.path, idx), p.header, tok.Secret)
				if resp == nil {
					done <- answer{}
					return
				}
				done <- answer{resp.StatusCode, body}
			}()
			agenttest.Eventually(t, 30*time.Second, func() bool { return n.Agent.API().BlockingStats().Parked > parked }, "the query to park")
			agenttest.Retry503(t, "delete the token", func() error {
				_, err := c.Client(0).DeleteToken(context.Background(), tok.Accessor)
				return err
			})
			// A write after the deletion, which the query watches.
			agenttest.Register(t, c.Client(0), "web", fmt.Sprintf("web-after-%d", i+1), &client.Registration{Address: "10.0.0.2", Port: 80})
			select {
			case a := <-done:
				var e client.ErrorBody
				_ = json.Unmarshal(a.body, &e)
				if a.status != http.StatusForbidden || e.Code != "invalid_token" {
					t.Fatalf("got %d %s, want 403 invalid_token", a.status, a.body)
				}
			case <-time.After(90 * time.Second):
				t.Fatal("the parked query did not answer")
			}
		})
	}
}
