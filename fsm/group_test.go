package fsm_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/beaconhq/beacon/fsm"
	"github.com/beaconhq/beacon/fsm/fsmtest"
)

// groupOf builds a group entry of cmds; member i gets the request id
// {i+1, i+1, ...}.
func groupOf(cmds ...[]byte) []byte {
	b := []byte{byte(fsm.GroupType)}
	for i, c := range cmds {
		var id [fsm.GroupIDLen]byte
		for j := range id {
			id[j] = byte(i + 1)
		}
		b = fsm.AppendGroupMember(b, id, c)
	}
	return b
}

// groupMembers is a mix of commands for a populated FSM: new and updated
// instances, a rejected compare-and-delete, two members that touch the same
// instance in turn, a check update, a token.
func groupMembers(t testing.TB) [][]byte {
	return [][]byte{
		fsmtest.Register(t, "web-3", "web", fsmtest.WithAddress("10.0.0.9", 80)),
		fsmtest.Deregister(t, "web", "web-2", func(r *fsm.DeregisterRequest) { r.IfIndex = 1 }), // rejected: web-2 was not written at 1
		fsmtest.Register(t, "web-1", "web", fsmtest.WithAddress("10.0.0.1", 8081)),
		fsmtest.Register(t, "db-1", "db", fsmtest.WithChecks(fsmtest.TTLCheck("ttl", fsm.Critical))),
		fsmtest.Deregister(t, "db", "db-1"),
		fsmtest.Register(t, "db-1", "db", fsmtest.WithAddress("10.0.0.7", 5432)),
		fsmtest.CheckUpdate(t, "", t0+20, fsm.CheckUpdate{Check: "web:web-1:ttl", Status: fsm.Critical, Output: "late"}),
		fsmtest.TokenSet(t, fsm.Token{Accessor: "acc-9", SecretHash: "hash-9"}),
		fsmtest.Register(t, "", "web"), // rejected: no id
	}
}

// TestAGroupEntryAppliesLikeItsMembersInOneBatch: a group entry leaves the
// catalog exactly as its members applied one after the other in the same
// batch at the same index would, and answers each member with that
// member's own result, rejections included (which change nothing and do
// not stop the members after them).
func TestAGroupEntryAppliesLikeItsMembersInOneBatch(t *testing.T) {
	members := groupMembers(t)
	grouped, plain := populate(t), populate(t)
	idx := grouped.AppliedIndex() + 1

	raw := grouped.Apply(fsmtest.Log(idx, groupOf(members...)))
	got, ok := raw.(fsm.GroupResult)
	if !ok {
		t.Fatalf("Apply(group) = %T, want fsm.GroupResult", raw)
	}
	logs := make([]*raft.Log, len(members))
	for i, m := range members {
		logs[i] = fsmtest.Log(idx, m)
	}
	want := plain.ApplyBatch(logs)

	if len(got) != len(members) {
		t.Fatalf("%d results for %d members", len(got), len(members))
	}
	rejected := 0
	for i := range members {
		w := want[i].(fsm.ApplyResult)
		if got[i].Index != w.Index || (got[i].Err == nil) != (w.Err == nil) {
			t.Errorf("member %d: result %+v, want %+v", i, got[i], w)
		}
		if got[i].Err != nil {
			rejected++
			if got[i].Err.Code() != w.Err.Code() {
				t.Errorf("member %d: rejected %q, want %q", i, got[i].Err.Code(), w.Err.Code())
			}
		} else if got[i].Cmd == nil {
			t.Errorf("member %d: no decoded command in its result (the audit line needs it)", i)
		}
	}
	if rejected != 2 {
		t.Errorf("%d members rejected, want 2 (the compare-and-delete and the empty id)", rejected)
	}
	assertSameStore(t, dumpStore(plain.Store()), dumpStore(grouped.Store()))
	if grouped.AppliedIndex() != idx {
		t.Errorf("AppliedIndex = %d, want %d", grouped.AppliedIndex(), idx)
	}
	if inst, _ := instance(t, grouped, "db", "db-1"); inst.Address != "10.0.0.7" || inst.ModifyIndex != idx {
		t.Errorf("db-1 = %s:%d at %d, want the last member's 10.0.0.7 at %d", inst.Address, inst.Port, inst.ModifyIndex, idx)
	}
}

// TestOutcomesOfGroupMembersAreTheirOwn: Outcome tells a group member's
// rejection from its neighbours' acceptance, by position.
func TestOutcomesOfGroupMembersAreTheirOwn(t *testing.T) {
	f := populate(t)
	idx := f.AppliedIndex() + 1
	f.Apply(fsmtest.Log(idx, groupOf(groupMembers(t)...)))
	for i, wantRejected := range []bool{false, true, false, false, false, false, false, false, true} {
		known, rej := f.Outcome(idx, i)
		if !known || (rej != nil) != wantRejected {
			t.Errorf("Outcome(%d, member %d) = %v, %v; want known, rejected %v", idx, i, known, rej, wantRejected)
		}
	}
	if known, rej := f.Outcome(idx, 0); !known || rej != nil {
		t.Errorf("member 0: %v %v", known, rej)
	}
}

