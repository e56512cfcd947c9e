package api

import (
	"net/http"
	"testing"

	"github.com/beaconhq/beacon/api/client"
)

// A node that acknowledged a write it has not applied answers its reads
// only once it has; past the wait, 503 not_caught_up, never a read without
// the write. Registrations (forward-only) do not wait.
func TestRequestsWaitForAcknowledgedWritesOrFail(t *testing.T) {
	ts := newTestServer(t)
	idx := ts.register("web", "web-1", client.Registration{Address: "10.0.0.1", Port: 8080})
	ts.cl.Store().NoteAcked(idx + 1000) // acknowledged, never applied here
	r := ts.do(http.MethodGet, "/v1/services/web/instances", nil)
	assertError(t, r, http.StatusServiceUnavailable, "not_caught_up", "")
	if r := ts.do(http.MethodPut, "/v1/services/web/instances/web-2", []byte(`{"address":"10.0.0.2","port":80}`)); r.status != http.StatusOK {
		t.Fatalf("a registration waited for the acknowledged write: %s", r)
	}
}
