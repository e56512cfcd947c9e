package cluster

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/beaconhq/beacon/fsm"
	"github.com/beaconhq/beacon/fsm/fsmtest"
	"golang.org/x/sys/unix"
)

func TestMappingOf(t *testing.T) {
	const path = "/var/lib/beacon/raft.db"
	for _, tc := range []struct {
		line       string
		start, end uintptr
		ok         bool
	}{
		{"7f0a1c000000-7f0a1c400000 r--s 00000000 fd:01 1234                       /var/lib/beacon/raft.db", 0x7f0a1c000000, 0x7f0a1c400000, true},
		{"7f0a1c000000-7f0a1c400000 r--s 00000000 fd:01 1234 /var/lib/beacon/raft.db", 0x7f0a1c000000, 0x7f0a1c400000, true},
		{"7f0a1c000000-7f0a1c400000 r--s 00000000 fd:01 1234                       /var/lib/beacon/raft.db (deleted)", 0, 0, false},
		{"7f0a1c000000-7f0a1c400000 r--s 00000000 fd:01 1234                       /var/lib/beacon/raft.db.bak", 0, 0, false},
		{"7f0a1c000000-7f0a1c400000 r--s 00000000 fd:01 1234                       /srv/raft.db", 0, 0, false},
		{"7f0a1c000000-7f0a1c400000 rw-p 00000000 00:00 0 ", 0, 0, false},
		{"7f0a1c000000-7f0a1c400000 rw-p 00000000 00:00 0", 0, 0, false},
		{"c000000000-c004000000 rw-p 00000000 00:00 0                          [heap]", 0, 0, false},
		{"zz-7f0a1c400000 r--s 00000000 fd:01 1234 /var/lib/beacon/raft.db", 0, 0, false},
		{"7f0a1c400000-7f0a1c000000 r--s 00000000 fd:01 1234 /var/lib/beacon/raft.db", 0, 0, false},
		{"7f0a1c400000 r--s 00000000 fd:01 1234 /var/lib/beacon/raft.db", 0, 0, false},
		{"", 0, 0, false},
		{"Rss:                 124 kB", 0, 0, false},
	} {
		s, e, ok := mappingOf([]byte(tc.line), path)
		if s != tc.start || e != tc.end || ok != tc.ok {
			t.Errorf("%q: %#x-%#x %v, want %#x-%#x %v", tc.line, s, e, ok, tc.start, tc.end, tc.ok)
		}
	}
}

// fileRSS is how much of the file at path this process's mappings hold
// resident, from /proc/self/smaps.
func fileRSS(t *testing.T, path string) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	var rss int64
	in := false
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Text()
		first, _, _ := strings.Cut(line, " ")
		if !strings.HasSuffix(first, ":") { // a mapping's first line
			_, _, in = mappingOf([]byte(line), path)
			continue
		}
		if in && first == "Rss:" {
			kb, err := strconv.ParseInt(strings.Fields(line)[1], 10, 64)
			if err != nil {
				t.Fatalf("smaps: %q: %v", line, err)
			}
			rss += kb << 10
		}
	}
	return rss
}

// skipWithoutPageOut skips a test on a kernel without MADV_PAGEOUT.
func skipWithoutPageOut(t *testing.T) {
	t.Helper()
	probe, err := unix.Mmap(-1, 0, 4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANON)
	if err != nil {
		t.Fatal(err)
	}
	err = unix.Madvise(probe, unix.MADV_PAGEOUT)
	unix.Munmap(probe)
	if err != nil {
		t.Skipf("this kernel has no MADV_PAGEOUT (Linux 5.4): %v", err)
	}
}

// logWriter writes registrations of ~3.3 KB, one Raft entry each, to a
// one-node cluster on disk.
type logWriter struct {
	t      *testing.T
	tn     *testNodes
	n      *Node
	writes int
}

func newLogWriter(t *testing.T, threshold uint64) *logWriter {
	skipWithoutPageOut(t)
	tn := newTestNodes(t, 1, func(i int, c *Config) {
		c.SnapshotThreshold, c.TrailingLogs = threshold, 32
		c.SnapshotInterval = 200 * time.Millisecond
	})
	w := &logWriter{t: t, tn: tn, n: tn.nodes[0]}
	if w.n.logPath == "" {
		t.Fatal("a node on disk has no log path")
	}
	return w
}

var logBlob = strings.Repeat("y", 3<<10)

