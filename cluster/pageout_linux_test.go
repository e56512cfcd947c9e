package cluster

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
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

// TestCompactionPagesTheLogOut: after a compaction the node takes raft.db's
// pages out of its resident set. Without it the compaction's walk of the
// deleted leaves leaves most of the file resident for good.
func TestCompactionPagesTheLogOut(t *testing.T) {
	probe, err := unix.Mmap(-1, 0, 4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANON)
	if err != nil {
		t.Fatal(err)
	}
	err = unix.Madvise(probe, unix.MADV_PAGEOUT)
	unix.Munmap(probe)
	if err != nil {
		t.Skipf("this kernel has no MADV_PAGEOUT (Linux 5.4): %v", err)
	}
	tn := newTestNodes(t, 1, func(i int, c *Config) {
		c.SnapshotThreshold, c.TrailingLogs = 1024, 32
		c.SnapshotInterval = 200 * time.Millisecond
	})
	n := tn.nodes[0]
	path := n.logPath
	if path == "" {
		t.Fatal("a node on disk has no log path")
	}
	blob := strings.Repeat("y", 3<<10)
	writes := 0
	compacted := func() bool {
		first, err := n.logs.FirstIndex()
		return err == nil && first > 1
	}
	// Sequential writes: one entry each, ~3.3 KB. The first compaction
	// follows the 1,024th entry; it deletes ~3 MB of leaves.
	for deadline := time.Now().Add(90 * time.Second); !compacted(); {
		if time.Now().After(deadline) || writes >= 4000 {
			t.Fatalf("no compaction after %d writes", writes)
		}
		cmd := fsmtest.Register(t, fmt.Sprintf("w-%d", writes), "svc", func(r *fsm.RegisterRequest) {
			r.Meta = map[string]string{"blob": blob}
		})
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		_, err := n.Apply(ctx, cmd)
		cancel()
		if err != nil {
			t.Fatalf("write %d: %v", writes, err)
		}
		writes++
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	size := st.Size()
	if size < 2<<20 {
		t.Fatalf("raft.db is %d bytes after %d writes of 3 KiB, want at least 2 MiB", size, writes)
	}
	var rss int64
	eventually(t, 30*time.Second, func() bool {
		rss = fileRSS(t, path)
		return rss <= size/8
	}, "raft.db mostly out of the resident set after the compaction")
	t.Logf("%d writes; raft.db %d bytes, %d of them resident", writes, size, rss)
	if _, got := tn.fsms[0].Store().ServiceInstances(nil, "svc"); len(got) != writes {
		t.Fatalf("%d instances after the compaction, want %d", len(got), writes)
	}
}
