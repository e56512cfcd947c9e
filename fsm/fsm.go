package fsm

import (
	"context"
	"fmt"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// FSM is the Raft state machine over the Store. Raft calls Apply, ApplyBatch,
// Snapshot and Restore from its single FSM goroutine; every other method is
// safe for concurrent use.
type FSM struct {
	store    *Store
	logger   hclog.Logger
	handlers map[MessageType]handler

	// observer, if set, sees every applied command.
	observer func(Applied)
	// metrics, once RegisterMetrics ran, count applied commands.
	metrics  *metrics
	outcomes outcomes

	wtx writeTxn
	// applied is ApplyBatch's list of the batch's commands for the
	// observer and the metrics, kept between batches (emptied, so that it
	// holds no command) to spare an allocation per batch.
	applied []Applied
}

// Applied describes one command after it was applied, for observers: its
// type, index, the decoded command and, if it was rejected, why.
//
// The command is read-only: a registration's Tags and (as MetaMap returns
// it) meta may be the catalog's shared values (decodeRegisterShared), and
// its Meta field is nil when the meta was decoded straight into them; read
// the meta with RegisterRequest.MetaMap.
type Applied struct {
	Type  MessageType
	Index uint64
	Cmd   Command
	Err   *RejectError
}

// New returns an FSM over an empty store.
func New(logger hclog.Logger) *FSM {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	f := &FSM{
		store:  NewStore(),
		logger: logger,
		wtx:    writeTxn{tables: map[string]uint64{}, services: map[string]*serviceTouch{}},
	}
	f.handlers = dispatchTable()
	return f
}

// SetObserver installs fn to be called, on the FSM goroutine, after each
// applied command. It must not block. Call it before Raft starts.
func (f *FSM) SetObserver(fn func(Applied)) { f.observer = fn }

// Store returns the catalog this FSM maintains.
func (f *FSM) Store() *Store { return f.store }

// AppliedIndex returns the index of the last log entry this FSM has applied
// (commands and configuration changes; Raft's no-op entries are not seen).
func (f *FSM) AppliedIndex() uint64 { return f.store.applied.Load() }

// WaitForIndex blocks until the FSM has applied index, or ctx ends.
func (f *FSM) WaitForIndex(ctx context.Context, index uint64) error {
	if f.store.applied.Load() >= index {
		return nil
	}
	select {
	case <-f.store.appliedWaitCh(index):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (f *FSM) advance(index uint64) { f.store.advance(index) }

// Apply applies one log entry. See ApplyBatch.
func (f *FSM) Apply(l *raft.Log) interface{} {
	return f.ApplyBatch([]*raft.Log{l})[0]
}

// ApplyBatch applies a batch of committed entries in one store transaction,
// so that a burst of registrations costs one commit and one round of
// wake-ups. Each command's result is an ApplyResult. An entry that cannot
// be decoded panics: the node must stop rather than drift from its peers.
func (f *FSM) ApplyBatch(logs []*raft.Log) []interface{} {
	out := make([]interface{}, len(logs))
	st := f.store.cur.Load()
	tx := st.db.Txn(true)
	w := &f.wtx
	w.begin(tx, st)
	var last uint64
	applied := f.applied[:0]
	for i, l := range logs {
		last = l.Index
		if l.Type != raft.LogCommand {
			continue
		}
		if len(l.Data) == 0 {
			panic(fmt.Sprintf("fsm: empty log entry at index %d", l.Index))
		}
		if MessageType(l.Data[0]) == GroupType {
			out[i] = f.applyGroup(w, l.Index, l.Data, &applied)
			continue
		}
		res, a, ok := f.applyCommand(w, l.Index, 0, l.Data)
		out[i] = res
		if ok && (f.observer != nil || f.metrics != nil) {
			applied = append(applied, a)
		}
	}
	w.finish()
	// go-memdb wakes its watchers inside Commit, before the committed
	// service records are published for readers (rowCache.committed):
	// publishing is odd in between, and ServiceList then reads go-memdb,
	// so that no read goes back behind one that saw the commit.
	f.store.publishing.Add(1)
	tx.Commit()
	w.rows.committed()
	f.store.publishing.Add(1)
	w.published(f.store)
	w.tx = nil
	if last > 0 {
		f.advance(last)
	}
	if f.metrics != nil {
		f.metrics.transitioned(w.transitions)
	}
	for _, a := range applied {
		if f.metrics != nil {
			f.metrics.count(a)
		}
		if f.observer != nil {
			f.observer(a)
		}
	}
	clear(applied)
	f.applied = applied[:0]
	return out
}

// applyCommand applies one command (data, its type byte first) at index in
// w; member is its position in a group entry (0 for a plain entry). ok is
// false for an unknown command skipped.
func (f *FSM) applyCommand(w *writeTxn, index uint64, member int, data []byte) (res ApplyResult, a Applied, ok bool) {
	t := MessageType(data[0])
	h, known := f.handlers[t&^SkipUnknown]
	if !known {
		if t&SkipUnknown != 0 {
			f.logger.Warn("skipping unknown command", "type", uint8(t), "index", index)
			return ApplyResult{Index: index}, Applied{}, false
		}
		panic(fmt.Sprintf("fsm: unknown command type %d at index %d", uint8(t), index))
	}
	w.index, w.visibleAt = index, 0
	cmd, rerr := h(w, data[1:])
	res = ApplyResult{Index: index, Err: rerr, Cmd: cmd}
	if rerr == nil && w.visibleAt != 0 {
		res.Index = w.visibleAt
	}
	if rerr != nil {
		f.outcomes.reject(index, member, rerr)
	}
	return res, Applied{Type: t, Index: index, Cmd: cmd, Err: rerr}, true
}

var _ raft.BatchingFSM = (*FSM)(nil)
