package cluster

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/beaconhq/beacon/fsm"
	"github.com/beaconhq/beacon/fsm/fsmtest"
)

// TestAServerWithATruncatedRaftDBRefusesToStart: a raft.db that lost its
// tail while the server was stopped (a torn copy, a file system that lost
// its last blocks) stops the server at start with an error that names the
// file and says what is wrong. bbolt 1.3.5 panicked in a goroutine of its
// own while opening such a file ("freepages: failed to get all reachable
// pages"), killing the agent with a stack trace.
func TestAServerWithATruncatedRaftDBRefusesToStart(t *testing.T) {
	cfgs := make([]Config, 3)
	tn := newTestNodes(t, 3, func(i int, c *Config) { cfgs[i] = *c })
	var last uint64
	for i := range 300 {
		idx, err := tn.nodes[i%3].Apply(context.Background(), fsmtest.Register(t, fmt.Sprintf("w-%03d", i), "web"))
		if err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		last = max(last, idx)
	}
	tn.waitCaughtUp(t, 30*time.Second, last)
	tn.shutdown()
	tn.nodes = nil

	cfg := cfgs[2]
	db := filepath.Join(cfg.DataDir, "raft.db")
	before, err := os.Stat(db)
	if err != nil {
		t.Fatal(err)
	}
	if err := checkBoltFile(db); err != nil {
		t.Fatalf("the intact raft.db (%d bytes) refused: %v", before.Size(), err)
	}
	// Keep the meta pages and the first pages after them: the tail is gone.
	if err := os.Truncate(db, 16<<10); err != nil {
		t.Fatal(err)
	}
	cfg.Logger = hclog.New(&hclog.LoggerOptions{Name: cfg.NodeName + "-torn", Level: hclog.Info, Output: testWriter{t}})
	cfg.ClusterAddr, cfg.GossipAddr = "127.0.0.1:0", "127.0.0.1:0"
	n, err := New(cfg, fsm.New(cfg.Logger.Named("fsm")))
	if err != nil {
		t.Fatal(err)
	}
	err = n.Start(context.Background())
	if err == nil {
		_ = n.Shutdown(context.Background())
		t.Fatalf("a server whose raft.db was cut from %d to %d bytes started", before.Size(), 16<<10)
	}
	t.Logf("start refused: %v", err)
	for _, want := range []string{db, "truncated", "holds 16384 bytes"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error %q does not say %q", err, want)
		}
	}

	// Two damaged meta pages: refused as well, by name.
	garbage := make([]byte, 64<<10)
	for i := range garbage {
		garbage[i] = byte(i * 7)
	}
	if err := os.WriteFile(db, garbage, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := checkBoltFile(db); err == nil || !strings.Contains(err.Error(), "not a bolt database") {
		t.Fatalf("a raft.db of garbage: %v", err)
	}
}
