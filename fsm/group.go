package fsm

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// A group entry carries several clients' commands in one Raft log entry
// (group commit): the leader coalesces the writes that arrive while Raft is
// busy with the previous ones, so that a burst of registrations costs one
// log record, one msgpack frame and one replication slot instead of one
// each. Its data is GroupType followed by its members, each
//
//	request id (16 bytes) | uvarint length | command (as Encode makes it)
//
// The request id is the one a forwarded write carries (the cluster package
// looks a re-sent write up by it, see FindInGroup). Members are applied in
// order in the batch's transaction, each with its own result; they share
// the entry's index. A group is never a member of a group.
//
// A node too old to know GroupType stops at such an entry (it must not
// drift), so the leader writes groups only once every server says it reads
// them (cluster's LogFormat).

// GroupIDLen is the length of a group member's request id.
const GroupIDLen = 16

// GroupResult is what Apply returns for a group entry: one ApplyResult per
// member, in order.
type GroupResult []ApplyResult

// ErrBadGroup is returned by SplitGroup for data that is not a well-formed
// group entry.
var ErrBadGroup = errors.New("fsm: malformed group entry")

// AppendGroupMember appends one member to a group entry being built; start
// the entry with []byte{byte(GroupType)}.
func AppendGroupMember(b []byte, id [GroupIDLen]byte, cmd []byte) []byte {
	b = append(b, id[:]...)
	b = binary.AppendUvarint(b, uint64(len(cmd)))
	return append(b, cmd...)
}

// GroupMemberSize is how many bytes AppendGroupMember adds for cmd, at most.
func GroupMemberSize(cmd []byte) int { return GroupIDLen + binary.MaxVarintLen64 + len(cmd) }

// SplitGroup calls fn for each member of the group entry data (GroupType
// included), in order, until fn returns false. It returns ErrBadGroup if
// data is not a group entry, a member is cut short or empty, or a member is
// itself a group; members before the fault have been passed to fn.
func SplitGroup(data []byte, fn func(i int, id, cmd []byte) bool) error {
	if len(data) == 0 || MessageType(data[0]) != GroupType {
		return ErrBadGroup
	}
	b := data[1:]
	if len(b) == 0 {
		return fmt.Errorf("%w: no members", ErrBadGroup)
	}
	for i := 0; len(b) > 0; i++ {
		if len(b) < GroupIDLen {
			return fmt.Errorf("%w: member %d: short id", ErrBadGroup, i)
		}
		id := b[:GroupIDLen]
		b = b[GroupIDLen:]
		n, k := binary.Uvarint(b)
		if k <= 0 || n == 0 || n > uint64(len(b)-k) {
			return fmt.Errorf("%w: member %d: bad length", ErrBadGroup, i)
		}
		cmd := b[k : k+int(n)]
		b = b[k+int(n):]
		if MessageType(cmd[0])&^SkipUnknown == GroupType {
			return fmt.Errorf("%w: member %d is a group", ErrBadGroup, i)
		}
		if !fn(i, id, cmd) {
			return nil
		}
	}
	return nil
}

// groupLen counts the members SplitGroup passes on from the group entry
// data (all of them, for a well-formed one), without applying them.
func groupLen(data []byte) int {
	n := 0
	_ = SplitGroup(data, func(int, []byte, []byte) bool { n++; return true })
	return n
}

// FindInGroup returns the position of the member with request id id in
// the group entry data, or -1.
func FindInGroup(data, id []byte) int {
	at := -1
	_ = SplitGroup(data, func(i int, mid, _ []byte) bool {
		if string(mid) == string(id) {
			at = i
			return false
		}
		return true
	})
	return at
}

// applyGroup applies the members of the group entry l in w, in order.
// Like any entry, a group that does not decode stops the node.
func (f *FSM) applyGroup(w *writeTxn, index uint64, data []byte, applied *[]Applied) GroupResult {
	out := make(GroupResult, 0, groupLen(data))
	err := SplitGroup(data, func(i int, _, cmd []byte) bool {
		res, a, ok := f.applyCommand(w, index, i, cmd)
		out = append(out, res)
		if ok && (f.observer != nil || f.metrics != nil) {
			*applied = append(*applied, a)
		}
		return true
	})
	if err != nil {
		panic(fmt.Sprintf("%v at index %d", err, index))
	}
	return out
}
