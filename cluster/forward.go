package cluster

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/beaconhq/beacon/fsm"
	"github.com/hashicorp/raft"
)

// Error is an error of the write and consistent-read paths. Its code is
// stable, so callers that may not import this package (the API) can map it.
type Error struct {
	code, msg string
}

func (e *Error) Error() string { return e.msg }

// ErrorCode returns the error's stable code.
func (e *Error) ErrorCode() string { return e.code }

// Errors of the write and consistent-read paths.
var (
	// ErrNoLeader: no leader was known within Config.LeaderWait.
	ErrNoLeader error = &Error{"no_leader", "cluster: no leader"}
	// ErrNotLeader: this node is not the leader (leader-only operations).
	ErrNotLeader error = &Error{"not_leader", "cluster: not the leader"}
	// ErrUnknownOutcome: the request reached the leader but the answer was
	// lost (connection dropped, or leadership lost mid-write). The command
	// may or may not have been applied. Commands are idempotent, so the
	// client may retry.
	ErrUnknownOutcome error = &Error{"unknown_outcome", "cluster: outcome unknown"}
)

// errDial marks a request that never left this node, so retrying is safe.
type errDial struct{ err error }

func (e errDial) Error() string { return e.err.Error() }
func (e errDial) Unwrap() error { return e.err }

// errorCode maps an error to the code that travels over RPC.
func errorCode(err error) (code, msg string) {
	var rej *fsm.RejectError
	switch {
	case errors.As(err, &rej):
		return rej.Code(), rej.Msg
	case errors.Is(err, ErrNotLeader), errors.Is(err, raft.ErrNotLeader):
		return "not_leader", err.Error()
	case errors.Is(err, raft.ErrLeadershipLost), errors.Is(err, raft.ErrLeadershipTransferInProgress),
		errors.Is(err, ErrUnknownOutcome), errors.Is(err, raft.ErrRaftShutdown):
		return "unknown_outcome", err.Error()
	case errors.Is(err, ErrNoLeader):
		return "no_leader", err.Error()
	}
	return "internal", err.Error()
}

// fromRemote turns an RPC error back into the error the leader returned.
func fromRemote(err error) error {
	var re *RemoteError
	if !errors.As(err, &re) {
		return err
	}
	switch re.Code {
	case "not_leader":
		return fmt.Errorf("%w: %s", ErrNotLeader, re.Msg)
	case "unknown_outcome":
		return fmt.Errorf("%w: %s", ErrUnknownOutcome, re.Msg)
	case "no_leader":
		return fmt.Errorf("%w: %s", ErrNoLeader, re.Msg)
	case "internal":
		return errors.New(re.Msg)
	}
	return fsm.RejectFromCode(re.Code, re.Msg)
}

// CallLeader runs op on the leader: locally when this node leads, otherwise
// over the internal RPC. It waits up to Config.LeaderWait for a leader to be
// known and retries only where the request certainly did not run (not the
// leader, connection refused); a lost answer is ErrUnknownOutcome.
func (n *Node) CallLeader(ctx context.Context, op Op, payload []byte) ([]byte, error) {
	if a, ok := ActorFrom(ctx); ok && a.Node == "" {
		a.Node = n.cfg.NodeName
		ctx = WithActor(ctx, a)
	}
	deadline := time.Now().Add(n.cfg.LeaderWait)
	backoff := 5 * time.Millisecond
	var lastErr error = ErrNoLeader
	for {
		var resp []byte
		var err error
		if n.raft.State() == raft.Leader {
			n.rpcSrv.mu.RLock()
			h := n.rpcSrv.handlers[op]
			n.rpcSrv.mu.RUnlock()
			resp, err = h(ctx, payload)
		} else if addr, _ := n.raft.LeaderWithID(); addr != "" {
			wireOp, wire := op, payload
			if a, ok := ActorFrom(ctx); ok {
				// Carry who asked to the leader, which writes the audit line.
				wireOp, wire = op|opWithActor, append(encodeActor(a), payload...)
			}
			resp, err = n.pool.call(ctx, string(addr), wireOp, wire)
			n.metrics.forwarded.WithLabelValues(opName(op), forwardOutcome(err)).Inc()
			if errors.Is(err, ErrConnLost) {
				return nil, fmt.Errorf("%w: %v", ErrUnknownOutcome, err)
			}
			err = fromRemote(err)
		} else {
			err = ErrNoLeader
		}
		var de errDial
		switch {
		case err == nil:
			return resp, nil
		case errors.Is(err, ErrNotLeader), errors.Is(err, ErrNoLeader), errors.As(err, &de):
			lastErr = err
		default:
			return resp, err
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if time.Now().After(deadline) {
			if errors.Is(lastErr, ErrNoLeader) {
				return nil, lastErr
			}
			return nil, fmt.Errorf("%w: %v", ErrNoLeader, lastErr)
		}
		sleep := backoff/2 + rand.N(backoff/2+1)
		t := time.NewTimer(sleep)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		}
		backoff = min(backoff*2, 100*time.Millisecond)
	}
}

