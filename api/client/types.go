package client

import (
	"encoding/json"
	"fmt"
	"reflect"
	"time"
)

// Duration is a time.Duration that travels in JSON as a Go duration string
// such as "10s" or "1m30s".
type Duration time.Duration

// MarshalJSON encodes d as a duration string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON accepts a duration string; null leaves d unchanged. Any
// other value is a *json.UnmarshalTypeError, which encoding/json completes
// with the path of the field, so a decoder can say which field was wrong.
func (d *Duration) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return &json.UnmarshalTypeError{Value: jsonValueKind(b), Type: reflect.TypeFor[Duration]()}
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return &json.UnmarshalTypeError{Value: fmt.Sprintf("string %q", s), Type: reflect.TypeFor[Duration]()}
	}
	*d = Duration(v)
	return nil
}

// jsonValueKind names the kind of the JSON value b, as encoding/json's
// errors do.
func jsonValueKind(b []byte) string {
	if len(b) == 0 {
		return "nothing"
	}
	switch b[0] {
	case '{':
		return "object"
	case '[':
		return "array"
	case 't', 'f':
		return "bool"
	case '"':
		return "string"
	}
	return "number"
}

// Registration is the body of PUT /v1/services/{service}/instances/{id}.
type Registration struct {
	Address string            `json:"address"`
	Port    int               `json:"port"`
	Tags    []string          `json:"tags,omitempty"`
	Meta    map[string]string `json:"meta,omitempty"`
	Version string            `json:"version,omitempty"`
	// Weight is the instance's share of traffic for weighted balancing (default 1).
	Weight int `json:"weight,omitempty"`
	// Node names the Beacon node this instance runs beside; if gossip reports
	// that node failed, the instance is critical.
	Node   string            `json:"node,omitempty"`
	Checks []CheckDefinition `json:"checks,omitempty"`
}

// CheckDefinition declares a health check. Exactly one of HTTP, TCP, GRPC
// or TTL is set; Type may be given and must then agree.
type CheckDefinition struct {
	Name string `json:"name,omitempty"`
	Type string `json:"type,omitempty"`
	// HTTP is a URL probed with Method (default GET); 2xx is passing.
	HTTP          string              `json:"http,omitempty"`
	Method        string              `json:"method,omitempty"`
	Header        map[string][]string `json:"header,omitempty"`
	TLSSkipVerify bool                `json:"tls_skip_verify,omitempty"`
	// TCP is a host:port that must accept a connection.
	TCP string `json:"tcp,omitempty"`
	// GRPC is a host:port serving grpc.health.v1, with an optional service name.
	GRPC        string `json:"grpc,omitempty"`
	GRPCService string `json:"grpc_service,omitempty"`
	// TTL makes the check passive: the service must report within TTL.
	TTL Duration `json:"ttl,omitempty"`

	Interval                Duration `json:"interval,omitempty"`
	Timeout                 Duration `json:"timeout,omitempty"`
	FailuresBeforeCritical  int      `json:"failures_before_critical,omitempty"`
	SuccessesBeforePassing  int      `json:"successes_before_passing,omitempty"`
	InitialStatus           string   `json:"initial_status,omitempty"`
	DeregisterCriticalAfter Duration `json:"deregister_critical_after,omitempty"`
}

// Health statuses.
const (
	StatusPassing  = "passing"
	StatusWarning  = "warning"
	StatusCritical = "critical"
)

// Instance is a registered instance as discovery returns it. ID is unique
// within Service; (Service, ID) names the instance.
type Instance struct {
	ID      string            `json:"id"`
	Service string            `json:"service"`
	Address string            `json:"address"`
	Port    int               `json:"port"`
	Tags    []string          `json:"tags,omitempty"`
	Meta    map[string]string `json:"meta,omitempty"`
	Version string            `json:"version,omitempty"`
	Weight  int               `json:"weight"`
	Node    string            `json:"node,omitempty"`
	// Trusted is true when the management token registered the instance:
	// load balancers then honour a route_prefix outside /SERVICE.
	Trusted bool `json:"trusted,omitempty"`
	// Status is the worst of the instance's checks (passing, warning, critical).
	Status string `json:"status"`
	// Healthy is true when the instance may get traffic: passing, not in
	// maintenance and not draining.
	Healthy      bool               `json:"healthy"`
	HealthySince *time.Time         `json:"healthy_since,omitempty"`
	NodeFailed   bool               `json:"node_failed,omitempty"`
	Maintenance  *Maintenance       `json:"maintenance,omitempty"`
	Draining     *Draining          `json:"draining,omitempty"`
	Metrics      map[string]float64 `json:"metrics,omitempty"`
	// Checks and Transitions are filled only when one instance is read.
	Checks      []Check      `json:"checks,omitempty"`
	Transitions []Transition `json:"transitions,omitempty"`
	CreateIndex uint64       `json:"create_index"`
	ModifyIndex uint64       `json:"modify_index"`
}

