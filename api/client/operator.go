package client

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
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
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	q := url.Values{}
	if stale {
		q.Set("stale", "true")
	}
	resp, base, err := c.send(ctx, http.MethodGet, "/v1/snapshot", q, nil, "")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		meta, err := decodeResponse(resp, nil, base)
		meta.Agent = base
		return meta, err
	}
	// The headers carry the index; the body is the archive, not JSON.
	meta, err := decodeResponse(&http.Response{StatusCode: resp.StatusCode, Header: resp.Header, Body: http.NoBody}, nil, base)
	meta.Agent = base
	if err != nil {
		return meta, err
	}
	if _, err := io.Copy(w, resp.Body); err != nil {
		return meta, fmt.Errorf("client: read snapshot: %w", err)
	}
	return meta, nil
}

// RestoreSnapshot uploads a snapshot archive; the cluster replaces every
// node's catalog with its content. A damaged or foreign archive is refused
// with a 400 (code bad_snapshot) before anything changes.
func (c *Client) RestoreSnapshot(ctx context.Context, archive []byte) (*RestoreResult, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	resp, base, err := c.send(ctx, http.MethodPut, "/v1/snapshot", url.Values{}, archive, SnapshotContentType)
	if err != nil {
		return nil, err
	}
	var out RestoreResult
	meta, err := decodeResponse(resp, &out, base)
	if meta != nil {
		meta.Agent = base
	}
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// ForceLeave marks a failed member as left and removes it from Raft.
func (c *Client) ForceLeave(ctx context.Context, node string) error {
	_, err := c.do(ctx, http.MethodPost, "/v1/cluster/force-leave/"+url.PathEscape(node), url.Values{}, nil, nil)
	return err
}

// send is do for bodies and responses that are not JSON: it returns the
// response for the caller to read and close, and the agent that answered.
// Like do, it moves to the next agent when one cannot be reached, and for a
// write only when the request surely did not arrive.
func (c *Client) send(ctx context.Context, method, path string, q url.Values, body []byte, contentType string) (*http.Response, string, error) {
	write := method != http.MethodGet
	unreachable := &UnreachableError{}
	for attempt := 0; attempt < len(c.bases); attempt++ {
		i := int(c.cur.Load()) % len(c.bases)
		base := c.bases[i]
		u := *base
		u.Path = strings.TrimSuffix(base.Path, "/") + path
		u.RawQuery = q.Encode()
		var rd io.Reader
		if body != nil {
			rd = bytes.NewReader(body)
		}
		req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
		if err != nil {
			return nil, "", err
		}
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		if c.token != "" {
			req.Header.Set("Authorization", "Bearer "+c.token)
		}
		resp, err := c.hc.Do(req)
		if err != nil {
			unreachable.Addrs, unreachable.Errs = append(unreachable.Addrs, base.Host), append(unreachable.Errs, err)
			if ctx.Err() != nil || (write && !refused(err)) {
				return nil, "", err
			}
			c.cur.CompareAndSwap(int32(i), int32((i+1)%len(c.bases)))
			continue
		}
		return resp, base.Host, nil
	}
	return nil, "", unreachable
}
