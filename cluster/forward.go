package cluster

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
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

// errCommittedEarlier: a re-sent write found its earlier attempt committed.
// The caller sees ErrUnknownOutcome (the write is in the catalog, but
// whether the catalog accepted or rejected it is not known here).
var errCommittedEarlier error = &Error{"already_committed", "cluster: an earlier attempt of this write was committed"}

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
	case errors.Is(err, errCommittedEarlier):
		return "already_committed", err.Error()
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
	case "already_committed":
		return fmt.Errorf("%w: %s", errCommittedEarlier, re.Msg)
	case "internal":
		return errors.New(re.Msg)
	}
	return fsm.RejectFromCode(re.Code, re.Msg)
}

// forwardDialTimeout bounds connecting to the leader (TCP, TLS and the
// cluster-secret handshake) for one forwarded request. A leader that was
// killed without closing its sockets (its host or container gone, SYNs
// dropped) or that is paused (the kernel completes the TCP handshake, the
// process never answers) costs at most this per attempt; the attempt is
// also abandoned at once when Raft reports another leader.
const forwardDialTimeout = time.Second

// errLeaderChanged ends an in-flight forwarded request when Raft reports
// that the leader it was sent to is no longer the leader (or no leader is
// known): the request was sent, so its outcome is unknown.
var errLeaderChanged = errors.New("cluster: the leader changed while the request was in flight")

// CallLeader runs op on the leader: locally when this node leads, otherwise
// over the internal RPC. Everything it does fits in one budget of
// Config.LeaderWait (a restore: at least restoreTimeout; or ctx's deadline,
// if sooner): waiting for a leader,
// connecting to it (forwardDialTimeout per try) and waiting for its answer.
//
// It follows leader changes. A request that certainly did not run (the
// connection could not be made, the peer is not the leader) is re-sent to
// the next leader Raft reports, or run locally once this node leads. A
// request that was sent and got no answer before the leader changed (or the
// connection broke) has an unknown outcome: a write (opApply) is re-sent with
// its request id, and the next leader first looks for that id in its log
// (see applyOnceLocal), so it is applied once; a read index is simply asked
// again; any other operation fails with ErrUnknownOutcome at once.
func (n *Node) CallLeader(ctx context.Context, op Op, payload []byte) ([]byte, error) {
	if a, ok := ActorFrom(ctx); ok && a.Node == "" {
		a.Node = n.cfg.NodeName
		ctx = WithActor(ctx, a)
	}
	wait := n.cfg.LeaderWait
	if op == opRestore {
		// The leader restores a whole catalog (writes it as a snapshot,
		// installs it, commits the no-op after it) before it answers:
		// one leader-wait is too short for a large one.
		wait = max(wait, restoreTimeout)
	}
	budget, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	var req *onceRequest
	if op == opApply {
		req = newOnceRequest(n.raft.CommitIndex(), payload)
	}
	backoff := 5 * time.Millisecond
	var lastErr error = ErrNoLeader
	for {
		// Take the change channel before reading the leader, so that a
		// change in between still wakes this attempt.
		changed := n.leaderChanged()
		var resp []byte
		var err error
		switch addr, _ := n.raft.LeaderWithID(); {
		case n.raft.State() == raft.Leader:
			if req != nil {
				var idx uint64
				idx, err = n.applyOnceLocal(budget, req.id[:], 0, req.low, req.resend, payload)
				resp = appendIndex(nil, idx)
			} else {
				n.rpcSrv.mu.RLock()
				h := n.rpcSrv.handlers[op]
				n.rpcSrv.mu.RUnlock()
				resp, err = h(budget, payload)
				if err != nil && !errors.Is(err, ErrUnknownOutcome) && (errors.Is(err, raft.ErrLeadershipLost) ||
					errors.Is(err, raft.ErrLeadershipTransferInProgress) || errors.Is(err, raft.ErrRaftShutdown)) {
					// What errorCode makes of it when a follower forwarded
					// the call: an operator call (force-leave, remove-peer)
					// whose Raft change the leader lost its leadership over
					// may or may not be committed. The API answered this
					// node's own with 500 internal.
					err = fmt.Errorf("%w: %v", ErrUnknownOutcome, err)
				}
			}
		case addr != "":
			resp, err = n.forward(budget, changed, string(addr), op, payload, req)
		default:
			err = ErrNoLeader
		}
		var de errDial
		switch {
		case err == nil:
			return resp, nil
		case ctx.Err() != nil:
			return nil, ctx.Err()
		case errors.Is(err, ErrNotLeader), errors.Is(err, ErrNoLeader), errors.As(err, &de):
			// Certainly not run: try the next leader.
			if req != nil && req.resend && errors.Is(err, ErrNoLeader) {
				err = fmt.Errorf("%w: %v", ErrUnknownOutcome, err)
			}
			lastErr = err
		case errors.Is(err, errCommittedEarlier):
			return nil, fmt.Errorf("%w: %v (the result of that attempt is not known here)", ErrUnknownOutcome, err)
		case errors.Is(err, ErrUnknownOutcome):
			// Sent, and no answer from that leader.
			switch {
			case budget.Err() != nil:
				return nil, err
			case op == opReadIndex:
				lastErr = err
			case req != nil && !req.unsafe:
				req.resend = true
				lastErr = err
				n.metrics.forwarded.WithLabelValues(opName(op), "resent").Inc()
			default:
				return nil, err
			}
		default:
			return resp, err
		}
		if budget.Err() != nil {
			if errors.Is(lastErr, ErrNoLeader) || errors.Is(lastErr, ErrUnknownOutcome) {
				return nil, lastErr
			}
			return nil, fmt.Errorf("%w: %v", ErrNoLeader, lastErr)
		}
		// Wait a little, or until Raft reports a new leader.
		sleep := backoff/2 + rand.N(backoff/2+1)
		t := time.NewTimer(sleep)
		select {
		case <-t.C:
		case <-changed:
			t.Stop()
		case <-budget.Done():
			t.Stop()
		}
		backoff = min(backoff*2, 100*time.Millisecond)
	}
}

