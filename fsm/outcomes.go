package fsm

import "sync"

// outcomeWindow is how many recent rejections the FSM remembers.
const outcomeWindow = 1024

// outcomes remembers the result of the commands this FSM applied recently,
// so that a leader asked about a write whose earlier attempt it finds in
// its log can answer what a direct answer would have said (see Outcome):
// the rejections of the last outcomeWindow rejected commands, and from which
// index on the record is complete.
type outcomes struct {
	mu sync.Mutex
	// from: the record covers every command applied at an index >= from
	// (0: since this FSM started empty). A restore, or rejections falling
	// out of the window, move it up.
	from    uint64
	started bool
	rejects []rejected // by index
}

type rejected struct {
	index  uint64
	member int // position in a group entry; 0 for a plain entry
	err    *RejectError
}

func (o *outcomes) reject(index uint64, member int, err *RejectError) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.rejects) == outcomeWindow {
		o.from = o.rejects[0].index + 1
		o.rejects = append(o.rejects[:0], o.rejects[1:]...)
	}
	o.rejects = append(o.rejects, rejected{index, member, err})
}

func (o *outcomes) restored(index uint64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.from, o.rejects = index+1, nil
}

// Outcome reports the result of the command applied at index (member: its
// position in a group entry, 0 for a plain entry): known is false when this
// FSM cannot tell (the index is not applied yet, or it predates a snapshot
// restore or the window of remembered rejections); otherwise err is the
// command's rejection, or nil if it was accepted. Entries that were not
// commands (no-ops, barriers) count as accepted.
func (f *FSM) Outcome(index uint64, member int) (known bool, err *RejectError) {
	if index == 0 || index > f.AppliedIndex() {
		return false, nil
	}
	o := &f.outcomes
	o.mu.Lock()
	defer o.mu.Unlock()
	if index < o.from {
		return false, nil
	}
	for _, r := range o.rejects {
		if r.index == index && r.member == member {
			return true, r.err
		}
	}
	return true, nil
}

// ForgetOutcomesForTest makes Outcome unknown for everything applied so
// far, as a restore would (for tests of the callers' fallback).
func (f *FSM) ForgetOutcomesForTest() { f.outcomes.restored(f.AppliedIndex()) }