// TestGroupFramingRoundTripsAndFindsMembers: SplitGroup returns what
// AppendGroupMember wrote, FindInGroup finds a member by its id, and the
// framing is fixed (golden bytes: the log outlives binaries).
func TestGroupFramingRoundTripsAndFindsMembers(t *testing.T) {
	cmds := [][]byte{{byte(fsm.RegisterType), 0x80}, bytes.Repeat([]byte{byte(fsm.DeregisterType)}, 200)}
	data := groupOf(cmds...)
	var seen [][]byte
	if err := fsm.SplitGroup(data, func(i int, id, cmd []byte) bool {
		if id[0] != byte(i+1) || len(id) != fsm.GroupIDLen {
			t.Errorf("member %d: id % x", i, id)
		}
		seen = append(seen, cmd)
		return true
	}); err != nil {
		t.Fatal(err)
	}
	if len(seen) != 2 || !bytes.Equal(seen[0], cmds[0]) || !bytes.Equal(seen[1], cmds[1]) {
		t.Errorf("members = %x, want %x", seen, cmds)
	}
	id2 := bytes.Repeat([]byte{2}, fsm.GroupIDLen)
	if at := fsm.FindInGroup(data, id2); at != 1 {
		t.Errorf("FindInGroup(id 2) = %d, want 1", at)
	}
	if at := fsm.FindInGroup(data, bytes.Repeat([]byte{9}, fsm.GroupIDLen)); at != -1 {
		t.Errorf("FindInGroup(unknown id) = %d, want -1", at)
	}
	// type 10 | id 01 x16 | len 2 | 01 80 | id 02 x16 | len 200 (c8 01) | ...
	want := "0a" + strings.Repeat("01", 16) + "02" + "0180" + strings.Repeat("02", 16) + "c801"
	if got := hexOf(data[:len(want)/2]); got != want {
		t.Errorf("group framing\n got  %s\n want %s", got, want)
	}
}

func hexOf(b []byte) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, c := range b {
		out = append(out, digits[c>>4], digits[c&15])
	}
	return string(out)
}

// TestMalformedGroupsStopTheNode: a group entry that does not split into
// members stops the node before anything of it is applied, like any entry
// that does not decode.
func TestMalformedGroupsStopTheNode(t *testing.T) {
	reg := fsmtest.Register(t, "web-9", "web")
	good := groupOf(reg)
	for name, data := range map[string][]byte{
		"no members":             {byte(fsm.GroupType)},
		"a short id":             append([]byte{byte(fsm.GroupType)}, 1, 2, 3),
		"a length past the end":  good[:len(good)-1],
		"an empty member":        append(append([]byte{byte(fsm.GroupType)}, make([]byte, fsm.GroupIDLen)...), 0),
		"a group in a group":     groupOf(groupOf(reg)),
		"an undecodable member":  groupOf(reg, []byte{byte(fsm.RegisterType), 0xc1}),
		"an unknown member type": groupOf(reg, []byte{0x7f, 0x80}),
	} {
		t.Run(name, func(t *testing.T) {
			f := newFSM(t)
			mustPanic(t, func() { f.Apply(fsmtest.Log(1, data)) })
			if f.AppliedIndex() != 0 {
				t.Errorf("AppliedIndex = %d after a panic, want 0", f.AppliedIndex())
			}
			if err := fsm.SplitGroup(data, func(int, []byte, []byte) bool { return true }); strings.HasPrefix(name, "an un") != (err == nil) {
				t.Errorf("SplitGroup: %v", err)
			} else if err != nil && !errors.Is(err, fsm.ErrBadGroup) {
				t.Errorf("SplitGroup: %v, want ErrBadGroup", err)
			}
		})
	}
}

// FuzzSplitGroup: SplitGroup never panics, and a group it accepts is
// rebuilt byte for byte from the members it returned.
func FuzzSplitGroup(f *testing.F) {
	f.Add(groupOf([]byte{1, 0x80}, []byte{2, 0x80}))
	f.Add([]byte{byte(fsm.GroupType)})
	f.Add(groupOf(bytes.Repeat([]byte{1}, 300)))
	f.Fuzz(func(t *testing.T, data []byte) {
		rebuilt := []byte{byte(fsm.GroupType)}
		err := fsm.SplitGroup(data, func(_ int, id, cmd []byte) bool {
			rebuilt = fsm.AppendGroupMember(rebuilt, [fsm.GroupIDLen]byte(id), cmd)
			return true
		})
		if err == nil && !bytes.Equal(rebuilt, data) {
			// A non-minimal uvarint length is accepted; then the bytes
			// differ but the members must not.
			var again [][]byte
			if fsm.SplitGroup(rebuilt, func(_ int, _, cmd []byte) bool { again = append(again, cmd); return true }) != nil {
				t.Fatalf("the rebuilt group does not split")
			}
			var first [][]byte
			_ = fsm.SplitGroup(data, func(_ int, _, cmd []byte) bool { first = append(first, cmd); return true })
			if len(first) != len(again) {
				t.Fatalf("members differ after a rebuild: %d vs %d", len(first), len(again))
			}
			for i := range first {
				if !bytes.Equal(first[i], again[i]) {
					t.Fatalf("member %d differs after a rebuild", i)
				}
			}
		}
	})
}