// forward sends one request to the leader at addr and waits for its answer
// until the budget ends or Raft reports another leader. Its errors are
// those of CallLeader's classification: errDial (not sent), ErrNotLeader or
// ErrNoLeader from the peer (not run), ErrUnknownOutcome (sent, no answer),
// or the peer's own error.
func (n *Node) forward(budget context.Context, changed <-chan struct{}, addr string, op Op, payload []byte, req *onceRequest) ([]byte, error) {
	wireOp, wire := op, payload
	if req != nil && !req.legacy {
		wireOp, wire = opApplyOnce, req.encode(n.raft.CurrentTerm(), payload)
	}
	if a, ok := ActorFrom(budget); ok {
		// Carry who asked to the leader, which writes the audit line.
		wireOp, wire = wireOp|opWithActor, append(appendActor(make([]byte, 0, actorSize(a)+len(wire)), a), wire...)
	}
	// The call also ends when Raft reports another leader (changed): the
	// request may have been sent, so its outcome is then unknown. A report
	// that leaves this node following the same leader ends nothing: the
	// watcher may take Raft's observation of the leader this attempt was
	// sent to only after the attempt began (the first request after an
	// election), and that leader will answer.
	still := func() (<-chan struct{}, bool) {
		next := n.leaderChanged() // before reading the leader, as in CallLeader
		cur, _ := n.raft.LeaderWithID()
		return next, string(cur) == addr && n.raft.State() == raft.Follower
	}
	resp, err := n.pool.callStop(budget, changed, still, addr, wireOp, wire, forwardDialTimeout)
	n.metrics.forwarded.WithLabelValues(opName(op), forwardOutcome(err)).Inc()
	var re *RemoteError
	var de errDial
	switch {
	case err == nil:
		return resp, nil
	case errors.As(err, &de):
		return nil, err
	case errors.Is(err, ErrConnLost):
		return nil, fmt.Errorf("%w: %v", ErrUnknownOutcome, err)
	case errors.Is(err, errLeaderChanged):
		return nil, fmt.Errorf("%w: %s stopped answering: %v", ErrUnknownOutcome, addr, err)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return nil, fmt.Errorf("%w: no answer from the leader %s within %s", ErrUnknownOutcome, addr, n.cfg.LeaderWait)
	case errors.As(err, &re) && req != nil && !req.legacy && re.Code == "internal" && strings.Contains(re.Msg, "unknown rpc op"):
		// A leader that predates opApplyOnce: send plain applies to it,
		// which are not safe to re-send after an unknown outcome.
		req.legacy, req.unsafe = true, true
		return nil, errDial{err}
	}
	return nil, fromRemote(err)
}

