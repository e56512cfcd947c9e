package cluster

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
	"weak"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
)

// countingStore counts the reads that reach the raft-boltdb store under
// the cache.
type countingStore struct {
	raft.LogStore
	gets atomic.Int64
}

func (s *countingStore) GetLog(idx uint64, l *raft.Log) error {
	s.gets.Add(1)
	return s.LogStore.GetLog(idx, l)
}

func newBoltLogs(t *testing.T) *countingStore {
	t.Helper()
	bolt, err := raftboltdb.NewBoltStore(filepath.Join(t.TempDir(), "raft.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bolt.Close() })
	return &countingStore{LogStore: bolt}
}

func entry(idx uint64, size int) *raft.Log {
	data := bytes.Repeat([]byte{byte(idx)}, size)
	return &raft.Log{Index: idx, Term: 1, Type: raft.LogCommand, Data: data, Extensions: []byte(fmt.Sprint(idx))}
}

func checkEntry(t *testing.T, c raft.LogStore, idx uint64, size int) {
	t.Helper()
	var l raft.Log
	if err := c.GetLog(idx, &l); err != nil {
		t.Fatalf("GetLog(%d): %v", idx, err)
	}
	want := entry(idx, size)
	if l.Index != idx || !bytes.Equal(l.Data, want.Data) || !bytes.Equal(l.Extensions, want.Extensions) {
		t.Fatalf("GetLog(%d) = index %d, %d bytes; want the entry stored", idx, l.Index, len(l.Data))
	}
}

// TestLogCacheHoldsAtMostItsBytes: large entries (group entries of a busy
// leader) are cached only up to the byte bound, whatever the entry bound;
// the newest are served from memory and every older one from the store.
func TestLogCacheHoldsAtMostItsBytes(t *testing.T) {
	store := newBoltLogs(t)
	const size = 64 << 10
	c, err := newLogCache(store, 512, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	for i := uint64(1); i <= 100; i += 5 {
		batch := make([]*raft.Log, 5)
		for j := range batch {
			batch[j] = entry(i+uint64(j), size)
		}
		if err := c.StoreLogs(batch); err != nil {
			t.Fatal(err)
		}
		if _, b := c.cached(); b > 1<<20 {
			t.Fatalf("after index %d the cache holds %d bytes, more than its 1 MiB", i+4, b)
		}
	}
	n, b := c.cached()
	if n == 0 || n > (1<<20)/size {
		t.Fatalf("cached %d entries (%d bytes) of %d bytes each under a 1 MiB bound", n, b, size)
	}
	before := store.gets.Load()
	for idx := 100 - n + 1; idx <= 100; idx++ {
		checkEntry(t, c, idx, size)
	}
	if got := store.gets.Load() - before; got != 0 {
		t.Fatalf("%d reads of the newest %d entries reached the store, want 0", got, n)
	}
	for idx := uint64(1); idx <= 100-n; idx++ {
		checkEntry(t, c, idx, size)
	}
	if got := store.gets.Load() - before; got != int64(100-n) {
		t.Fatalf("%d reads reached the store for %d evicted entries", got, 100-n)
	}
}

// TestLogCacheKeepsTheNewestEntryWhateverItsSize: one entry larger than the
// bound is still cached (replication reads it back at once), alone.
func TestLogCacheKeepsTheNewestEntryWhateverItsSize(t *testing.T) {
	store := newBoltLogs(t)
	c, err := newLogCache(store, 8, 4096)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.StoreLogs([]*raft.Log{entry(1, 100), entry(2, 100), entry(3, 10000)}); err != nil {
		t.Fatal(err)
	}
	if n, _ := c.cached(); n != 1 {
		t.Fatalf("cached %d entries, want the large newest one alone", n)
	}
	before := store.gets.Load()
	checkEntry(t, c, 3, 10000)
	if store.gets.Load() != before {
		t.Fatal("the newest entry was read from the store")
	}
	checkEntry(t, c, 1, 100)
	checkEntry(t, c, 2, 100)
}

// TestLogCacheFollowsTheStoreThroughTruncationAndCompaction: random
// appends, a follower's conflicting suffix rewritten, compactions of old
// entries; after every step each index reads exactly what the store
// holds, and the cache stays within both bounds.
func TestLogCacheFollowsTheStoreThroughTruncationAndCompaction(t *testing.T) {
	store := newBoltLogs(t)
	c, err := newLogCache(store, 16, 8<<10)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	sizes := map[uint64]int{} // what the store holds: index -> size
	terms := map[uint64]uint64{}
	first, last := uint64(1), uint64(0)
	term := uint64(1)
	for step := 0; step < 400; step++ {
		switch op := rng.IntN(10); {
		case op < 7: // append a batch
			k := 1 + rng.IntN(6)
			batch := make([]*raft.Log, k)
			for j := range batch {
				idx := last + 1 + uint64(j)
				size := rng.IntN(3000)
				batch[j] = entry(idx, size)
				batch[j].Term = term
				sizes[idx], terms[idx] = size, term
			}
			if err := c.StoreLogs(batch); err != nil {
				t.Fatal(err)
			}
			last += uint64(k)
		case op < 9 && last >= first+4: // a conflicting suffix: delete, rewrite in a new term
			from := last - uint64(rng.IntN(4))
			if err := c.DeleteRange(from, last); err != nil {
				t.Fatal(err)
			}
			for i := from; i <= last; i++ {
				delete(sizes, i)
			}
			last = from - 1
			term++
		case last > first+20: // compaction of old entries
			to := first + uint64(rng.IntN(10))
			if err := c.DeleteRange(first, to); err != nil {
				t.Fatal(err)
			}
			for i := first; i <= to; i++ {
				delete(sizes, i)
			}
			first = to + 1
		}
		if n, b := c.cached(); n > 16 || (n > 1 && b > 8<<10) {
			t.Fatalf("step %d: the cache holds %d entries, %d bytes", step, n, b)
		}
		for idx := first; idx <= last; idx++ {
			var l raft.Log
			if err := c.GetLog(idx, &l); err != nil {
				t.Fatalf("step %d: GetLog(%d): %v", step, idx, err)
			}
			if l.Index != idx || l.Term != terms[idx] || len(l.Data) != sizes[idx] || !bytes.Equal(l.Data, entry(idx, sizes[idx]).Data) {
				t.Fatalf("step %d: GetLog(%d) = index %d term %d, %d bytes; the store holds term %d, %d bytes",
					step, idx, l.Index, l.Term, len(l.Data), terms[idx], sizes[idx])
			}
		}
		var l raft.Log
		if err := c.GetLog(last+1, &l); err != raft.ErrLogNotFound {
			t.Fatalf("step %d: GetLog past the last index: %v", step, err)
		}
	}
}

func TestLogCacheRefusesNoSize(t *testing.T) {
	if _, err := newLogCache(newBoltLogs(t), 0, 1); err == nil {
		t.Fatal("a cache of no entries was made")
	}
	if _, err := newLogCache(newBoltLogs(t), 1, 0); err == nil {
		t.Fatal("a cache of no bytes was made")
	}
}

// TestLogCacheRestartsAtAGap: entries that do not follow the newest cached
// one (a follower's log after a snapshot installed past it) start the
// cache again, so that no index is answered from another's slot.
func TestLogCacheRestartsAtAGap(t *testing.T) {
	store := newBoltLogs(t)
	c, err := newLogCache(store, 8, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	for _, batch := range [][]*raft.Log{
		{entry(1, 10), entry(2, 20), entry(3, 30), entry(4, 40), entry(5, 50)},
		{entry(10, 100), entry(11, 110), entry(12, 120)},
	} {
		if err := c.StoreLogs(batch); err != nil {
			t.Fatal(err)
		}
	}
	if n, _ := c.cached(); n != 3 {
		t.Fatalf("cached %d entries after the gap, want the 3 after it", n)
	}
	for idx, size := range map[uint64]int{1: 10, 2: 20, 3: 30, 4: 40, 5: 50, 10: 100, 11: 110, 12: 120} {
		checkEntry(t, c, idx, size)
	}
	for idx := uint64(6); idx < 10; idx++ {
		var l raft.Log
		if err := c.GetLog(idx, &l); err != raft.ErrLogNotFound {
			t.Fatalf("GetLog(%d) in the gap: %v, index %d", idx, err, l.Index)
		}
	}
}

// TestLogCacheDoesNotKeepWhatHoldsTheEntry: on the leader, hashicorp/raft
// passes StoreLogs pointers to the Log field of its apply futures, which
// also hold the FSM's response (a group's decoded commands). The cache
// keeps copies, so a future is freed once Raft is done with it; with
// raft.LogCache every cached future stayed (~5 MB on a leader at 64
// clients, its RSS at 10,000 instances 46 MB against its followers' 35).
func TestLogCacheDoesNotKeepWhatHoldsTheEntry(t *testing.T) {
	type future struct {
		log      raft.Log
		response []byte
	}
	c, err := newLogCache(newBoltLogs(t), 8, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	f := &future{log: *entry(1, 100), response: make([]byte, 1<<20)}
	if err := c.StoreLogs([]*raft.Log{&f.log}); err != nil {
		t.Fatal(err)
	}
	w := weak.Make(f)
	f = nil
	deadline := time.Now().Add(10 * time.Second)
	for w.Value() != nil {
		if time.Now().After(deadline) {
			t.Fatal("the cache keeps alive the struct whose Log field it was given")
		}
		runtime.GC()
	}
	checkEntry(t, c, 1, 100)
}
