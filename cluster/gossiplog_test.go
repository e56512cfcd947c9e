package cluster

import (
	"bytes"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/beaconhq/beacon/fsm"
	"github.com/hashicorp/go-hclog"
)

// TestGossipLogLinesKeepMemberlistsLevel: memberlist's log lines, each with
// its own "[LEVEL]" in front, come out of real memberlist instances at that
// level and without that prefix: a debug line at DEBUG, the key-mismatch
// hint at the level of the line it replaces (ERROR on the node that refused
// the peer, DEBUG for the joiner's failed join, which Join returns), and no
// line carries a second level ("[ERROR] ... [DEBUG] memberlist: ...").
func TestGossipLogLinesKeepMemberlistsLevel(t *testing.T) {
	var refuserLog, joinerLog lineCounter
	start := func(name string, key []byte, out io.Writer) *gossip {
		cfg := DefaultConfig()
		cfg.NodeName, cfg.GossipAddr, cfg.InMemory, cfg.GossipKey = name, "127.0.0.1:0", true, key
		logger := hclog.New(&hclog.LoggerOptions{Name: name, Level: hclog.Trace, Output: io.MultiWriter(testWriter{t}, out)})
		g, err := newGossip(cfg, memberMeta{Role: fsm.RoleServer}, logger)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = g.ml.Shutdown() })
		return g
	}
	refuser := start("refuser", bytes.Repeat([]byte{1}, 32), &refuserLog)
	joiner := start("joiner", bytes.Repeat([]byte{2}, 32), &joinerLog)

	if n, err := joiner.ml.Join([]string{refuser.addr()}); n != 0 || err == nil || !keyMismatch(err.Error()) {
		t.Fatalf("join with another key: %d joined, %v", n, err)
	}
	eventually(t, 10*time.Second, func() bool {
		return refuserLog.count("[ERROR]", gossipKeyHint) > 0
	}, "the refusing node's error line naming the key mismatch")
	if joinerLog.count("[DEBUG]", gossipKeyHint, `detail="failed to join `) != 1 {
		t.Errorf("the joiner's failed join is not one debug line naming the key mismatch, without memberlist's prefix")
	}
	// memberlist's ordinary lines at their own level ("[DEBUG] memberlist:
	// Stream connection from=...").
	if refuserLog.count("[DEBUG]", "refuser: memberlist: Stream connection") == 0 {
		t.Error(`no "[DEBUG] refuser: memberlist: Stream connection" line`)
	}
	for _, l := range []*lineCounter{&refuserLog, &joinerLog} {
		l.mu.Lock()
		for _, line := range l.lines {
			// The adapter's own level comes first, after the time stamp;
			// memberlist's must be gone from the rest of the line.
			if _, rest, ok := strings.Cut(line, "] "); ok {
				for _, tag := range []string{"[TRACE]", "[DEBUG]", "[INFO]", "[WARN]", "[ERR]", "[ERROR]"} {
					if strings.Contains(rest, tag) {
						t.Errorf("a line keeps memberlist's level %s: %q", tag, line)
					}
				}
			}
		}
		l.mu.Unlock()
	}
}

func TestMemberlistLevel(t *testing.T) {
	for _, c := range []struct {
		line  string
		level hclog.Level
		msg   string
	}{
		{"[DEBUG] memberlist: Stream connection from=127.0.0.1:1", hclog.Debug, "memberlist: Stream connection from=127.0.0.1:1"},
		{"[ERR] memberlist: failed to receive: x", hclog.Error, "memberlist: failed to receive: x"},
		{"[ERROR] memberlist: Failed to encrypt local state: x", hclog.Error, "memberlist: Failed to encrypt local state: x"},
		{"[WARN] memberlist: Refuting a dead message", hclog.Warn, "memberlist: Refuting a dead message"},
		{"[INFO] memberlist: Suspect n2 has failed", hclog.Info, "memberlist: Suspect n2 has failed"},
		{"[TRACE] memberlist: x", hclog.Trace, "memberlist: x"},
		{"Err: Could not set the deadline: x", hclog.Info, "Err: Could not set the deadline: x"},
		{"[NOTICE] x", hclog.Info, "[NOTICE] x"},
		{"[DEBUG no bracket", hclog.Info, "[DEBUG no bracket"},
	} {
		if level, msg := memberlistLevel(c.line); level != c.level || msg != c.msg {
			t.Errorf("memberlistLevel(%q) = %v, %q; want %v, %q", c.line, level, msg, c.level, c.msg)
		}
	}
}