// Maintenance says why an instance was taken out of service.
type Maintenance struct {
	Reason string    `json:"reason,omitempty"`
	Since  time.Time `json:"since"`
}

// Draining says an instance gets no new requests and is deregistered at Deadline.
type Draining struct {
	Deadline time.Time `json:"deadline"`
	Since    time.Time `json:"since"`
}

// Transition is one recorded change of health.
type Transition struct {
	Time   time.Time `json:"time"`
	Check  string    `json:"check"`
	From   string    `json:"from"`
	To     string    `json:"to"`
	Output string    `json:"output,omitempty"`
}

// Check is a health check with its current state.
type Check struct {
	// ID is SERVICE:INSTANCE:NAME, unique in the catalog.
	ID       string `json:"id"`
	Instance string `json:"instance"`
	Service  string `json:"service"`
	CheckDefinition
	// Status is what the check counts as for its instance and for routing:
	// critical while the check is flapping, whatever its latest result.
	Status string `json:"status"`
	// ResultStatus is set while the check is flapping: the status its
	// results had when it was last written (changes of result are not
	// written while it is held flapping).
	ResultStatus string     `json:"result_status,omitempty"`
	Output       string     `json:"output,omitempty"`
	StatusSince  time.Time  `json:"status_since"`
	Owner        string     `json:"owner,omitempty"`
	Flapping     bool       `json:"flapping,omitempty"`
	FlapUntil    *time.Time `json:"flap_until,omitempty"`
	CreateIndex  uint64     `json:"create_index"`
	ModifyIndex  uint64     `json:"modify_index"`
}

// ServiceSummary is one entry of GET /v1/services.
type ServiceSummary struct {
	Name      string   `json:"name"`
	Tags      []string `json:"tags"`
	Instances int      `json:"instances"`
	Passing   int      `json:"passing"`
	Warning   int      `json:"warning"`
	Critical  int      `json:"critical"`
	// Unavailable counts instances in maintenance or draining.
	Unavailable int    `json:"unavailable"`
	ModifyIndex uint64 `json:"modify_index"`
}

// ServiceList is the body of GET /v1/services. NextCursor is set when more
// services follow; pass it as cursor= to get the next page.
type ServiceList struct {
	Services   []ServiceSummary `json:"services"`
	NextCursor string           `json:"next_cursor,omitempty"`
}

// WriteResult is the body of a successful write.
type WriteResult struct {
	Index uint64 `json:"index"`
}

// Member is a cluster member as gossip sees it.
type Member struct {
	Name        string    `json:"name"`
	GossipAddr  string    `json:"gossip_addr"`
	ClusterAddr string    `json:"cluster_addr"`
	HTTPAddr    string    `json:"http_addr"`
	Role        string    `json:"role"`
	Status      string    `json:"status"`
	Since       time.Time `json:"since"`
	Version     string    `json:"version,omitempty"`
}

// ClusterStatus is this node's view of Raft.
type ClusterStatus struct {
	Node         string `json:"node"`
	State        string `json:"state"`
	Leader       string `json:"leader"`
	LeaderAddr   string `json:"leader_addr"`
	Term         uint64 `json:"term"`
	CommitIndex  uint64 `json:"commit_index"`
	AppliedIndex uint64 `json:"applied_index"`
	LastIndex    uint64 `json:"last_index"`
	// LastContactMS is how long ago this node heard from the leader, in
	// milliseconds (0 on the leader, -1 if never).
	LastContactMS int64  `json:"last_contact_ms"`
	Peers         []Peer `json:"peers"`
}

