package health

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"time"

	"github.com/beaconhq/beacon/fsm"
)

// rpcTTL is the first byte of a TTL report on the health RPC; other kinds
// may follow.
const rpcTTL = 'T'

// MaxMetrics caps the custom metrics of one report.
const MaxMetrics = 32

// ttlReport is a TTL update travelling to the leader.
type ttlReport struct {
	Check   string             `json:"c"`
	Status  fsm.Health         `json:"s"`
	Output  string             `json:"o,omitempty"`
	Metrics map[string]float64 `json:"m,omitempty"`
}

type ttlAnswer struct {
	Index uint64 `json:"i"`
	// Wrote: the report changed the check and Index is that write's
	// (false for a heartbeat that changed nothing).
	Wrote bool `json:"w,omitempty"`
}

// ReportTTL delivers a TTL report (pass, warn or fail, with optional output
// and custom metrics) for check id to the leader, from any node. It returns
// the report's index once this node has applied it (at most ttlApplyWait, 1 s,
// after the leader's commit; reads on this node wait for it either way), so
// a read on this node afterwards sees the report's effect. A report that changes nothing writes nothing. Errors:
// *fsm.RejectError with fsm.ErrNotFound (no such check) or fsm.ErrInvalid
// (not a TTL check, bad status or metrics), or the cluster's errors.
func (h *Health) ReportTTL(ctx context.Context, id string, status fsm.Health, output string, metrics map[string]float64) (uint64, error) {
	if !status.Valid() {
		return 0, &fsm.RejectError{Kind: fsm.ErrInvalid, Msg: fmt.Sprintf("invalid status %q", status)}
	}
	if len(metrics) > MaxMetrics {
		return 0, &fsm.RejectError{Kind: fsm.ErrInvalid, Msg: fmt.Sprintf("more than %d metrics", MaxMetrics)}
	}
	for k, v := range metrics {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return 0, &fsm.RejectError{Kind: fsm.ErrInvalid, Msg: fmt.Sprintf("metric %q is not a finite number", k)}
		}
	}
	b, err := json.Marshal(ttlReport{Check: id, Status: status, Output: fsm.EscapeControlMax(output, h.cfg.MaxOutput), Metrics: metrics})
	if err != nil {
		return 0, err
	}
	resp, err := h.cl.CallLeader(ctx, append([]byte{rpcTTL}, b...))
	if err != nil {
		return 0, err
	}
	var a ttlAnswer
	if err := json.Unmarshal(resp, &a); err != nil {
		return 0, fmt.Errorf("health: bad answer from leader: %w", err)
	}
	// Committed: reads on this node wait for it (NoteAcked), so the answer
	// waits for this node's own apply only so long. A node cut off from the
	// leader right after the commit answers the report as accepted, which
	// it is, rather than holding the request for ever.
	if h.fsm.AppliedIndex() >= a.Index {
		return a.Index, nil
	}
	h.fsm.Store().NoteAcked(a.Index)
	wctx, cancel := context.WithTimeout(ctx, ttlApplyWait)
	defer cancel()
	if err := h.fsm.WaitForIndex(wctx, a.Index); err != nil && ctx.Err() != nil {
		return a.Index, err
	}
	return a.Index, nil
}

// ttlApplyWait bounds how long a TTL report waits for this node to apply
// the leader's commit of it (see ReportTTL): under the Go client's 2 s
// attempt timeout, and a node that applies later still has its reads wait.
const ttlApplyWait = time.Second

// ServeRPC handles the health RPC on the leader (register it with the
// cluster's internal RPC). It answers ErrNotLeader when this node does not
// run the coordinator.
func (h *Health) ServeRPC(ctx context.Context, payload []byte) ([]byte, error) {
	if len(payload) == 0 || payload[0] != rpcTTL {
		return nil, fmt.Errorf("health: unknown rpc payload")
	}
	var rep ttlReport
	if err := json.Unmarshal(payload[1:], &rep); err != nil {
		return nil, fmt.Errorf("health: bad ttl report: %w", err)
	}
	c := h.coordinator()
	if c == nil {
		return nil, ErrNotLeader
	}
	req := &ttlRequest{report: rep, at: time.Now(), resp: make(chan ttlReply, 1)}
	select {
	case c.reqs <- req:
	case <-c.ctx.Done():
		return nil, ErrNotLeader
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	select {
	case r := <-req.resp:
		if r.err != nil {
			return nil, r.err
		}
		if h.cfg.AuditTTL != nil {
			h.cfg.AuditTTL(ctx, rep.Check, rep.Status, r.index, r.wrote)
		}
		return json.Marshal(ttlAnswer{Index: r.index, Wrote: r.wrote})
	case <-c.ctx.Done():
		// Leadership ended before the report was handled; a report is
		// safe to deliver again, so let the caller retry on the new leader.
		return nil, ErrNotLeader
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