// onceRequest is a forwarded write with the id that lets a later leader tell
// whether an earlier attempt was committed.
type onceRequest struct {
	id  [16]byte
	low uint64 // the commit index when the write was received: any attempt's entry is above it
	// resend: an earlier attempt's outcome is unknown.
	resend bool
	// legacy: the leader does not know opApplyOnce; unsafe: a plain apply
	// was sent, so an unknown outcome cannot be resolved.
	legacy, unsafe bool
}

func newOnceRequest(low uint64, _ []byte) *onceRequest {
	r := &onceRequest{low: low}
	_, _ = crand.Read(r.id[:])
	return r
}

// onceHeader is the length of opApplyOnce's header: id, term, low, flags.
const onceHeader = 16 + 8 + 8 + 1

// encode builds opApplyOnce's payload: the header, then the command. term
// is the term in which this node saw the peer as leader: the peer refuses
// the request if its term differs, so a request that reaches a leader late
// (after the sender gave up on it and re-sent it elsewhere) is not run.
func (r *onceRequest) encode(term uint64, cmd []byte) []byte {
	b := make([]byte, onceHeader, onceHeader+len(cmd))
	copy(b, r.id[:])
	binary.BigEndian.PutUint64(b[16:], term)
	binary.BigEndian.PutUint64(b[24:], r.low)
	if r.resend {
		b[32] = 1
	}
	return append(b, cmd...)
}

func decodeOnce(p []byte) (id []byte, term, low uint64, resend bool, cmd []byte, err error) {
	if len(p) < onceHeader {
		return nil, 0, 0, false, nil, errors.New("cluster: short apply-once request")
	}
	return p[:16], binary.BigEndian.Uint64(p[16:]), binary.BigEndian.Uint64(p[24:]), p[32] == 1, p[onceHeader:], nil
}

// onceExtension marks a log entry's Extensions as a request id.
const onceExtension = "beacon-req1:"

// applyOnceLocal commits cmd on this node, which must lead (in term, unless
// term is 0), tagging the log entry with the request id. When resend is set
// an earlier attempt may have reached another leader, so it first waits
// until this leader has applied everything of earlier terms (its barrier)
// and looks for the id in its log after index low: an entry there was
// committed (it is in this leader's log, so it will be), and the write is
// not run again; an entry that is not there never will be committed, since
// every future leader's log descends from this one's. For an attempt found
// in the log it answers that attempt's result (accepted, or the FSM's
// rejection) when the FSM remembers it (fsm.Outcome), errCommittedEarlier
// otherwise.
func (n *Node) applyOnceLocal(ctx context.Context, id []byte, term, low uint64, resend bool, cmd []byte) (idx uint64, err error) {
	if n.raft.State() != raft.Leader {
		return 0, ErrNotLeader
	}
	if term != 0 && n.raft.CurrentTerm() != term {
		return 0, fmt.Errorf("%w: request sent for term %d, this leader is in term %d", ErrNotLeader, term, n.raft.CurrentTerm())
	}
	if len(id) != 16 {
		return 0, errors.New("cluster: a request id is 16 bytes")
	}
	if err := n.admit(cmd); err != nil {
		return 0, err
	}
	// An earlier attempt of the same request still being applied here is
	// not in the log yet: wait for its answer (see onceCalls).
	key := [16]byte(id)
	call, idx, err := n.once.begin(ctx, key)
	if call == nil {
		return idx, err
	}
	defer func() { n.once.end(key, call, idx, err) }()
	if resend {
		if err := n.waitLeaderReady(ctx); err != nil {
			return 0, err
		}
		idx, member, found, err := n.findRequest(id, low)
		if err != nil {
			return 0, fmt.Errorf("%w: %v", ErrUnknownOutcome, err)
		}
		if found {
			// Answer what the earlier attempt's answer would have said,
			// if this node's FSM still knows it.
			if err := n.fsm.WaitForIndex(ctx, idx); err != nil {
				return idx, fmt.Errorf("%w at index %d", errCommittedEarlier, idx)
			}
			if known, rej := n.fsm.Outcome(idx, member); known {
				if rej != nil {
					return idx, rej
				}
				return idx, nil
			}
			return idx, fmt.Errorf("%w at index %d", errCommittedEarlier, idx)
		}
	}
	return n.group.apply(ctx, key, term, cmd)
}

