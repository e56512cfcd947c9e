package fsmtest

import (
	"testing"

	"github.com/hashicorp/raft"

	"github.com/beaconhq/beacon/fsm"
)

// Encode returns body encoded as a command of type typ with fsm.Encode. It
// fails the test if the body cannot be encoded, or if the result does not
// start with typ: such an entry would be misread by every FSM that applies
// it, so no test should go on with it.
func Encode(t testing.TB, typ fsm.MessageType, body any) []byte {
	t.Helper()
	b, err := fsm.Encode(typ, body)
	if err != nil {
		t.Fatalf("fsmtest: encode %s: %v", typ, err)
	}
	if len(b) == 0 || fsm.MessageType(b[0]) != typ {
		t.Fatalf("fsmtest: fsm.Encode(%s) = % x...: first byte is not the type %#02x", typ, head(b), uint8(typ))
	}
	return b
}

func head(b []byte) []byte {
	if len(b) > 8 {
		return b[:8]
	}
	return b
}

// Register returns a RegisterType command for instance id of service.
// Options change the request before it is encoded.
func Register(t testing.TB, id, service string, opts ...func(*fsm.RegisterRequest)) []byte {
	t.Helper()
	req := fsm.RegisterRequest{ID: id, Service: service}
	for _, o := range opts {
		o(&req)
	}
	return Encode(t, fsm.RegisterType, &req)
}

// WithAddress sets the address and port of a registration.
func WithAddress(addr string, port int) func(*fsm.RegisterRequest) {
	return func(r *fsm.RegisterRequest) { r.Address, r.Port = addr, port }
}

// WithNode sets the node an instance runs beside.
func WithNode(node string) func(*fsm.RegisterRequest) {
	return func(r *fsm.RegisterRequest) { r.Node = node }
}

// WithChecks appends check definitions to a registration.
func WithChecks(defs ...fsm.CheckDefinition) func(*fsm.RegisterRequest) {
	return func(r *fsm.RegisterRequest) { r.Checks = append(r.Checks, defs...) }
}

// WithTime sets the proposer's clock of a registration.
func WithTime(at int64) func(*fsm.RegisterRequest) {
	return func(r *fsm.RegisterRequest) { r.Time = at }
}

// TTLCheck returns the definition of a TTL check named name, which starts
// with status initial ("" leaves the FSM's default, critical).
func TTLCheck(name string, initial fsm.Health) fsm.CheckDefinition {
	return fsm.CheckDefinition{Name: name, Type: fsm.CheckTTL, TTL: 30e9, InitialStatus: initial}
}

// HTTPCheck returns the definition of an HTTP check named name probing url,
// which starts with status initial ("" leaves the FSM's default, critical).
func HTTPCheck(name, url string, initial fsm.Health) fsm.CheckDefinition {
	return fsm.CheckDefinition{
		Name: name, Type: fsm.CheckHTTP, Target: url, Method: "GET",
		Interval: 10e9, Timeout: 2e9, InitialStatus: initial,
	}
}

// Deregister returns a DeregisterType command for instance id of service.
func Deregister(t testing.TB, service, id string, opts ...func(*fsm.DeregisterRequest)) []byte {
	t.Helper()
	req := fsm.DeregisterRequest{Service: service, ID: id}
	for _, o := range opts {
		o(&req)
	}
	return Encode(t, fsm.DeregisterType, &req)
}

// CheckUpdate returns a CheckUpdateType command in which node, at the
// proposer's time at, reports updates.
func CheckUpdate(t testing.TB, node string, at int64, updates ...fsm.CheckUpdate) []byte {
	t.Helper()
	return Encode(t, fsm.CheckUpdateType, &fsm.CheckUpdateRequest{Node: node, Updates: updates, Time: at})
}

// AssignChecks returns an AssignChecksType command with assignments.
func AssignChecks(t testing.TB, assignments ...fsm.Assignment) []byte {
	t.Helper()
	return Encode(t, fsm.AssignChecksType, &fsm.AssignChecksRequest{Assignments: assignments})
}