// Apply commits cmd (an fsm-encoded command) through the leader and returns
// its log index once this node's own catalog has applied it, so a client
// reads its write on the node it wrote to. A command the FSM rejected returns
// its *fsm.RejectError.
func (n *Node) Apply(ctx context.Context, cmd []byte) (uint64, error) {
	start := time.Now()
	resp, err := n.CallLeader(ctx, opApply, cmd)
	idx, _ := strconv.ParseUint(string(resp), 10, 64)
	if err != nil {
		return idx, err
	}
	if err := n.fsm.WaitForIndex(ctx, idx); err != nil {
		return idx, err
	}
	n.metrics.writeLatency.Observe(time.Since(start).Seconds())
	return idx, nil
}

// ApplyAcked commits cmd through the leader and returns its log index as
// soon as the leader has committed and applied it, without waiting for this
// node's own apply: a write forwarded by a follower is answered one
// replication round sooner. Read-your-writes on this node is kept by its
// reads instead: the index is noted in the store (fsm.Store.NoteAcked) and
// every read on this node waits until it has applied it (WaitAcked).
func (n *Node) ApplyAcked(ctx context.Context, cmd []byte) (uint64, error) {
	start := time.Now()
	resp, err := n.CallLeader(ctx, opApply, cmd)
	idx, _ := strconv.ParseUint(string(resp), 10, 64)
	if err != nil {
		return idx, err
	}
	n.fsm.Store().NoteAcked(idx)
	n.metrics.writeLatency.Observe(time.Since(start).Seconds())
	return idx, nil
}

// ApplyLeader commits cmd only if this node is the leader, never forwarding.
// Leader tasks use it so that a deposed leader's decisions are dropped. A
// ctx carrying an Actor (a client's request relayed to the leader) gets an
// audit line once the write is accepted.
func (n *Node) ApplyLeader(ctx context.Context, cmd []byte) (uint64, error) {
	if n.raft.State() != raft.Leader {
		return 0, ErrNotLeader
	}
	return n.applyLocal(ctx, cmd)
}

// applyLocal runs cmd through this node's Raft (it must lead) and, when ctx
// carries an Actor, writes the audit line of the accepted write.
func (n *Node) applyLocal(ctx context.Context, cmd []byte) (uint64, error) {
	start := time.Now()
	f := n.raft.Apply(cmd, n.cfg.LeaderWait)
	err := f.Error()
	n.metrics.raftApply.Observe(time.Since(start).Seconds())
	if err != nil {
		if errors.Is(err, raft.ErrNotLeader) {
			return 0, ErrNotLeader
		}
		if errors.Is(err, raft.ErrEnqueueTimeout) {
			return 0, err
		}
		return 0, fmt.Errorf("%w: %v", ErrUnknownOutcome, err)
	}
	res, ok := f.Response().(fsm.ApplyResult)
	if !ok {
		return f.Index(), fmt.Errorf("cluster: unexpected apply response %T", f.Response())
	}
	n.nudge.note(n.raft.LastIndex())
	if res.Err != nil {
		return res.Index, res.Err
	}
	n.auditWrite(ctx, cmd, res.Index)
	return res.Index, nil
}

// ConsistentIndex makes the next local read linearizable: it obtains a read
// index from the leader (which confirms its leadership with a quorum round
// trip) and waits until this node has applied it.
// Reads waiting at the same moment share one read index (readBatcher).
func (n *Node) ConsistentIndex(ctx context.Context) (uint64, error) {
	idx, err := n.readIndex(ctx)
	if err != nil {
		return 0, err
	}
	return idx, n.fsm.WaitForIndex(ctx, idx)
}

// readIndexLocal serves a read index on the leader. Every write this leader
// acknowledged has been applied to its FSM, and the barrier run when it took
// office covers earlier terms; so its applied index, taken before a
// successful quorum check, bounds every acknowledged write.
func (n *Node) readIndexLocal(ctx context.Context) (uint64, error) {
	wait := time.NewTimer(n.cfg.LeaderWait)
	defer wait.Stop()
	for !n.leaderReady.Load() {
		if n.raft.State() != raft.Leader {
			return 0, ErrNotLeader
		}
		select {
		case <-time.After(5 * time.Millisecond):
		case <-wait.C:
			return 0, ErrNotLeader
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	idx := n.fsm.AppliedIndex()
	if err := n.raft.VerifyLeader().Error(); err != nil {
		return 0, fmt.Errorf("%w: %v", ErrNotLeader, err)
	}
	if !n.leaderReady.Load() {
		return 0, ErrNotLeader
	}
	return idx, nil
}
