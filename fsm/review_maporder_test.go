package fsm

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/go-memdb"
	"github.com/hashicorp/raft"
)

// TestReviewPlainReadNeverOlderThanWatchedRead: a reader woken by a
// service row's go-memdb watch (a blocking query) answers index M; a plain
// read of the same service on the same node right after must not answer
// an older index (the published map is updated only after tx.Commit has
// already woken the watchers).
func TestReviewPlainReadNeverOlderThanWatchedRead(t *testing.T) {
	const n = 3000 // services touched per batch: committed() takes a while
	r := newRV(t)
	var first [][]byte
	for i := range n {
		first = append(first, rvReg(t, fmt.Sprintf("s%04d", i), "i", "", "a0"))
	}
	r.batch(first...)
	s := r.f.Store()
	for round := 1; round <= 20; round++ {
		// Every service's row is watched, as n blocking queries would.
		ws := memdb.NewWatchSet()
		for i := range n {
			s.ServiceList(ws, fmt.Sprintf("s%04d", i))
		}
		type bad struct {
			name           string
			watched, plain uint64
		}
		found := make(chan []bad, 1)
		go func() {
			// Woken by tx.Commit (bounded: the test fails below if not).
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if ws.WatchCtx(ctx) != nil {
				found <- []bad{{name: "no watch fired"}}
				return
			}
			var out []bad
			for i := range n {
				name := fmt.Sprintf("s%04d", i)
				wi, _ := s.ServiceList(memdb.NewWatchSet(), name) // go-memdb, as a blocking query's re-run
				pi, _ := s.ServiceList(nil, name)                 // the map, as the client's next plain read
				if pi < wi {
					out = append(out, bad{name, wi, pi})
				}
			}
			found <- out
		}()
		var logs []*raft.Log
		for i := range n {
			r.index++
			logs = append(logs, rvLog(r.index, rvReg(t, fmt.Sprintf("s%04d", i), "i", "", fmt.Sprintf("a%d", round))))
		}
		r.f.ApplyBatch(logs)
		var out []bad
		select {
		case out = <-found:
		case <-time.After(2 * time.Minute):
			t.Fatalf("round %d: the reader did not finish", round)
		}
		if len(out) > 0 {
			t.Fatalf("round %d: %d services read older through the map than through go-memdb just before, e.g. %s: watched read at %d, then plain read at %d",
				round, len(out), out[0].name, out[0].watched, out[0].plain)
		}
	}
}
