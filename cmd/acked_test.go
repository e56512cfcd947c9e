package cmd_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/beaconhq/beacon/cluster/clustertest"
)

// A write through a follower is answered once the leader committed it
// (cluster.Node.ApplyAcked), before the follower applied it; the
// follower's reads wait for it, so the writer still reads its write there.
func TestAFollowerAnswersOnCommitAndStillReadsItsWrites(t *testing.T) {
	c := clustertest.New(t, 3)
	ctx := context.Background()
	c.WaitForVoters(3)
	f := follower(c)
	cl := c.Client(f)
	for i := 0; i < 40; i++ {
		id := fmt.Sprintf("seq-%d", i)
		idx := registerRetry(t, cl, "seq", id, reg("10.0.0.1", 8080+i))
		inst, meta, err := cl.Instance(ctx, "seq", id, nil)
		if err != nil || inst.ModifyIndex != idx || meta.Index < idx {
			t.Fatalf("write %d at index %d, then read on the same follower: %v %+v %+v", i, idx, err, inst, meta)
		}
		insts, _, err := cl.Instances(ctx, "seq", nil)
		if err != nil || len(insts) != i+1 {
			t.Fatalf("write %d: the follower lists %d instances (%v), want %d", i, len(insts), err, i+1)
		}
	}
}
