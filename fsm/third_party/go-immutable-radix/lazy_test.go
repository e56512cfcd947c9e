package iradix

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

// A tree nobody watches holds no channel.
func TestLazyNoChannelUntilWatched(t *testing.T) {
	txn := New().Txn()
	txn.TrackMutate(true)
	for i := range 5000 {
		txn.Insert([]byte(fmt.Sprintf("svc\x00i-%d\x00", i)), i)
	}
	r := txn.Commit()
	// Plain reads make none either.
	for i := range 5000 {
		if _, ok := r.Get([]byte(fmt.Sprintf("svc\x00i-%d\x00", i))); !ok {
			t.Fatalf("key %d missing", i)
		}
	}
	it := r.Root().Iterator()
	it.SeekPrefix([]byte("svc\x00"))
	for iter := r.root.rawIterator(); iter.Front() != nil; iter.Next() {
		n := iter.Front()
		if n.mutateCh.p.Load() != nil || (n.leaf != nil && n.leaf.mutateCh.p.Load() != nil) {
			t.Fatalf("node %q has a channel nobody asked for", iter.Path())
		}
	}
}

// A watcher is woken by the commit that replaces what it watches, whether
// it asked before the write, during it, or after it on the old tree; and
// one watching something else is not.
func TestLazyWatchersWokenByTheReplacingCommit(t *testing.T) {
	base := New()
	for i := range 100 {
		base, _, _ = base.Insert([]byte(fmt.Sprintf("a/%d", i)), i)
		base, _, _ = base.Insert([]byte(fmt.Sprintf("b/%d", i)), i)
	}
	before, _, _ := base.Root().GetWatch([]byte("a/7"))
	prefixBefore := func() <-chan struct{} { it := base.Root().Iterator(); return it.SeekPrefixWatch([]byte("a/")) }()
	other, _, _ := base.Root().GetWatch([]byte("b/7"))

	txn := base.Txn()
	txn.TrackMutate(true)
	txn.Insert([]byte("a/7"), "new")
	during, _, _ := base.Root().GetWatch([]byte("a/7"))
	txn.Commit()
	after, _, _ := base.Root().GetWatch([]byte("a/7"))

	for name, ch := range map[string]<-chan struct{}{"before": before, "prefix": prefixBefore, "during": during, "after": after} {
		select {
		case <-ch:
		default:
			t.Errorf("watcher %s not woken", name)
		}
	}
	select {
	case <-other:
		t.Error("a watcher of b/7 was woken by a write to a/7")
	default:
	}
}

// Readers asking for channels of the old tree while the writer commits
// (run with -race): every one of them sees the channel closed.
func TestLazyConcurrentWatchersAndCommit(t *testing.T) {
	for round := range 50 {
		base := New()
		for i := range 64 {
			base, _, _ = base.Insert([]byte(fmt.Sprintf("k/%d", i)), i)
		}
		var wg sync.WaitGroup
		start := make(chan struct{})
		chans := make([]<-chan struct{}, 8)
		for r := range chans {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				chans[r], _, _ = base.Root().GetWatch([]byte(fmt.Sprintf("k/%d", r)))
			}()
		}
		txn := base.Txn()
		txn.TrackMutate(true)
		for r := range chans {
			txn.Insert([]byte(fmt.Sprintf("k/%d", r)), -1)
		}
		close(start)
		txn.Commit()
		wg.Wait()
		for r, ch := range chans {
			select {
			case <-ch:
			case <-time.After(5 * time.Second):
				t.Fatalf("round %d: watcher %d never woken", round, r)
			}
		}
	}
}
