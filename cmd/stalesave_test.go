package cmd_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/beaconhq/beacon/agent/agenttest"
	"github.com/beaconhq/beacon/api/client"
)

// TestAStaleSaveFromAServerThatHasNotAppliedItsLogWarns: a server restarted
// while the rest of its cluster is down applies nothing past its last Raft
// snapshot (none here) until a leader tells it what is committed, so a
// --stale save from it misses writes its log holds. The save says so on
// stderr, and points at the recovery that replays the log; a save from a
// server that is caught up warns nothing.
func TestAStaleSaveFromAServerThatHasNotAppliedItsLogWarns(t *testing.T) {
	c := agenttest.New(t, 3)
	c.WaitForVoters(3)
	ctx := context.Background()
	for i := range 5 {
		id := fmt.Sprintf("p%d", i)
		if _, err := c.Client(0).Register(ctx, "pay", id, &client.Registration{Address: "127.0.0.1", Port: 9000 + i}); err != nil {
			t.Fatal(err)
		}
	}
	addr := c.Node(0).HTTPAddr()
	_, errOut, err := beacon(ctx, addr, "snapshot", "save", "--stale", filepath.Join(t.TempDir(), "ok.snap"))
	if err != nil || strings.Contains(errOut, "warning") {
		t.Fatalf("a save from a caught-up server: %v, stderr %q; want no warning", err, errOut)
	}

	for i := range c.Nodes() {
		c.Stop(i)
	}
	c.Restart(0)
	addr = c.Node(0).HTTPAddr()
	var out string
	agenttest.Eventually(t, 30*time.Second, func() bool {
		out, errOut, err = beacon(ctx, addr, "snapshot", "save", "--stale", filepath.Join(t.TempDir(), "stale.snap"))
		return err == nil
	}, "a --stale save from the lone restarted server")
	if !strings.Contains(errOut, "warning: node1 knows no leader") || !strings.Contains(errOut, "recovery.json") {
		t.Fatalf("a save missing log entries warned %q (out %q); want the warning naming node1 and recovery.json", errOut, out)
	}
}
