package client

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Config configures a Client.
type Config struct {
	// Addresses of Beacon agents' HTTP APIs: "host:port" or a URL such as
	// "https://host:port". The client uses one at a time and moves to the
	// next when it cannot reach it, except for the calls addressed to one
	// agent (Join, Leave), which go to the first alone.
	Addresses []string
	// Token is sent as "Authorization: Bearer" when set.
	Token string
	// TLS, when set, makes the client's own transport speak HTTPS with it;
	// addresses without a scheme then mean https://.
	TLS *tls.Config
	// HTTPClient replaces the client's own HTTP client (TLS is then
	// ignored). Its transport should wait for "100 Continue" at least
	// AttemptTimeout (http.Transport.ExpectContinueTimeout), or a write to
	// an agent that hangs is not retried elsewhere (failover.go).
	HTTPClient *http.Client
	// Timeout bounds a whole call, every attempt included (default 30s).
	// A blocking query's first attempt is bounded by its wait plus this
	// timeout; when it fails, the rest of the call is a plain read (no
	// wait) bounded by this timeout again (failover.go).
	Timeout time.Duration
	// AttemptTimeout bounds one attempt on one agent, from connecting to
	// the response headers (default 2s), when there is more than one agent;
	// a blocking query's attempt is its wait plus this. When it runs out the
	// next agent is tried (a write only when it was surely not sent), so a
	// hung agent costs one attempt.
	AttemptTimeout time.Duration
}

// Client talks to a Beacon cluster's HTTP API. It is safe for concurrent use.
type Client struct {
	bases   []*url.URL
	cur     atomic.Int32
	hc      *http.Client
	token   string
	timeout time.Duration
	attempt time.Duration
}

// New returns a Client for the given agents.
func New(cfg Config) (*Client, error) {
	if len(cfg.Addresses) == 0 {
		return nil, errors.New("client: no agent address")
	}
	c := &Client{hc: cfg.HTTPClient, token: cfg.Token, timeout: cfg.Timeout, attempt: cfg.AttemptTimeout}
	if c.timeout <= 0 {
		c.timeout = 30 * time.Second
	}
	if c.attempt <= 0 {
		c.attempt = DefaultAttemptTimeout
	}
	scheme := "http://"
	if c.hc == nil {
		c.hc = &http.Client{Transport: NewTransport(cfg.TLS, c.attempt)}
		if cfg.TLS != nil {
			scheme = "https://"
		}
	}
	for _, a := range cfg.Addresses {
		if !strings.Contains(a, "://") {
			a = scheme + a
		}
		u, err := url.Parse(a)
		if err != nil || u.Host == "" {
			return nil, fmt.Errorf("client: bad agent address %q", a)
		}
		c.bases = append(c.bases, u)
	}
	c.cur.Store(int32(rand.N(len(c.bases))))
	return c, nil
}

// Error is an error answered by an agent, with the HTTP status and the
// body's code and field.
type Error struct {
	Status int
	ErrorBody
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s (HTTP %d, %s)", e.ErrorBody.Error, e.Status, e.Code)
}

// IsNotFound reports whether err is an agent's 404.
func IsNotFound(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Status == http.StatusNotFound
}

// QueryOptions are the filters, consistency mode and blocking parameters of
// a read. The zero value reads from the agent's local state without filters.
type QueryOptions struct {
	Healthy bool
	Tags    []string
	Meta    map[string]string
	// Version is an exact version or a semver range such as ">=1.2.0 <2.0.0".
	Version string
	// Consistent makes the read linearizable.
	Consistent bool
	// MaxStale bounds how stale a local answer may be.
	MaxStale time.Duration
	// WaitIndex blocks until the result's index differs from it, up to
	// WaitTime. A read that fails over to another agent answers without
	// waiting (failover.go), possibly with the same index.
	WaitIndex uint64
	WaitTime  time.Duration
	// Limit and Cursor page through Services, Instances and Checks (the
	// next page's cursor is ServiceList.NextCursor or QueryMeta.NextCursor);
	// Prefix filters Services.
	Prefix string
	Limit  int
	Cursor string
}

