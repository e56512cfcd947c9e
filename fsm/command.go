package fsm

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/hashicorp/go-msgpack/v2/codec"
)

// MessageType is the first byte of every command in the Raft log. Numbers are
// only ever appended. A type with SkipUnknown set may be skipped by a node too
// old to know it; any other unknown type stops the node (it must not drift).
type MessageType uint8

// Command types. Append only; never renumber.
const (
	RegisterType     MessageType = 1
	DeregisterType   MessageType = 2
	CheckUpdateType  MessageType = 3
	AssignChecksType MessageType = 4
	NodeUpdateType   MessageType = 5
	MaintenanceType  MessageType = 6
	MetricsType      MessageType = 7
	TokenSetType     MessageType = 8
	TokenDeleteType  MessageType = 9
	// GroupType is a group entry: several clients' commands in one log
	// entry (group.go).
	GroupType MessageType = 10
	// CatalogRegisterType and CatalogDeregisterType write external nodes
	// (RoleExternal). Not skippable: a node that skipped them would hold
	// another catalog.
	CatalogRegisterType   MessageType = 11
	CatalogDeregisterType MessageType = 12

	// SkipUnknown marks a command an older node may ignore.
	SkipUnknown MessageType = 0x80
)

// String names the type for logs and errors.
func (t MessageType) String() string {
	switch t &^ SkipUnknown {
	case RegisterType:
		return "register"
	case DeregisterType:
		return "deregister"
	case CheckUpdateType:
		return "check-update"
	case AssignChecksType:
		return "assign-checks"
	case NodeUpdateType:
		return "node-update"
	case MaintenanceType:
		return "maintenance"
	case MetricsType:
		return "metrics"
	case TokenSetType:
		return "token-set"
	case TokenDeleteType:
		return "token-delete"
	case GroupType:
		return "group"
	case CatalogRegisterType:
		return "catalog-register"
	case CatalogDeregisterType:
		return "catalog-deregister"
	}
	return fmt.Sprintf("type-%d", uint8(t))
}

// RegisterRequest registers an instance, or updates it if the service
// already has an instance with this ID (an upsert: re-registering bumps the
// ModifyIndex). IDs are unique per service: the same ID under another
// service is another instance. Checks replace the instance's checks; a check
// whose definition is unchanged keeps its status. Meta travels as a map and
// is stored as sorted pairs (Instance.Meta).
type RegisterRequest struct {
	ID      string
	Service string
	Address string
	Port    int
	Tags    []string
	Meta    map[string]string
	Version string
	Weight  int
	Node    string
	Checks  []CheckDefinition
	// Trusted: the management token registered it (Instance.Trusted).
	// Omitted when false: the golden encoding of a register is unchanged,
	// and a node that predates the field ignores it.
	Trusted bool `codec:",omitempty"`
	// Time is the proposer's clock (unix nanoseconds).
	Time int64

	// Set only by the FSM's own decoder (decodeRegisterShared), for the
	// apply that follows: meta holds Meta as the catalog's shared sorted
	// pairs, in place of the map (Meta is then nil), and interned says
	// that Service, Tags, Version and Node are already the catalog's
	// shared copies. go-msgpack ignores both; Encode writes meta as Meta.
	meta     []Pair
	interned bool
}

// MetaMap returns the registration's meta as a map: Meta itself, or a new
// map of the pairs the FSM decoded it into (Meta is then nil). The result
// must not be modified when it is Meta.
func (r *RegisterRequest) MetaMap() map[string]string {
	if r.Meta != nil || r.meta == nil {
		return r.Meta
	}
	m := make(map[string]string, len(r.meta))
	for _, p := range r.meta {
		m[p.Key] = p.Value
	}
	return m
}

// metaLen is the number of Meta's keys, from the map or the shared pairs.
func (r *RegisterRequest) metaLen() int {
	if r.Meta == nil {
		return len(r.meta)
	}
	return len(r.Meta)
}