// NodeUpdate returns a NodeUpdateType command that upserts nodes at the
// proposer's time at.
func NodeUpdate(t testing.TB, at int64, nodes ...fsm.NodeState) []byte {
	t.Helper()
	return Encode(t, fsm.NodeUpdateType, &fsm.NodeUpdateRequest{Upserts: nodes, Time: at})
}

// NodeRemove returns a NodeUpdateType command that removes the named nodes.
func NodeRemove(t testing.TB, at int64, names ...string) []byte {
	t.Helper()
	return Encode(t, fsm.NodeUpdateType, &fsm.NodeUpdateRequest{Removes: names, Time: at})
}

// Server returns the state of a server node called name with status.
func Server(name string, status fsm.NodeStatus) fsm.NodeState {
	return fsm.NodeState{Name: name, Address: name + ":8751", Role: fsm.RoleServer, Status: status}
}

// Maintenance returns a MaintenanceType command that sets mode (one of
// fsm.ModeNone, fsm.ModeMaintenance, fsm.ModeDrain) on instance id of service.
func Maintenance(t testing.TB, service, id, mode string, opts ...func(*fsm.MaintenanceRequest)) []byte {
	t.Helper()
	req := fsm.MaintenanceRequest{Service: service, ID: id, Mode: mode}
	for _, o := range opts {
		o(&req)
	}
	return Encode(t, fsm.MaintenanceType, &req)
}

// Metrics returns a MetricsType command that replaces the metrics of
// instances, at the proposer's time at.
func Metrics(t testing.TB, at int64, updates ...fsm.InstanceMetrics) []byte {
	t.Helper()
	return Encode(t, fsm.MetricsType, &fsm.MetricsRequest{Updates: updates, Time: at})
}

// TokenSet returns a TokenSetType command that creates or replaces tok.
func TokenSet(t testing.TB, tok fsm.Token) []byte {
	t.Helper()
	return Encode(t, fsm.TokenSetType, &fsm.TokenSetRequest{Token: tok})
}

// TokenDelete returns a TokenDeleteType command for accessor.
func TokenDelete(t testing.TB, accessor string) []byte {
	t.Helper()
	return Encode(t, fsm.TokenDeleteType, &fsm.TokenDeleteRequest{Accessor: accessor})
}

// Log wraps data in a command log entry at index, in term 1.
func Log(index uint64, data []byte) *raft.Log {
	return &raft.Log{Index: index, Term: 1, Type: raft.LogCommand, Data: data}
}

// Apply applies cmd to f as the log entry at index and returns its result,
// failing the test if Apply returns anything but an fsm.ApplyResult. A
// rejected command is not a failure here; see MustApply.
func Apply(t testing.TB, f *fsm.FSM, index uint64, cmd []byte) fsm.ApplyResult {
	t.Helper()
	raw := f.Apply(Log(index, cmd))
	res, ok := raw.(fsm.ApplyResult)
	if !ok {
		t.Fatalf("fsmtest: Apply at index %d returned %T, want fsm.ApplyResult", index, raw)
	}
	// A command that changed nothing (an identical re-registration)
	// answers the earlier index at which the catalog already was as asked.
	if res.Index == 0 || res.Index > index {
		t.Fatalf("fsmtest: Apply at index %d returned result for index %d", index, res.Index)
	}
	return res
}

// MustApply is Apply for commands that must be accepted: it fails the test
// if the FSM rejects cmd.
func MustApply(t testing.TB, f *fsm.FSM, index uint64, cmd []byte) fsm.ApplyResult {
	t.Helper()
	res := Apply(t, f, index, cmd)
	if res.Err != nil {
		t.Fatalf("fsmtest: command at index %d rejected: %v (code %s)", index, res.Err, res.Err.Code())
	}
	return res
}