func (q *QueryOptions) values() url.Values {
	v := url.Values{}
	if q == nil {
		return v
	}
	if q.Healthy {
		v.Set("healthy", "true")
	}
	for _, t := range q.Tags {
		v.Add("tag", t)
	}
	for k, m := range q.Meta {
		v.Add("meta", k+":"+m)
	}
	if q.Version != "" {
		v.Set("version", q.Version)
	}
	if q.Consistent {
		v.Set("consistent", "true")
	}
	if q.MaxStale > 0 {
		v.Set("max_stale", q.MaxStale.String())
	}
	if q.WaitIndex > 0 {
		v.Set("index", strconv.FormatUint(q.WaitIndex, 10))
	}
	if q.WaitTime > 0 {
		v.Set("wait", q.WaitTime.String())
	}
	if q.Prefix != "" {
		v.Set("prefix", q.Prefix)
	}
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	if q.Cursor != "" {
		v.Set("cursor", q.Cursor)
	}
	return v
}

// QueryMeta describes the answer to a read.
type QueryMeta struct {
	// Index is the result's index; pass it as WaitIndex to block for a change.
	Index       uint64
	KnownLeader bool
	// LastContact is how long before the answer the agent heard from the
	// leader (-1 if never).
	LastContact time.Duration
	// Agent is the address of the agent that answered.
	Agent string
	// NextCursor is the Cursor of the next page of an instance or check
	// list read with a Limit ("" on the last page).
	NextCursor string
}

func decodeResponse(resp *http.Response, out any, addr string) (*QueryMeta, error) {
	defer resp.Body.Close()
	meta := &QueryMeta{}
	meta.Index, _ = strconv.ParseUint(resp.Header.Get("X-Beacon-Index"), 10, 64)
	meta.KnownLeader = resp.Header.Get("X-Beacon-Known-Leader") == "true"
	meta.NextCursor = resp.Header.Get("X-Beacon-Next-Cursor")
	if ms, err := strconv.ParseInt(resp.Header.Get("X-Beacon-Last-Contact"), 10, 64); err == nil {
		meta.LastContact = time.Duration(ms) * time.Millisecond
		if ms < 0 {
			meta.LastContact = -1
		}
	}
	if resp.StatusCode >= 300 {
		e := &Error{Status: resp.StatusCode}
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		if !fromAgent(resp) {
			return meta, notAgent(addr, resp, b)
		}
		if json.Unmarshal(b, &e.ErrorBody) != nil || e.ErrorBody.Error == "" {
			e.ErrorBody = ErrorBody{Error: strings.TrimSpace(string(b)), Code: "http_" + strconv.Itoa(resp.StatusCode)}
		}
		return meta, e
	}
	if !fromAgent(resp) {
		return meta, notAgent(addr, resp, nil)
	}
	if out == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		return meta, nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return meta, fmt.Errorf("client: decode response: %w", err)
	}
	return meta, nil
}

func instancePath(service, id string) string {
	return "/v1/services/" + url.PathEscape(service) + "/instances/" + url.PathEscape(id)
}

// Register registers (or updates) instance id of service and returns the
// index it was committed at.
func (c *Client) Register(ctx context.Context, service, id string, r *Registration) (uint64, error) {
	var res WriteResult
	_, err := c.do(ctx, http.MethodPut, instancePath(service, id), url.Values{}, r, &res)
	return res.Index, err
}

// Deregister removes instance id of service. It sends the body "{}" so
// that, with several agents, the request carries "Expect: 100-continue" and
// can safely move past an agent that hangs before asking for it (the agent
// reads the body before applying anything; see failover.go).
func (c *Client) Deregister(ctx context.Context, service, id string) (uint64, error) {
	var res WriteResult
	_, err := c.do(ctx, http.MethodDelete, instancePath(service, id), url.Values{}, struct{}{}, &res)
	return res.Index, err
}

