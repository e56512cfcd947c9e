package iradix

import (
	"fmt"
	"testing"
)

// This file is not part of hashicorp/go-immutable-radix v1.3.1 (see
// README.beacon.md).

// A bulk load of ordered keys in one transaction (a snapshot restore) keeps
// the nodes it is writing writable after the writable set fills up: the set
// starts again rather than refusing new nodes, which made every node past
// the first 8,192 be copied again on each later write (9.7 allocations per
// key instead of 3.2; upstream's LRU 4.6).
func TestOrderedBulkLoadKeepsItsNodesWritable(t *testing.T) {
	const n = 100_000
	keys := make([][]byte, n)
	for i := range keys {
		keys[i] = fmt.Appendf(nil, "service-%08d\x00", i)
	}
	allocs := testing.AllocsPerRun(1, func() {
		txn := New().Txn()
		txn.TrackMutate(true) // as go-memdb's transactions do
		for _, k := range keys {
			txn.Insert(k, nil)
		}
		if txn.Commit().Len() != n {
			t.Fatal("lost keys")
		}
	})
	t.Logf("%.2f allocations per key", allocs/n)
	if per := allocs / n; per > 6 {
		t.Fatalf("%.1f allocations per key loaded in order, want at most 6", per)
	}
}
