package fsm_test

import (
	"fmt"
	"testing"

	"github.com/beaconhq/beacon/fsm"
	"github.com/beaconhq/beacon/fsm/fsmtest"
	"github.com/hashicorp/raft"
)

// Outcome tells, for an applied index, whether the command was accepted or
// rejected (and why), and says "unknown" where its record does not reach:
// not applied yet, before a restore, or past the window of rejections.
func TestOutcomeRemembersRecentResultsAndKnowsWhereItsRecordEnds(t *testing.T) {
	f := fsm.New(nil)
	idx := uint64(0)
	apply := func(cmd []byte) uint64 {
		idx++
		f.Apply(&raft.Log{Index: idx, Type: raft.LogCommand, Data: cmd})
		return idx
	}
	ok := apply(fsmtest.Register(t, "a", "web"))
	bad := apply(fsmtest.Register(t, "", "web"))
	if known, err := f.Outcome(ok, 0); !known || err != nil {
		t.Fatalf("accepted write: known %v, err %v", known, err)
	}
	if known, err := f.Outcome(bad, 0); !known || err == nil || err.Code() != "invalid" {
		t.Fatalf("rejected write: known %v, err %v", known, err)
	}
	if known, _ := f.Outcome(idx+1, 0); known {
		t.Fatal("an index not applied yet is known")
	}
	// Past the window of remembered rejections, the oldest become unknown.
	for i := 0; i < 1100; i++ {
		apply(fsmtest.Register(t, "", fmt.Sprintf("web%d", i)))
	}
	if known, _ := f.Outcome(bad, 0); known {
		t.Fatal("a rejection evicted from the window is still known")
	}
	if known, err := f.Outcome(idx, 0); !known || err == nil {
		t.Fatalf("the latest rejection: known %v, err %v", known, err)
	}
	// A restore (here the test hook that does the same) forgets everything
	// applied before it.
	f.ForgetOutcomesForTest()
	if known, _ := f.Outcome(idx, 0); known {
		t.Fatal("an index before the restore is known")
	}
	next := apply(fsmtest.Register(t, "b", "web"))
	if known, err := f.Outcome(next, 0); !known || err != nil {
		t.Fatalf("a write after the restore: known %v, err %v", known, err)
	}
}
