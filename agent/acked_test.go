package agent_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/beaconhq/beacon/agent/agenttest"
	"github.com/beaconhq/beacon/api/client"
)

// A write through a follower is answered once the leader committed it
// (cluster.Node.ApplyAcked), before the follower applied it; the
// follower's reads wait for it, so the writer still reads its write there.
func TestAFollowerAnswersOnCommitAndStillReadsItsWrites(t *testing.T) {
	c := agenttest.New(t, 3)
	ctx := context.Background()
	c.WaitForVoters(3)
	f := c.Follower()
	cl := c.Client(f)
	for i := 0; i < 40; i++ {
		id := fmt.Sprintf("seq-%d", i)
		idx := agenttest.Register(t, cl, "seq", id, reg("10.0.0.1", 8080+i))
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

// Consistent reads on a follower that wait at the same moment share one read
// index, and each still sees every write completed before it began.
func TestConcurrentConsistentReadsShareReadIndexesAndStayLinearizable(t *testing.T) {
	c := agenttest.New(t, 3)
	ctx := context.Background()
	c.WaitForVoters(3)
	l := c.WaitForLeader()
	f := c.Follower()
	var done atomic.Uint64 // index of the last write known complete
	stop := make(chan struct{})
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			idx, err := c.Client(l).Register(ctx, "lin", "w", reg("10.0.0.1", 1000+i%1000))
			if err != nil {
				// An election on a loaded machine: only completed writes
				// set the floor the reads are checked against.
				time.Sleep(10 * time.Millisecond)
				continue
			}
			done.Store(idx)
		}
	}()
	before := scrape(t, c.Node(f).HTTPAddr()).sum("beacon_read_index_batches_total")
	const readers, each = 16, 25
	var unavailable atomic.Int64
	var wg sync.WaitGroup
	for r := 0; r < readers; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				floor := done.Load()
				_, meta, err := c.Client(f).Instances(ctx, "lin", &client.QueryOptions{Consistent: true})
				var ce *client.Error
				if errors.As(err, &ce) && ce.Status == http.StatusServiceUnavailable {
					// An election on a loaded machine that outlasted the
					// read's leader-wait: the read answered nothing.
					unavailable.Add(1)
					continue
				}
				if err != nil {
					t.Errorf("consistent read: %v", err)
					return
				}
				if meta.Index < floor {
					t.Errorf("a consistent read began after the write at %d and answered index %d", floor, meta.Index)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	<-writerDone
	batches := scrape(t, c.Node(f).HTTPAddr()).sum("beacon_read_index_batches_total") - before
	if batches <= 0 || batches >= readers*each {
		t.Fatalf("%v read indexes for %d consistent reads, want fewer (shared) and more than none", batches, readers*each)
	}
	t.Logf("%d consistent reads took %v read indexes; %d answered 503 (an election)", readers*each, batches, unavailable.Load())
	if unavailable.Load() == readers*each {
		t.Fatal("every consistent read answered 503")
	}
}
