package agent_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/beaconhq/beacon/agent/agenttest"
	"github.com/beaconhq/beacon/api/client"
)

// TestDeletingAnUnknownTokenIsNotFoundAndRevokesNothing: a mistyped
// accessor gets 404 not_found, through a follower too, with no audit line;
// the real token stays valid. Of two concurrent deletes of one token, one
// deletes it and the other is told it found nothing (the FSM decides, at
// apply).
func TestDeletingAnUnknownTokenIsNotFoundAndRevokesNothing(t *testing.T) {
	logs := &logCapture{}
	c := agenttest.New(t, 3, withAuth(true), withToken(testManagementToken), agenttest.WithLogWriter(logs))
	c.WaitForVoters(3)
	f := c.Follower()
	tok := createToken(t, c.Client(f), client.TokenRequest{Policy: "write", Prefixes: []string{"web"}})
	typo := tok.Accessor[:len(tok.Accessor)-1] + map[bool]string{true: "0", false: "1"}[strings.HasSuffix(tok.Accessor, "1")]
	base := "http://" + c.Node(f).HTTPAddr()
	r := retryRaw503(t, func() rawResult {
		return rawDo(t, nil, http.MethodDelete, base+"/v1/tokens/"+typo, testManagementToken, "")
	})
	if r.status != http.StatusNotFound || r.err.Code != "not_found" || !strings.Contains(r.err.Error, "no such token") {
		t.Fatalf("delete of an unknown accessor: %d %s, want 404 not_found", r.status, r.body)
	}
	// The real token still works, everywhere.
	for i := range c.Nodes() {
		r := retryRaw503(t, func() rawResult {
			return rawDo(t, nil, http.MethodPut, "http://"+c.Node(i).HTTPAddr()+"/v1/services/web/instances/w-1", tok.Secret, `{"address":"10.0.0.9","port":443}`)
		})
		if r.status != http.StatusOK {
			t.Fatalf("node %d: the real token after a mistyped delete: %d %s", i, r.status, r.body)
		}
	}
	if n := len(logs.lines("audit: write accepted", "op=token-delete")); n != 0 {
		t.Fatalf("%d audit lines for a delete that deleted nothing:\n%s", n, strings.Join(logs.lines("op=token-delete"), "\n"))
	}

	// Two deletes of the same token at once: one 200, one 404.
	var wg sync.WaitGroup
	codes := make([]int, 2)
	for i := range codes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			codes[i] = rawDoQuiet(http.MethodDelete, "http://"+c.Node((f+i)%3).HTTPAddr()+"/v1/tokens/"+tok.Accessor, testManagementToken)
		}()
	}
	wg.Wait()
	if !(codes[0] == http.StatusOK && codes[1] == http.StatusNotFound) && !(codes[0] == http.StatusNotFound && codes[1] == http.StatusOK) {
		t.Fatalf("two concurrent deletes of one token answered %v, want one 200 and one 404", codes)
	}
	agenttest.Eventually(t, 10*time.Second, func() bool {
		return len(logs.lines("audit: write accepted", "op=token-delete", "token="+tok.Accessor)) == 1
	}, "one audit line for the one delete that deleted")
}

// rawDoQuiet sends a bodiless request with the token and returns its
// status (0 when it failed), retrying while there is no leader (an
// election; nothing was applied then, unlike unknown_outcome).
func rawDoQuiet(method, url, tok string) int {
	deadline := time.Now().Add(30 * time.Second)
	for {
		req, _ := http.NewRequest(method, url, nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0
		}
		var eb client.ErrorBody
		_ = json.NewDecoder(resp.Body).Decode(&eb)
		resp.Body.Close()
		if (eb.Code != "no_leader" && eb.Code != "not_leader") || time.Now().After(deadline) {
			return resp.StatusCode
		}
		time.Sleep(50 * time.Millisecond)
	}
}
