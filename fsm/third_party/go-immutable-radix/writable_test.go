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

// Transactions reuse the writable sets and the channel lists of finished
// ones. Random transactions over a few trees, committed or dropped, some
// cloned half way (go-memdb clones a transaction to read it): every
// committed tree keeps exactly its keys and values after later
// transactions, every watched leaf that a commit replaced is notified, and
// no other is.
func TestReusedTransactionStateLeaksNothing(t *testing.T) {
	type version struct {
		tree *Tree
		want map[string]int
	}
	trees := make([]version, 3)
	for i := range trees {
		trees[i] = version{tree: New(), want: map[string]int{}}
	}
	var history []version
	rng := uint64(7)
	next := func(n int) int {
		rng = rng*6364136223846793005 + 1442695040888963407
		return int((rng >> 33) % uint64(n))
	}
	for round := range 2000 {
		v := &trees[next(len(trees))]
		txn := v.tree.Txn()
		txn.TrackMutate(true)
		want := make(map[string]int, len(v.want))
		for k, x := range v.want {
			want[k] = x
		}
		// Watch a few leaves of the committed tree.
		type watched struct {
			key string
			ch  <-chan struct{}
		}
		var ws []watched
		for range 3 {
			k := fmt.Sprintf("k%03d", next(200))
			ch, _, _ := v.tree.Root().GetWatch([]byte(k))
			ws = append(ws, watched{k, ch})
		}
		changed := map[string]bool{}
		for range 1 + next(40) {
			k := fmt.Sprintf("k%03d", next(200))
			switch next(4) {
			case 0:
				if _, ok := txn.Delete([]byte(k)); ok {
					delete(want, k)
					changed[k] = true
				}
			case 1:
				_ = txn.Clone() // resets the writable set mid-transaction
				fallthrough
			default:
				txn.Insert([]byte(k), round)
				want[k] = round
				changed[k] = true
			}
		}
		if next(5) == 0 {
			continue // dropped: nothing committed, nobody notified
		}
		history = append(history, version{tree: v.tree, want: v.want})
		v.tree, v.want = txn.Commit(), want
		for _, w := range ws {
			fired := false
			select {
			case <-w.ch:
				fired = true
			default:
			}
			if changed[w.key] && !fired {
				t.Fatalf("round %d: %s changed and its watcher was not notified", round, w.key)
			}
		}
		for _, h := range append(history[max(0, len(history)-20):], trees...) {
			if h.tree.Len() != len(h.want) {
				t.Fatalf("round %d: a tree holds %d keys, want %d", round, h.tree.Len(), len(h.want))
			}
			for k, x := range h.want {
				if got, ok := h.tree.Get([]byte(k)); !ok || got.(int) != x {
					t.Fatalf("round %d: %s = %v, %v; want %d", round, k, got, ok, x)
				}
			}
		}
	}
}