func (w *logWriter) write() {
	w.t.Helper()
	cmd := fsmtest.Register(w.t, fmt.Sprintf("w-%d", w.writes), "svc", func(r *fsm.RegisterRequest) {
		r.Meta = map[string]string{"blob": logBlob}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	_, err := w.n.Apply(ctx, cmd)
	cancel()
	if err != nil {
		w.t.Fatalf("write %d: %v", w.writes, err)
	}
	w.writes++
}

func (w *logWriter) firstIndex() uint64 {
	first, err := w.n.logs.FirstIndex()
	if err != nil {
		w.t.Fatal(err)
	}
	return first
}

// waitOutOfRSS waits until at most an eighth of the size bytes of the file
// at path are resident, and returns how many are.
func waitOutOfRSS(t *testing.T, path string, size int64, what string) int64 {
	t.Helper()
	var rss int64
	eventually(t, 30*time.Second, func() bool {
		rss = fileRSS(t, path)
		return rss <= size/8
	}, what+" mostly out of the resident set")
	return rss
}

// pagedOut waits for raft.db, at least minSize bytes, to be mostly out of
// the resident set, then checks every write is in the catalog.
func (w *logWriter) pagedOut(minSize int64) {
	w.t.Helper()
	path := w.n.logPath
	st, err := os.Stat(path)
	if err != nil {
		w.t.Fatal(err)
	}
	size := st.Size()
	if size < minSize {
		w.t.Fatalf("raft.db is %d bytes after %d writes of 3 KiB, want at least %d", size, w.writes, minSize)
	}
	rss := waitOutOfRSS(w.t, path, size, "raft.db")
	w.t.Logf("%d writes; raft.db %d bytes, %d of them resident", w.writes, size, rss)
	if _, got := w.tn.fsms[0].Store().ServiceInstances(nil, "svc"); len(got) != w.writes {
		w.t.Fatalf("%d instances, want %d", len(got), w.writes)
	}
}

// TestCompactionPagesTheLogOut: after a compaction the node takes raft.db's
// pages out of its resident set at once, while the writes go on (no pause
// for the quiet rule, well under pageOutBusyBytes). Without it the
// compaction's walk of the deleted leaves leaves most of the file
// resident.
func TestCompactionPagesTheLogOut(t *testing.T) {
	w := newLogWriter(t, 1024)
	// The first compaction follows the 1,024th entry; it deletes ~3 MB of
	// leaves.
	for deadline := time.Now().Add(90 * time.Second); w.firstIndex() <= 1; {
		if time.Now().After(deadline) || w.writes >= 4000 {
			t.Fatalf("no compaction after %d writes", w.writes)
		}
		w.write()
	}
	path := w.n.logPath
	compactedAt := w.writes
	for deadline := time.Now().Add(60 * time.Second); ; {
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		rss := fileRSS(t, path)
		if rss <= st.Size()/8 {
			t.Logf("%d writes after the compaction; raft.db %d bytes, %d of them resident", w.writes-compactedAt, st.Size(), rss)
			break
		}
		// ~5 MB more: a third of pageOutBusyBytes with what came before.
		if time.Now().After(deadline) || w.writes-compactedAt >= 1500 {
			t.Fatalf("%d writes after the compaction: raft.db %d bytes, %d of them resident", w.writes-compactedAt, st.Size(), rss)
		}
		w.write()
	}
	w.pagedOut(2 << 20)
}

// TestPausedWritesPageTheLogOut: once the writes pause, a node that stored
// a megabyte or more since its last page-out pages raft.db out, compaction
// or not. Three nodes take concurrent writes, as a fill does; without the
// page-out, pages of every node's raft.db stay resident (bolt reads what it
// wrote through its mapping, and the kernel maps cached pages around each
// read).
func TestPausedWritesPageTheLogOut(t *testing.T) {
	skipWithoutPageOut(t)
	tn := newTestNodes(t, 3, nil)
	leader := tn.nodes[tn.waitForLeader(30*time.Second)]
	blob := strings.Repeat("z", 512)
	var wg sync.WaitGroup
	var failed atomic.Int64
	const writers, each = 16, 200 // ~1.9 MB of registrations in entries of a few
	for g := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				cmd := fsmtest.Register(t, fmt.Sprintf("p-%d-%d", g, i), "svc", func(r *fsm.RegisterRequest) {
					r.Meta = map[string]string{"blob": blob}
				})
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				_, err := leader.Apply(ctx, cmd)
				cancel()
				if err != nil {
					failed.Add(1)
					return
				}
			}
		}()
	}
	wg.Wait()
	if f := failed.Load(); f > 0 {
		t.Fatalf("%d writers failed", f)
	}
	// Every write was applied on the leader: its last index holds them all.
	tn.waitCaughtUp(t, 30*time.Second, leader.raft.LastIndex())
	for i, n := range tn.nodes {
		first, err := n.logs.FirstIndex()
		if err != nil || first > 1 {
			t.Fatalf("node %d: first index %d, %v: this case is about a log that was not compacted", i, first, err)
		}
		st, err := os.Stat(n.logPath)
		if err != nil {
			t.Fatal(err)
		}
		size := st.Size()
		rss := waitOutOfRSS(t, n.logPath, size, fmt.Sprintf("node %d's raft.db", i))
		t.Logf("node %d: raft.db %d bytes, %d of them resident", i, size, rss)
		if _, got := tn.fsms[i].Store().ServiceInstances(nil, "svc"); len(got) != writers*each {
			t.Fatalf("node %d: %d instances, want %d", i, len(got), writers*each)
		}
	}
}
