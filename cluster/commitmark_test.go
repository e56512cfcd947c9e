package cluster

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/beaconhq/beacon/fsm"
	"github.com/beaconhq/beacon/fsm/fsmtest"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// TestCommitMarkIsOnDiskOnceTheEntriesAre: the catalog's applied index is
// in the file once the next StoreLogs returns, before any Close (what a
// killed process leaves), and only ever grows; Close writes the last one.
func TestCommitMarkIsOnDiskOnceTheEntriesAre(t *testing.T) {
	dir := t.TempDir()
	var applied uint64
	mark, err := openCommitMark(dir, func() uint64 { return applied })
	if err != nil {
		t.Fatal(err)
	}
	defer mark.Close()
	if got := mark.get(); got != 0 {
		t.Fatalf("a new mark reads %d, want 0", got)
	}
	cache, err := newLogCache(newBoltLogs(t), 16, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	cache.mark = mark
	onDisk := func() uint64 {
		t.Helper()
		m, err := openCommitMark(dir, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		return m.get()
	}
	applied = 3
	if got := onDisk(); got != 0 {
		t.Fatalf("a mark is on disk (%d) before any entries are stored", got)
	}
	if err := cache.StoreLogs([]*raft.Log{entry(1, 8), entry(2, 8), entry(3, 8), entry(4, 8)}); err != nil {
		t.Fatal(err)
	}
	if got := onDisk(); got != 3 {
		t.Fatalf("after StoreLogs the mark on disk is %d, want the applied 3", got)
	}
	applied = 2 // never lower
	if err := cache.StoreLogs([]*raft.Log{entry(5, 8)}); err != nil {
		t.Fatal(err)
	}
	if got := onDisk(); got != 3 {
		t.Fatalf("the mark went back to %d", got)
	}
	applied = 5
	if err := mark.Close(); err != nil {
		t.Fatal(err)
	}
	if err := mark.Close(); err != nil {
		t.Fatalf("a second Close: %v", err)
	}
	if got := onDisk(); got != 5 {
		t.Fatalf("after Close the mark is %d, want the applied 5", got)
	}
}

// TestCommitMarkIgnoresATornOrForeignFile: a file that does not pass its
// CRC (torn, truncated, someone else's) reads as no mark, and is written
// over by the next one.
func TestCommitMarkIgnoresATornOrForeignFile(t *testing.T) {
	for name, content := range map[string][]byte{
		"short":   {1, 2, 3},
		"garbage": []byte("not a commit mark at all"),
		"torn":    {9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, commitMarkName), content, 0o600); err != nil {
				t.Fatal(err)
			}
			m, err := openCommitMark(dir, func() uint64 { return 7 })
			if err != nil {
				t.Fatal(err)
			}
			if got := m.get(); got != 0 {
				t.Fatalf("mark %d from a file of %q", got, content)
			}
			if err := m.Close(); err != nil {
				t.Fatal(err)
			}
			m, err = openCommitMark(dir, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			if got := m.get(); got != 7 {
				t.Fatalf("after a mark of 7 the file reads %d", got)
			}
		})
	}
}

// TestAServerRestartedAloneServesWhatItKnewCommitted: every server of a
// cluster stops; each one restarted on its own, with no leader to tell it
// the commit index, serves every write the cluster had committed. Raft
// restores only the last snapshot at start (none here) and applies
// nothing more until a leader speaks: without the commit mark each of
// them served an empty catalog (and `snapshot save --stale` saved it).
func TestAServerRestartedAloneServesWhatItKnewCommitted(t *testing.T) {
	cfgs := make([]Config, 3)
	tn := newTestNodes(t, 3, func(i int, c *Config) { cfgs[i] = *c })
	const writes = 20
	var last uint64
	for i := range writes {
		idx, err := tn.nodes[i%3].Apply(context.Background(), fsmtest.Register(t, fmt.Sprintf("w-%d", i), "web"))
		if err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		last = max(last, idx)
	}
	tn.waitCaughtUp(t, 30*time.Second, last)
	tn.shutdown()
	tn.nodes = nil

	for i, cfg := range cfgs {
		// Alone: its peers' addresses are dead, and nothing may bootstrap.
		cfg.Logger = hclog.New(&hclog.LoggerOptions{Name: cfg.NodeName + "-alone", Level: hclog.Info, Output: testWriter{t}})
		cfg.ClusterAddr, cfg.GossipAddr = "127.0.0.1:0", "127.0.0.1:0"
		f := fsm.New(cfg.Logger.Named("fsm"))
		n, err := New(cfg, f)
		if err != nil {
			t.Fatal(err)
		}
		if err := n.Start(context.Background()); err != nil {
			t.Fatalf("restart %s: %v", cfg.NodeName, err)
		}
		t.Cleanup(func() { _ = n.Shutdown(context.Background()) })
		// Raft applies the marked entries at start, through the FSM's
		// goroutine: they arrive shortly after Start.
		eventually(t, 10*time.Second, func() bool {
			_, insts := f.Store().ServiceInstances(nil, "web")
			return len(insts) == writes && f.AppliedIndex() >= last
		}, fmt.Sprintf("node %d restarted alone serving the %d committed writes (index %d)", i, writes, last))
		if leader, _ := n.raft.LeaderWithID(); leader != "" {
			t.Fatalf("node %d alone knows a leader (%s): the test needs none", i, leader)
		}
		// It knows its cluster: raft 1.8.0's RestoreCommittedLogs left a
		// server restarted so with an empty configuration.
		if s := n.raftServers(); len(s) != 3 {
			t.Fatalf("node %d restarted alone has raft configuration %v, want the 3 servers", i, s)
		}
		if err := n.Shutdown(context.Background()); err != nil {
			t.Errorf("shutdown %s: %v", cfg.NodeName, err)
		}
	}
}
