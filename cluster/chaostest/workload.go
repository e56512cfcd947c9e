package chaostest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/beaconhq/beacon/api/client"
)

// WorkloadService is the service the workload registers instances of.
const WorkloadService = "chaos"

// WorkloadConfig shapes the workload.
type WorkloadConfig struct {
	// Clients is the number of concurrent workers (default 6).
	Clients int
	// Keys is the number of instance ids they share (default 5), so that
	// operations on one id collide.
	Keys int
	// OpTimeout bounds one operation (default 5s); a write that times out
	// has an unknown outcome.
	OpTimeout time.Duration
	// MaxThink is the longest pause between two operations of a worker
	// (default 20ms; the pause is uniform in [0, MaxThink]).
	MaxThink time.Duration
	// MaxOpsPerClient bounds each worker (default 1,000,000).
	MaxOpsPerClient int
	// Mix is the share of each kind, in percent: put, del, consistent read;
	// the rest are default reads. Default 35, 15, 30 (so 20 default reads).
	PutPct, DelPct, ConsistentPct int
}

func (w *WorkloadConfig) defaults() {
	if w.Clients == 0 {
		w.Clients = 6
	}
	if w.Keys == 0 {
		w.Keys = 5
	}
	if w.OpTimeout == 0 {
		w.OpTimeout = 5 * time.Second
	}
	if w.MaxThink == 0 {
		w.MaxThink = 20 * time.Millisecond
	}
	if w.MaxOpsPerClient == 0 {
		w.MaxOpsPerClient = 1_000_000
	}
	if w.PutPct == 0 && w.DelPct == 0 && w.ConsistentPct == 0 {
		w.PutPct, w.DelPct, w.ConsistentPct = 35, 15, 30
	}
}

// Key returns the i-th instance id of the workload.
func Key(i int) string { return fmt.Sprintf("i%d", i) }

// Workload runs concurrent clients against every node of a cluster and
// records what they do in a History.
type Workload struct {
	cfg     WorkloadConfig
	c       *Cluster
	h       *History
	seed    uint64
	process atomic.Int64
	wg      sync.WaitGroup
}

// NewWorkload prepares a workload; Run starts it.
func NewWorkload(c *Cluster, h *History, cfg WorkloadConfig, seed uint64) *Workload {
	cfg.defaults()
	w := &Workload{cfg: cfg, c: c, h: h, seed: seed}
	w.process.Store(int64(cfg.Clients))
	return w
}

// Run runs the workers until ctx ends (or each reaches MaxOpsPerClient) and
// waits for them.
func (w *Workload) Run(ctx context.Context) {
	for i := 0; i < w.cfg.Clients; i++ {
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			w.worker(ctx, i)
		}()
	}
	w.wg.Wait()
}

func (w *Workload) worker(ctx context.Context, id int) {
	rng := rand.New(rand.NewPCG(w.seed, uint64(id)+1))
	process := id
	seq := 0
	for n := 0; n < w.cfg.MaxOpsPerClient && ctx.Err() == nil; n++ {
		node := rng.IntN(len(w.c.Nodes))
		key := Key(rng.IntN(w.cfg.Keys))
		var kind Kind
		switch r := rng.IntN(100); {
		case r < w.cfg.PutPct:
			kind = Put
		case r < w.cfg.PutPct+w.cfg.DelPct:
			kind = Del
		case r < w.cfg.PutPct+w.cfg.DelPct+w.cfg.ConsistentPct:
			kind = ConsistentRead
		default:
			kind = Read
		}
		if (kind == Read || kind == ConsistentRead) && rng.IntN(2) == 0 {
			key = AllKeys
		}
		var value string
		if kind == Put {
			seq++
			value = fmt.Sprintf("w%d-%d", id, seq)
		}
		op := w.Do(ctx, process, id, node, kind, key, value)
		if op.Outcome == Unknown {
			// The request may still be in flight: like Jepsen, this worker
			// continues as a new process.
			process = int(w.process.Add(1)) - 1
		}
		if think := w.cfg.MaxThink; think > 0 {
			select {
			case <-ctx.Done():
			case <-time.After(time.Duration(rng.Int64N(int64(think) + 1))):
			}
		}
	}
}

// Observe reads the whole service with a default read on every node every
// interval until ctx ends, so that each node's staleness and monotonicity
// are sampled even while the workers are stuck on a faulty node. Observers
// are processes -100-node.
func (w *Workload) Observe(ctx context.Context, every time.Duration) {
	var wg sync.WaitGroup
	for i := range w.c.Nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := time.NewTicker(every)
			defer t.Stop()
			for n := 0; n < 1_000_000; n++ {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
				DoOp(ctx, w.c, w.h, time.Second, -100-i, -1, i, Read, AllKeys, "")
			}
		}()
	}
	wg.Wait()
}

// Do performs one operation through node and records it. A put registers
// key with value (carried in the instance's meta "v"); reads record the
// value read, "" if absent; a read of AllKeys lists the whole service.
func (w *Workload) Do(ctx context.Context, process, worker, node int, kind Kind, key, value string) Op {
	return DoOp(ctx, w.c, w.h, w.cfg.OpTimeout, process, worker, node, kind, key, value)
}

// DoOp performs one operation against node i of c and records it in h.
func DoOp(ctx context.Context, c *Cluster, h *History, timeout time.Duration, process, worker, node int, kind Kind, key, value string) Op {
	n := c.Nodes[node]
	cl := c.Client(node)
	op := Op{
		Process: process, Worker: worker, Node: node, NodeName: n.Name, Incarnation: n.Incarnation(),
		Kind: kind, Key: key, Value: value,
	}
	octx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	op.Call = h.Now()
	var err error
	switch kind {
	case Put:
		op.Index, err = cl.Register(octx, WorkloadService, key, &client.Registration{
			Address: "192.0.2.1", Port: 8080, Meta: map[string]string{"v": value},
		})
	case Del:
		op.Index, err = cl.Deregister(octx, WorkloadService, key)
	default:
		var meta *client.QueryMeta
		q := &client.QueryOptions{Consistent: kind != Read}
		if key == AllKeys {
			var insts []client.Instance
			insts, meta, err = cl.Instances(octx, WorkloadService, q)
			if err == nil {
				op.Values = map[string]string{}
				for _, in := range insts {
					op.Values[in.ID] = in.Meta["v"]
				}
			}
		} else {
			var inst *client.Instance
			inst, meta, err = cl.Instance(octx, WorkloadService, key, q)
			if isCode(err, "not_found") {
				err = nil // absent; note that a 404 carries no read headers
			}
			if err == nil {
				op.Value = ""
				if inst != nil {
					op.Value = inst.Meta["v"]
				}
			}
		}
		if meta != nil && meta.Index > 0 {
			op.Index, op.LastContact, op.KnownLeader = meta.Index, meta.LastContact, meta.KnownLeader
		}
	}
	op.Return = h.Now()
	op.Outcome, op.Status, op.Code = Classify(err, op.IsWrite())
	if err != nil {
		op.Err = err.Error()
		if op.IsRead() {
			op.Value = ""
		}
	}
	if n.Incarnation() != op.Incarnation {
		// The node restarted while the operation ran: which incarnation
		// answered is unknown, so the answer is not attributed to either.
		op.Incarnation = -1
	}
	h.Add(op)
	return op
}

func isCode(err error, code string) bool {
	var ce *client.Error
	return errors.As(err, &ce) && ce.Code == code
}
