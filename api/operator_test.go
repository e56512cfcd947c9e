package api

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/beaconhq/beacon/api/client"
	"github.com/beaconhq/beacon/fsm"
)

func TestSnapshotSaveReturnsAnArchiveOfTheCatalogAfterAConsistentRead(t *testing.T) {
	ts := newTestServer(t)
	ts.register("web", "web-1", client.Registration{Address: "10.0.0.1", Port: 80})
	idx := ts.register("web", "web-2", client.Registration{Address: "10.0.0.2", Port: 80})

	before := ts.cl.ConsistentReads()
	r := ts.do(http.MethodGet, "/v1/snapshot", nil)
	if r.status != http.StatusOK || r.header.Get("Content-Type") != client.SnapshotContentType {
		t.Fatalf("GET /v1/snapshot: %s (%s)", r, r.header.Get("Content-Type"))
	}
	if ts.cl.ConsistentReads() != before+1 {
		t.Fatal("the save did not get a read index first")
	}
	if r.header.Get(HeaderIndex) != fmt.Sprint(idx) || r.header.Get("Content-Length") != fmt.Sprint(len(r.body)) ||
		!strings.Contains(r.header.Get("Content-Disposition"), fmt.Sprintf("beacon-%d.snap", idx)) {
		t.Fatalf("headers %v", r.header)
	}
	ar, err := fsm.ReadArchive(bytes.NewReader(r.body), 0)
	if err != nil {
		t.Fatal(err)
	}
	if c, _ := ar.Counts(); c.Instances != 2 || c.Services != 1 || ar.Info.Index != idx || ar.Info.Node != "apitest" {
		t.Fatalf("archive %+v with %+v", ar.Info, c)
	}

	t.Run("stale skips the read index", func(t *testing.T) {
		before := ts.cl.ConsistentReads()
		if r := ts.do(http.MethodGet, "/v1/snapshot?stale", nil); r.status != http.StatusOK {
			t.Fatalf("GET ?stale: %s", r)
		}
		if ts.cl.ConsistentReads() != before {
			t.Fatal("?stale asked for a read index")
		}
	})
	t.Run("a bad stale value is a 400 naming the parameter", func(t *testing.T) {
		assertError(t, ts.do(http.MethodGet, "/v1/snapshot?stale=maybe", nil), 400, "invalid", "stale")
	})
}

func TestSnapshotRestoreReplacesTheCatalogAndRefusesBadArchives(t *testing.T) {
	ts := newTestServer(t, func(c *Config) { c.MaxSnapshotBytes = 4096 })
	ts.register("web", "web-1", client.Registration{Address: "10.0.0.1", Port: 80})
	saved := ts.do(http.MethodGet, "/v1/snapshot", nil).body
	ts.register("api", "api-1", client.Registration{Address: "10.0.0.3", Port: 80})
	before := snapshotCatalog(ts.cl.Store())

	truncated := saved[:len(saved)-1]
	altered := bytes.Clone(saved)
	altered[len(altered)-3] ^= 0x10
	cases := []struct {
		name   string
		body   []byte
		status int
		code   string
		says   string
	}{
		{"a truncated archive", truncated, 400, "bad_snapshot", "truncated"},
		{"an altered archive", altered, 400, "bad_snapshot", "checksum mismatch"},
		{"a JSON body", []byte(`{"instances": []}`), 400, "bad_snapshot", "not a beacon snapshot"},
		{"an empty body", nil, 400, "bad_snapshot", "empty"},
		{"a body above MaxSnapshotBytes", append(bytes.Clone(saved), make([]byte, 4096)...), 413, "too_large", "too large"},
	}
	for _, tc := range cases {
		t.Run(tc.name+" is refused and changes nothing", func(t *testing.T) {
			r := ts.do(http.MethodPut, "/v1/snapshot", tc.body)
			assertError(t, r, tc.status, tc.code, "")
			if !strings.Contains(string(r.body), tc.says) {
				t.Fatalf("%s does not say %q", r, tc.says)
			}
			ts.assertUnchanged(before)
		})
	}

	r := ts.do(http.MethodPut, "/v1/snapshot", saved)
	if r.status != http.StatusOK {
		t.Fatalf("restore: %s", r)
	}
	var res client.RestoreResult
	decodeStrict(t, r.body, &res)
	if res.Index <= before.LastIndex || res.Snapshot.Counts.Instances != 1 || res.Snapshot.SHA256 == "" {
		t.Fatalf("restore result %+v", res)
	}
	if _, insts := ts.cl.Store().Instances(nil); len(insts) != 1 || insts[0].ID != "web-1" {
		t.Fatalf("instances after the restore: %v", insts)
	}
}

func TestForceLeaveValidatesTheNameAndMapsTheClusterErrors(t *testing.T) {
	ts := newTestServer(t)
	r := ts.do(http.MethodPost, "/v1/cluster/force-leave/n3", nil)
	if r.status != http.StatusOK || ts.cl.ForcedOut()[0] != "n3" {
		t.Fatalf("force-leave n3: %s, forced %v", r, ts.cl.ForcedOut())
	}
	assertError(t, ts.do(http.MethodPost, "/v1/cluster/force-leave/-bad", nil), 400, "invalid", "node")
	for _, tc := range []struct {
		err    error
		status int
		code   string
	}{
		{&fsm.RejectError{Kind: fsm.ErrNotFound, Msg: "no member"}, 404, "not_found"},
		{&fsm.RejectError{Kind: fsm.ErrConflict, Msg: "alive"}, 409, "conflict"},
		{errors.New("boom"), 500, "internal"},
	} {
		ts.cl.SetForceLeaveError(tc.err)
		assertError(t, ts.do(http.MethodPost, "/v1/cluster/force-leave/n3", nil), tc.status, tc.code, "")
	}
	if n := len(ts.cl.ForcedOut()); n != 4 {
		t.Fatalf("ForceLeave called %d times, want 4 (the invalid name never reaches it)", n)
	}
}