// Peer is one server in the Raft configuration.
type Peer struct {
	ID       string `json:"id"`
	Address  string `json:"address"`
	Suffrage string `json:"suffrage"`
	Leader   bool   `json:"leader"`
}

// ClusterServers is GET /v1/cluster/servers: every server of the Raft
// configuration, as the answering agent knows it, each with its own view
// of Raft (asked over the cluster port) or why it gave none.
type ClusterServers struct {
	// Node is the agent that asked.
	Node    string         `json:"node"`
	Servers []ServerStatus `json:"servers"`
}

// ServerStatus is one Raft server and what it said about itself.
type ServerStatus struct {
	ID       string `json:"id"`
	Address  string `json:"address"`
	Suffrage string `json:"suffrage"`
	// View is the server's own answer; nil when it gave none (Error says why).
	View  *ServerView `json:"view,omitempty"`
	Error string      `json:"error,omitempty"`
	// TookMS is how long the server took to answer or to fail (0 for the
	// answering agent itself, which needs no round trip).
	TookMS int64 `json:"took_ms"`
}

// ServerView is one server's own view of Raft.
type ServerView struct {
	State       string `json:"state"`
	Leader      string `json:"leader"`
	Term        uint64 `json:"term"`
	CommitIndex uint64 `json:"commit_index"`
	// AppliedIndex is the last index Raft applied on the server (every
	// entry, the leader's barriers and configuration changes included: it
	// equals CommitIndex once the server has caught up); CatalogIndex the
	// index of its catalog's latest change (0 from a server of an earlier
	// release, whose AppliedIndex is that index).
	AppliedIndex uint64 `json:"applied_index"`
	CatalogIndex uint64 `json:"catalog_index,omitempty"`
	LastIndex    uint64 `json:"last_index"`
	// LastContactMS: as ClusterStatus (0 on the leader, -1 if never).
	LastContactMS int64 `json:"last_contact_ms"`
}

// JoinRequest is the body of POST /v1/cluster/join.
type JoinRequest struct {
	Addresses []string `json:"addresses"`
}

// JoinResult says how many addresses answered.
type JoinResult struct {
	Joined int `json:"joined"`
}

// LeaveResult is the answer to Leave.
type LeaveResult struct {
	Left bool `json:"left"`
	// Node is the name of the node that left (empty from agents older
	// than this field).
	Node string `json:"node,omitempty"`
	// Agent is the address the leave was sent to (the client's first).
	Agent string `json:"agent,omitempty"`
}

// RemovePeerResult is the answer to RemovePeer and RemovePeerByAddress.
type RemovePeerResult struct {
	Removed bool `json:"removed"`
	// ID is the removed server's ID as Raft held it: the one asked for, or
	// the one found at Address. It may hold any character (a name from
	// before the rule of node names): escape it before printing it
	// (fsm.EscapeControl). Empty from agents older than this field.
	ID string `json:"id,omitempty"`
	// Address is the cluster address asked for (RemovePeerByAddress only).
	Address string `json:"address,omitempty"`
}

// ErrorBody is the JSON body of every error response.
type ErrorBody struct {
	Error string `json:"error"`
	Code  string `json:"code"`
	Field string `json:"field,omitempty"`
}

// TTLUpdate is the optional body of PUT /v1/checks/{id}/pass, /warn and
// /fail: the check's output (kept up to 4 KiB) and custom numeric health
// metrics of the instance (replaced as a whole by each report that carries
// any; replicated at most once per instance per coalescing period).
type TTLUpdate struct {
	Output  string             `json:"output,omitempty"`
	Metrics map[string]float64 `json:"metrics,omitempty"`
}

// Maintenance modes of MaintenanceRequest.
const (
	ModeMaintenance = "maintenance"
	ModeDrain       = "drain"
	ModeNone        = "none"
)

// MaintenanceRequest is the body of PUT
// /v1/services/{service}/instances/{id}/maintenance. Mode "maintenance"
// takes the instance out of service (with an optional Reason); "drain"
// sends it no new requests and deregisters it Deadline from now; "none"
// returns it to service (ending maintenance and draining).
type MaintenanceRequest struct {
	Mode     string   `json:"mode"`
	Reason   string   `json:"reason,omitempty"`
	Deadline Duration `json:"deadline,omitempty"`
}