// metaValue is Meta[k], from the map or the shared pairs.
func (r *RegisterRequest) metaValue(k string) (string, bool) {
	if r.Meta == nil && r.meta != nil {
		i, found := slices.BinarySearchFunc(r.meta, k, func(p Pair, k string) int { return strings.Compare(p.Key, k) })
		if !found {
			return "", false
		}
		return r.meta[i].Value, true
	}
	v, ok := r.Meta[k]
	return v, ok
}

// DeregisterRequest removes an instance and its checks. A missing instance
// is not an error (deregistering twice is harmless). With IfIndex set, the
// instance is removed only if its ModifyIndex still equals IfIndex.
type DeregisterRequest struct {
	Service string
	ID      string
	IfIndex uint64
	Time    int64
}

// CheckUpdate sets the status of one check.
//
// The fields that are usually empty are left out of the encoding when they
// are (a TTL report's update is mostly an ID and a status): every node's Raft
// log holds each update until the next snapshot. A decoder that finds a
// field missing leaves it zero, so an entry decodes the same on any version
// whether it was written with its empty fields or without them.
type CheckUpdate struct {
	// Check is the check's ID, SERVICE:INSTANCE:NAME.
	Check     string
	Status    Health
	Output    string `codec:",omitempty"`
	Flapping  bool   `codec:",omitempty"`
	FlapUntil int64  `codec:",omitempty"`
	FlapLevel int    `codec:",omitempty"`
}

// CheckUpdateRequest carries status changes proposed by Node, which must own
// every check it updates; updates of checks it does not own are refused.
// TTL checks have no owner node: the leader runs their timers and proposes
// their updates with Node = "" (only leader-only writes do so).
type CheckUpdateRequest struct {
	Node    string `codec:",omitempty"`
	Updates []CheckUpdate
	Time    int64
}

// Assignment gives a check to an owner node.
type Assignment struct {
	Check string
	Owner string
}

// AssignChecksRequest records the leader's decision of who runs which check.
type AssignChecksRequest struct {
	Assignments []Assignment
}

// NodeState is a member's state as gossip reports it.
type NodeState struct {
	Name    string
	Address string
	Role    string
	Status  NodeStatus
	// Incarnation identifies the member's current run (its process's
	// start, from its gossip metadata); 0 when unknown (an older release).
	Incarnation uint64 `codec:",omitempty"`
	// Departed records a graceful leave of this incarnation: the node is
	// recorded as left, and no later update of the same incarnation changes
	// that (see Node.DepartedIn).
	Departed bool `codec:",omitempty"`
}

// NodeUpdateRequest upserts nodes in the catalog and removes others. A node
// marked failed makes every instance on it critical; alive clears that.
type NodeUpdateRequest struct {
	Upserts []NodeState
	Removes []string
	Time    int64
}

// CatalogRegisterRequest is Consul's catalog registration of a node that
// runs no Beacon agent (an external node, RoleExternal), with at most one
// instance on it, in one entry. It creates the node or replaces its
// Address, TaggedAddresses and Meta (unless SkipNodeUpdate and the node
// exists), then registers Service as a RegisterRequest does; Service.Node
// must be Node. A node that is a cluster member's is refused
// (ErrConflict): gossip owns its record.
type CatalogRegisterRequest struct {
	Node            string
	Address         string
	TaggedAddresses map[string]string `codec:",omitempty"`
	Meta            map[string]string `codec:",omitempty"`
	SkipNodeUpdate  bool              `codec:",omitempty"`
	Service         *RegisterRequest  `codec:",omitempty"`
	Time            int64
}

// CatalogDeregisterRequest is Consul's catalog deregistration of a node
// (Check empty: the external node and every instance on it, with their
// checks) or of one check (Check, a check ID) of an instance on Node. An
// instance alone goes with a DeregisterRequest.
type CatalogDeregisterRequest struct {
	Node  string
	Check string `codec:",omitempty"`
	Time  int64
}

