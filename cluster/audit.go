package cluster

import (
	"context"
	"encoding/binary"
	"errors"

	"github.com/beaconhq/beacon/fsm"
	"github.com/hashicorp/go-hclog"
)

// Actor is who asked for a write: the API token's accessor (never its
// secret), the client's address and the node that received the request.
// The API puts it in the request context (WithActor); CallLeader carries it
// to the leader with the forwarded request, and the leader writes one audit
// line per accepted write that has one. Writes the cluster makes by itself
// (leader tasks, check results of the health runner) carry none.
type Actor struct {
	// Accessor names the token ("management" for the configured management
	// token, "anonymous" when auth is off).
	Accessor string
	// Remote is the client's address as the receiving node saw it.
	Remote string
	// Node is the node that received the request; CallLeader fills it in.
	Node string
}

type actorKey struct{}

// WithActor returns ctx carrying a.
func WithActor(ctx context.Context, a Actor) context.Context {
	return context.WithValue(ctx, actorKey{}, a)
}

// ActorFrom returns the Actor ctx carries, if any.
func ActorFrom(ctx context.Context) (Actor, bool) {
	a, ok := ctx.Value(actorKey{}).(Actor)
	return a, ok
}

// opWithActor is set on the op byte of a request whose payload starts with
// an encoded Actor. Registered ops are therefore below 128.
const opWithActor Op = 0x80

// maxActorField bounds each field of an encoded Actor.
const maxActorField = 512

// encodeActor encodes a as a version byte and three length-prefixed strings.
func encodeActor(a Actor) []byte {
	return appendActor(make([]byte, 0, actorSize(a)), a)
}

// appendActor appends a's encoding (encodeActor) to b.
func appendActor(b []byte, a Actor) []byte {
	b = append(b, 1)
	for _, f := range [...]string{a.Accessor, a.Remote, a.Node} {
		f = f[:min(len(f), maxActorField)]
		b = binary.AppendUvarint(b, uint64(len(f)))
		b = append(b, f...)
	}
	return b
}

// actorSize is the length of a's encoding.
func actorSize(a Actor) int {
	n := 1
	for _, f := range [...]string{a.Accessor, a.Remote, a.Node} {
		l := min(len(f), maxActorField)
		n += uvarintLen(uint64(l)) + l
	}
	return n
}

func uvarintLen(v uint64) int {
	n := 1
	for ; v >= 0x80; v >>= 7 {
		n++
	}
	return n
}

var errBadActor = errors.New("cluster: bad actor in rpc request")

// decodeActor splits an encoded Actor from the rest of p.
func decodeActor(p []byte) (Actor, []byte, error) {
	if len(p) == 0 || p[0] != 1 {
		return Actor{}, nil, errBadActor
	}
	p = p[1:]
	var fields [3]string
	for i := range fields {
		n, k := binary.Uvarint(p)
		if k <= 0 || n > maxActorField || uint64(len(p)-k) < n {
			return Actor{}, nil, errBadActor
		}
		fields[i] = string(p[k : k+int(n)])
		p = p[k+int(n):]
	}
	return Actor{Accessor: fields[0], Remote: fields[1], Node: fields[2]}, p, nil
}

// auditLogger returns the logger audit lines go to.
func auditLogger(cfg Config, logger hclog.Logger) hclog.Logger {
	if cfg.AuditLogger != nil {
		return cfg.AuditLogger
	}
	return logger.Named("audit")
}

// auditWrite logs an accepted write that carries an Actor: who, what (the
// command's own description, from the FSM that decoded it) and the Raft
// index. It runs on the leader.
func (n *Node) auditWrite(ctx context.Context, cmd []byte, res fsm.ApplyResult) {
	if !n.audit.IsInfo() {
		return // the line would be dropped: build none (a write's fields cost ~500 bytes)
	}
	a, ok := ActorFrom(ctx)
	if !ok {
		return
	}
	kv := []any{"op", fsm.MessageType(cmd[0]).String(), "index", res.Index,
		"accessor", a.Accessor, "remote", a.Remote, "via", a.Node}
	if res.Cmd != nil {
		kv = append(kv, res.Cmd.Describe()...)
	}
	n.audit.Info("write accepted", kv...)
}

// auditRemove logs the removal of a server from Raft (remove-peer, or a
// node's graceful leave), asked for by the Actor in ctx.
func (n *Node) auditRemove(ctx context.Context, id string, index uint64) {
	n.auditEvent(ctx, "remove-peer", index, "node", fsm.EscapeControl(id))
}

// auditEvent logs an accepted change that is not an FSM command (a Raft
// configuration change, a snapshot restore, a forced leave), asked for by the
// Actor in ctx; index is its Raft index (0 when it made no Raft entry).
func (n *Node) auditEvent(ctx context.Context, op string, index uint64, kv ...any) {
	a, ok := ActorFrom(ctx)
	if !ok {
		return
	}
	n.audit.Info("write accepted", append([]any{"op", op, "index", index,
		"accessor", a.Accessor, "remote", a.Remote, "via", a.Node}, kv...)...)
}