// Instances discovers the instances of service that pass q's filters.
func (c *Client) Instances(ctx context.Context, service string, q *QueryOptions) ([]Instance, *QueryMeta, error) {
	var out []Instance
	meta, err := c.do(ctx, http.MethodGet, "/v1/services/"+url.PathEscape(service)+"/instances", q.values(), nil, &out)
	return out, meta, err
}

// Instance reads one instance with its checks and recent transitions.
func (c *Client) Instance(ctx context.Context, service, id string, q *QueryOptions) (*Instance, *QueryMeta, error) {
	var out Instance
	meta, err := c.do(ctx, http.MethodGet, instancePath(service, id), q.values(), nil, &out)
	if err != nil {
		return nil, meta, err
	}
	return &out, meta, nil
}

// Services lists services with their instance counts by health.
func (c *Client) Services(ctx context.Context, q *QueryOptions) (*ServiceList, *QueryMeta, error) {
	var out ServiceList
	meta, err := c.do(ctx, http.MethodGet, "/v1/services", q.values(), nil, &out)
	if err != nil {
		return nil, meta, err
	}
	return &out, meta, nil
}

// Status returns the answering agent's view of Raft.
func (c *Client) Status(ctx context.Context) (*ClusterStatus, error) {
	var out ClusterStatus
	if _, err := c.do(ctx, http.MethodGet, "/v1/cluster/status", url.Values{}, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ServersWait is how long an agent waits for each server's answer to
// GET /v1/cluster/servers (cluster.DefaultServerViewTimeout).
const ServersWait = 2 * time.Second

// Servers asks the agent for every Raft server's own view of Raft; the
// agent waits up to ServersWait for each, so each attempt may take that
// much longer than AttemptTimeout.
func (c *Client) Servers(ctx context.Context) (*ClusterServers, error) {
	var out ClusterServers
	if _, err := c.do(withWork(ctx, ServersWait), http.MethodGet, "/v1/cluster/servers", url.Values{}, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Members lists the cluster members gossip knows.
func (c *Client) Members(ctx context.Context) ([]Member, error) {
	var out []Member
	_, err := c.do(ctx, http.MethodGet, "/v1/cluster/members", url.Values{}, nil, &out)
	return out, err
}

// First returns the address of the client's first agent
// (Config.Addresses[0]): the one that calls addressed to one agent (Join,
// Leave) go to.
func (c *Client) First() string { return c.bases[0].Host }

// first returns a client for the first agent alone, with c's settings. Its
// calls go to that agent and to no other, whatever happens: for calls
// addressed to one agent rather than to the cluster, which another agent
// would carry out on itself.
func (c *Client) first() *Client {
	if len(c.bases) == 1 {
		return c
	}
	return &Client{bases: c.bases[:1], hc: c.hc, token: c.token, timeout: c.timeout, attempt: c.attempt}
}

// Join asks the first agent (First) to join the gossip peers at addrs. It
// is sent to that agent alone, never to another one.
func (c *Client) Join(ctx context.Context, addrs []string) (int, error) {
	var out JoinResult
	_, err := c.first().do(longCall(ctx), http.MethodPost, "/v1/cluster/join", url.Values{}, JoinRequest{Addresses: addrs}, &out)
	return out.Joined, err
}

// Leave asks the first agent (First) to leave the cluster gracefully and
// shut down. It is sent to that agent alone: never to another one, not even
// when the first cannot be reached (the call fails), since another agent
// would leave in its place and could take the cluster's quorum with it.
func (c *Client) Leave(ctx context.Context) (*LeaveResult, error) {
	var out LeaveResult
	meta, err := c.first().do(longCall(ctx), http.MethodPost, "/v1/cluster/leave", url.Values{}, nil, &out)
	if err != nil {
		return nil, err
	}
	out.Agent = meta.Agent
	return &out, nil
}

// RemovePeer removes a server from the Raft configuration by its ID, taken
// as it is (a name that breaks the rule of node names is accepted, unless
// it holds control characters: see RemovePeerByAddress).
func (c *Client) RemovePeer(ctx context.Context, id string) error {
	// "{}" so that, with several agents, the request carries "Expect:
	// 100-continue" and a hung agent that never asked for the body is
	// known to have done nothing (as Deregister).
	_, err := c.do(ctx, http.MethodDelete, "/v1/cluster/peers/"+url.PathEscape(id), url.Values{}, struct{}{}, nil)
	return err
}

// RemovePeerByAddress removes the server whose cluster address (as
// list-peers shows it) is addr from the Raft configuration; the answer names
// the server removed.
func (c *Client) RemovePeerByAddress(ctx context.Context, addr string) (*RemovePeerResult, error) {
	var out RemovePeerResult
	_, err := c.do(ctx, http.MethodDelete, "/v1/cluster/peers", url.Values{"address": {addr}}, struct{}{}, &out)
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// OwnerLeader is the Owner filter that selects the TTL checks, which have no
// owner (the leader keeps their timers); beacon checks shows their owner so.
// It cannot be a node name.
const OwnerLeader = "(leader)"

// CheckFilter selects checks in Checks. Empty fields match everything.
type CheckFilter struct {
	Service  string
	Instance string
	// Owner is a node name, or OwnerLeader for the TTL checks.
	Owner string
	// Status is passing, warning, critical (a flapping check counts as
	// critical) or flapping.
	Status string
}

// Checks lists health checks with their state, filtered by f; q sets the
// consistency mode, blocking and paging (its discovery filters are ignored).
func (c *Client) Checks(ctx context.Context, f CheckFilter, q *QueryOptions) ([]Check, *QueryMeta, error) {
	v := url.Values{}
	if q != nil {
		qq := QueryOptions{Consistent: q.Consistent, MaxStale: q.MaxStale, WaitIndex: q.WaitIndex, WaitTime: q.WaitTime, Limit: q.Limit, Cursor: q.Cursor}
		v = qq.values()
	}
	for k, s := range map[string]string{"service": f.Service, "instance": f.Instance, "owner": f.Owner, "status": f.Status} {
		if s != "" {
			v.Set(k, s)
		}
	}
	var out []Check
	meta, err := c.do(ctx, http.MethodGet, "/v1/checks", v, nil, &out)
	return out, meta, err
}

// ReportTTL reports a TTL check's state: checkID is SERVICE:INSTANCE:NAME
// (Check.ID), verb is "pass", "warn" or "fail"; u (optional) carries output
// and custom metrics.
func (c *Client) ReportTTL(ctx context.Context, checkID, verb string, u *TTLUpdate) (uint64, error) {
	switch verb {
	case "pass", "warn", "fail":
	default:
		return 0, fmt.Errorf("client: TTL verb must be pass, warn or fail, not %q", verb)
	}
	// Always a body, so that the report carries "Expect: 100-continue" and
	// may move past a hung agent (the agent reads it before applying).
	var body any = struct{}{}
	if u != nil {
		body = u
	}
	var res WriteResult
	_, err := c.do(ctx, http.MethodPut, "/v1/checks/"+url.PathEscape(checkID)+"/"+verb, url.Values{}, body, &res)
	return res.Index, err
}

// Maintenance puts an instance in maintenance, drains it, or returns it to
// service (see MaintenanceRequest).
func (c *Client) Maintenance(ctx context.Context, service, id string, m *MaintenanceRequest) (uint64, error) {
	var res WriteResult
	_, err := c.do(ctx, http.MethodPut, instancePath(service, id)+"/maintenance", url.Values{}, m, &res)
	return res.Index, err
}
