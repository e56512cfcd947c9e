package client

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"
)

// SnapshotContentType is the media type of a snapshot archive.
const SnapshotContentType = "application/vnd.beacon.snapshot"

// SnapshotInfo describes a snapshot archive (the JSON line at its start).
type SnapshotInfo struct {
	Format  int            `json:"format"`
	Index   uint64         `json:"index"`
	Node    string         `json:"node,omitempty"`
	Created time.Time      `json:"created"`
	Size    int64          `json:"size"`
	SHA256  string         `json:"sha256"`
	Counts  SnapshotCounts `json:"counts"`
}

// SnapshotCounts counts a snapshot's records by kind.
type SnapshotCounts struct {
	Services  int `json:"services"`
	Instances int `json:"instances"`
	Checks    int `json:"checks"`
	Nodes     int `json:"nodes"`
	Tokens    int `json:"tokens"`
}

// RestoreResult is the body of a successful PUT /v1/snapshot.
type RestoreResult struct {
	// Index is the catalog's index after the restore.
	Index    uint64       `json:"index"`
	Snapshot SnapshotInfo `json:"snapshot"`
}

// SaveSnapshot writes a snapshot archive of the whole catalog to w. With
// stale false the archive holds every write acknowledged before the call
// (the agent asks the leader for a read index first); with stale true the
// agent saves what it holds even without a leader. The returned meta's
// Index is the archive's index.
func (c *Client) SaveSnapshot(ctx context.Context, w io.Writer, stale bool) (*QueryMeta, error) {
	q := url.Values{}
	if stale {
		q.Set("stale", "true")
	}
	return c.call(longCall(ctx), http.MethodGet, "/v1/snapshot", q, nil, "", func(resp *http.Response, addr string) (*QueryMeta, error) {
		if resp.StatusCode >= 300 {
			return decodeResponse(resp, nil, addr)
		}
		defer resp.Body.Close()
		// The headers carry the index; the body is the archive, not JSON.
		meta, err := decodeResponse(&http.Response{StatusCode: resp.StatusCode, Header: resp.Header, Body: http.NoBody}, nil, addr)
		if err != nil {
			return meta, err
		}
		if _, err := io.Copy(w, resp.Body); err != nil {
			return meta, fmt.Errorf("client: read snapshot: %w", err)
		}
		return meta, nil
	})
}

// RestoreSnapshot uploads a snapshot archive; the cluster replaces every
// node's catalog with its content. A damaged or foreign archive is refused
// with a 400 (code bad_snapshot) before anything changes.
func (c *Client) RestoreSnapshot(ctx context.Context, archive []byte) (*RestoreResult, error) {
	var out RestoreResult
	_, err := c.call(longCall(ctx), http.MethodPut, "/v1/snapshot", url.Values{}, archive, SnapshotContentType, func(resp *http.Response, addr string) (*QueryMeta, error) {
		return decodeResponse(resp, &out, addr)
	})
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// ForceLeave marks a failed member as left and removes it from Raft.
func (c *Client) ForceLeave(ctx context.Context, node string) error {
	// "{}": see RemovePeer.
	_, err := c.do(ctx, http.MethodPost, "/v1/cluster/force-leave/"+url.PathEscape(node), url.Values{}, struct{}{}, nil)
	return err
}
