package fsm

import (
	"bytes"
	"testing"
)

// FuzzGroupLen: groupLen, the capacity applyGroup gives its results,
// counts every member of a group SplitGroup accepts, and never fewer than
// SplitGroup passes on before a fault.
func FuzzGroupLen(f *testing.F) {
	var id [GroupIDLen]byte
	f.Add(AppendGroupMember(AppendGroupMember([]byte{byte(GroupType)}, id, []byte{1, 0x80}), id, []byte{2, 0x80}))
	f.Add([]byte{byte(GroupType)})
	f.Add(AppendGroupMember([]byte{byte(GroupType)}, id, bytes.Repeat([]byte{1}, 300)))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 || MessageType(data[0]) != GroupType {
			return // applyGroup sees only group entries
		}
		passed := 0
		err := SplitGroup(data, func(int, []byte, []byte) bool { passed++; return true })
		n := groupLen(data)
		if (err == nil && n != passed) || n < passed {
			t.Fatalf("groupLen %d, SplitGroup passed %d members (%v)", n, passed, err)
		}
	})
}