// findRequest looks for the write with request id id in the log above
// index low: an entry tagged with it (member 0), or a member of a group
// entry (fsm.GroupType) carrying it.
func (n *Node) findRequest(id []byte, low uint64) (idx uint64, member int, found bool, err error) {
	const maxScan = 1 << 16
	last := n.raft.LastIndex()
	if last > low+maxScan {
		return 0, 0, false, fmt.Errorf("cluster: %d entries since the request arrived, too many to search", last-low)
	}
	tag := append([]byte(onceExtension), id...)
	var l raft.Log
	for i := last; i > low; i-- {
		if err := n.logs.GetLog(i, &l); err != nil {
			return 0, 0, false, fmt.Errorf("cluster: read log entry %d: %w", i, err)
		}
		if bytes.Equal(l.Extensions, tag) {
			return i, 0, true, nil
		}
		if l.Type == raft.LogCommand && len(l.Data) > 0 && fsm.MessageType(l.Data[0]) == fsm.GroupType {
			if at := fsm.FindInGroup(l.Data, id); at >= 0 {
				return i, at, true, nil
			}
		}
	}
	return 0, 0, false, nil
}

// waitLeaderReady waits until this leader has applied every entry of
// earlier terms (leaderReady), or fails with ErrNotLeader.
func (n *Node) waitLeaderReady(ctx context.Context) error {
	if n.leaderReady.Load() {
		return nil
	}
	wait := time.NewTimer(n.cfg.LeaderWait)
	defer wait.Stop()
	for !n.leaderReady.Load() {
		if n.raft.State() != raft.Leader {
			return ErrNotLeader
		}
		select {
		case <-time.After(5 * time.Millisecond):
		case <-wait.C:
			return ErrNotLeader
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// Apply commits cmd (an fsm-encoded command) through the leader and returns
// its log index once this node's own catalog has applied it, so a client
// reads its write on the node it wrote to. A command the FSM rejected returns
// its *fsm.RejectError. The wait for this node's own apply is bounded by
// the leader-wait as well: a server cut off from the leader right after the
// commit answers the write done (it is committed) once that has passed, as
// ApplyAcked does, and its reads wait for it (fsm.Store.NoteAcked) or
// answer 503 not_caught_up.
func (n *Node) Apply(ctx context.Context, cmd []byte) (uint64, error) {
	start := time.Now()
	resp, err := n.CallLeader(ctx, opApply, cmd)
	idx, _ := parseIndex(resp)
	if err != nil {
		return idx, err
	}
	if n.fsm.AppliedIndex() < idx {
		wctx, cancel := context.WithTimeout(ctx, n.cfg.LeaderWait)
		err := n.fsm.WaitForIndex(wctx, idx)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return idx, ctx.Err()
			}
			// Committed, and not here yet: answered as ApplyAcked would.
			n.fsm.Store().NoteAcked(idx)
		}
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
	idx, _ := parseIndex(resp)
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
	if err := n.admit(cmd); err != nil {
		return 0, err
	}
	start := time.Now()
	return n.answerPlain(ctx, cmd, n.raft.ApplyLog(raft.Log{Data: cmd}, n.cfg.LeaderWait), start)
}

// answerPlain waits for f, the plain entry of cmd handed to Raft at start,
// and answers it as answer does, or with Raft's error (see applied).
func (n *Node) answerPlain(ctx context.Context, cmd []byte, f raft.ApplyFuture, start time.Time) (uint64, error) {
	resp, err := n.applied(f, start)
	if err != nil {
		return 0, err
	}
	res, ok := resp.(fsm.ApplyResult)
	if !ok {
		return f.Index(), fmt.Errorf("cluster: unexpected apply response %T", resp)
	}
	return n.answer(ctx, cmd, res)
}

// answer turns the FSM's result for cmd into a write's answer: its index,
// or its rejection; an accepted write gets its audit line.
func (n *Node) answer(ctx context.Context, cmd []byte, res fsm.ApplyResult) (uint64, error) {
	if res.Err != nil {
		return res.Index, res.Err
	}
	n.auditWrite(ctx, cmd, res)
	return res.Index, nil
}

// readIndexAt turns the leader's commit index into a read index: the last
// entry at or below it that reaches the FSM (a command or a configuration),
// or this node's applied index if none is above that. Barriers and no-ops
// never reach the FSM, so no node's applied index would ever reach one of
// them: a read index that named the nudge's barrier would wait forever.
// Under load the top entry is almost always a command, read from the log
// cache.
func (n *Node) readIndexAt(commit uint64) (uint64, error) {
	applied := n.fsm.AppliedIndex()
	var l raft.Log
	for idx := commit; idx > applied; idx-- {
		if err := n.logs.GetLog(idx, &l); err != nil {
			return 0, fmt.Errorf("cluster: read index: log entry %d: %w", idx, err)
		}
		if l.Type == raft.LogCommand || l.Type == raft.LogConfiguration {
			return idx, nil
		}
	}
	return applied, nil
}

// ConsistentIndex makes the next local read linearizable: it obtains a read
// index from the leader (which confirms its leadership with a quorum round
// trip) and waits until this node has applied it.
// Reads waiting at the same moment share one read index (readBatcher).
//
// The whole wait fits one Config.LeaderWait from the call (or ctx's
// deadline, if sooner): waiting for the request already in flight, the
// round trip to the leader and applying up to the index. Past it the read
// fails with ErrNoLeader (a 503 the client may retry elsewhere).
//
// It makes no context of its own unless it has to wait for this node to
// apply the index: a child context with a deadline (a timer, and a place in
// the parent's list of children) cost a consistent read 3-4 µs of CPU, a
// twentieth of all it costs on the follower asked.
func (n *Node) ConsistentIndex(ctx context.Context) (uint64, error) {
	deadline := time.Now().Add(n.cfg.LeaderWait)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	idx, err := n.readIndex(ctx, deadline)
	if err == nil && n.fsm.AppliedIndex() < idx {
		budget, cancel := context.WithDeadline(ctx, deadline)
		err = n.fsm.WaitForIndex(budget, idx)
		cancel()
	}
	if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
		// This read's own budget ended (not the caller's).
		if idx == 0 {
			return 0, fmt.Errorf("%w: no read index within the leader-wait (%s)", ErrNoLeader, n.cfg.LeaderWait)
		}
		return 0, fmt.Errorf("%w: this node had not applied the read index %d within the leader-wait (%s)", ErrNoLeader, idx, n.cfg.LeaderWait)
	}
	if err != nil {
		return 0, err
	}
	return idx, nil
}

// readIndexLocal serves a read index on the leader. Every write this leader
// acknowledged was committed first, and the barrier run when it took office
// covers earlier terms; so its commit index, taken before a successful
// quorum check, bounds every acknowledged write. It also bounds everything
// any node has applied (a follower applies only what the leader said was
// committed), so a read never misses what an earlier read saw: the applied
// index, used until 2026-12-05, lags the commit index while the leader's FSM
// catches up, and a read on one follower could then miss a write that a
// finished read on another had returned (TestAReadNeverMissesWhatAnEarlierReadSaw).
//
// The caller has waited for this leader to be ready (waitLeaderReady).
func (n *Node) readIndexLocal(ctx context.Context) (uint64, error) {
	idx, err := n.readIndexAt(n.raft.CommitIndex())
	if err != nil {
		return 0, err
	}
	if err := n.await(n.raft.VerifyLeader()); err != nil {
		return 0, fmt.Errorf("%w: %v", ErrNotLeader, err)
	}
	if n.hasOtherServers() && !n.provenLeader() {
		// hashicorp/raft's verification counts heartbeat answers that
		// arrive after it was registered, even to heartbeats sent before
		// a stall of this process (a SIGSTOP): right after one, or before
		// this leader proved itself, only a barrier committed now shows
		// that it still leads (cluster/DESIGN.md, "Consistent reads").
		wait := n.cfg.LeaderWait
		if d, ok := ctx.Deadline(); ok {
			wait = min(wait, time.Until(d))
		}
		if wait <= 0 {
			return 0, context.DeadlineExceeded
		}
		if err := n.await(n.raft.Barrier(wait)); err != nil {
			return 0, fmt.Errorf("%w: %v", ErrNotLeader, err)
		}
	}
	if !n.leaderReady.Load() {
		return 0, ErrNotLeader
	}
	return idx, nil
}