// Maintenance modes.
const (
	ModeNone        = "none"
	ModeMaintenance = "maintenance"
	ModeDrain       = "drain"
)

// MaintenanceRequest puts an instance in maintenance, drains it until a
// deadline, or returns it to service (ModeNone).
type MaintenanceRequest struct {
	Service  string
	ID       string
	Mode     string
	Reason   string
	Deadline int64
	Time     int64
}

// InstanceMetrics are the custom health metrics of one instance, named by
// its Service and Instance ID. (Service was appended to the command; an
// entry without it names no instance and changes nothing.)
type InstanceMetrics struct {
	Instance string
	Metrics  map[string]float64
	Service  string
}

// MetricsRequest replaces the custom metrics of instances.
type MetricsRequest struct {
	Updates []InstanceMetrics
	Time    int64
}

// TokenSetRequest creates or replaces a token.
type TokenSetRequest struct {
	Token Token
}

// TokenDeleteRequest deletes a token by accessor.
type TokenDeleteRequest struct {
	Accessor string
}

// msgpackHandle is shared by all encoders. Canonical ordering makes the
// encoding of maps deterministic, so golden tests hold and every node
// encodes a command the same way.
var msgpackHandle = func() *codec.MsgpackHandle {
	h := &codec.MsgpackHandle{}
	h.Canonical = true
	h.WriteExt = true
	return h
}()

// Encode returns t followed by the msgpack encoding of body.
func Encode(t MessageType, body any) ([]byte, error) {
	if r, ok := body.(*RegisterRequest); ok && t == RegisterType {
		out := encodeRegister(make([]byte, 1, 1+registerSize(r)), r)
		out[0] = byte(t)
		return out, nil
	}
	pe := encoders.Get().(*pooledEncoder)
	defer encoders.Put(pe)
	pe.buf = pe.buf[:0]
	pe.enc.ResetBytes(&pe.buf)
	if err := pe.enc.Encode(body); err != nil {
		return nil, fmt.Errorf("fsm: encode %s: %w", t, err)
	}
	out := make([]byte, 1+len(pe.buf))
	out[0] = byte(t)
	copy(out[1:], pe.buf)
	return out, nil
}

// pooledEncoder is an encoder with its scratch buffer. go-msgpack's
// encoders and decoders are costly to build (they allocate buffers and
// lookup state), and every write encodes and decodes a command, so they are
// reused.
type pooledEncoder struct {
	enc *codec.Encoder
	buf []byte
}

var encoders = sync.Pool{New: func() any {
	pe := &pooledEncoder{buf: make([]byte, 0, 512)}
	pe.enc = codec.NewEncoderBytes(&pe.buf, msgpackHandle)
	return pe
}}

var decoders = sync.Pool{New: func() any { return codec.NewDecoderBytes(nil, msgpackHandle) }}

// ErrShortCommand is returned by Decode for an empty buffer.
var ErrShortCommand = errors.New("fsm: empty command")

// Decode splits a command into its type and decodes the body into out.
func Decode(buf []byte, out any) (MessageType, error) {
	if len(buf) == 0 {
		return 0, ErrShortCommand
	}
	t := MessageType(buf[0])
	if err := decodeBody(buf[1:], out); err != nil {
		return t, fmt.Errorf("fsm: decode %s: %w", t, err)
	}
	return t, nil
}

func decodeBody(b []byte, out any) error {
	if r, ok := out.(*RegisterRequest); ok && decodeRegister(b, r) {
		return nil // the common registration, without reflection (regdec.go)
	}
	dec := decoders.Get().(*codec.Decoder)
	dec.ResetBytes(b)
	err := dec.Decode(out)
	dec.ResetBytes(nil) // do not keep the input alive in the pool
	decoders.Put(dec)
	return err
}
