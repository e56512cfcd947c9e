package cluster

import (
	"bytes"
	"context"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/beaconhq/beacon/fsm"
	"github.com/hashicorp/go-hclog"
)

func TestConfigRefusesANodeNameThatBreaksTheRule(t *testing.T) {
	cfg := DefaultConfig()
	cfg.InMemory = true
	cfg.ClusterSecret = []byte("nodes-test-secret-0123456789abcdef")
	for _, name := range []string{"r\x1b[2Jogue", "my node", "", strings.Repeat("n", 129), "-n1"} {
		cfg.NodeName = name
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "node name") {
			t.Errorf("node name %q: Validate = %v, want an error about the node name", name, err)
		}
	}
	cfg.NodeName = "n1"
	if err := cfg.Validate(); err != nil {
		t.Fatalf("node name n1: %v", err)
	}
}

// TestAGossipMemberWithABadNameIsNeverMadeARaftServer: a member that
// announces itself as a server under a name breaking the rule of node names
// (a peer that is not Beacon could), with a cluster port that passes the
// handshake, is not added to the Raft configuration; the leader logs it
// once, escaped.
func TestAGossipMemberWithABadNameIsNeverMadeARaftServer(t *testing.T) {
	var logs lineCounter
	tn := newTestNodes(t, 3, func(i int, c *Config) {
		c.Logger = hclog.New(&hclog.LoggerOptions{Name: c.NodeName, Level: hclog.Info, Output: io.MultiWriter(testWriter{t}, &logs)})
	})
	leader := tn.nodes[tn.waitForLeader(30*time.Second)]

	// A real cluster port of this cluster (a node that joined nothing), so
	// that only the name can keep the member out.
	port := DefaultConfig()
	port.NodeName = "port4"
	port.DataDir = t.TempDir()
	port.ClusterAddr, port.GossipAddr = "127.0.0.1:0", "127.0.0.1:0"
	port.ClusterSecret = []byte("nodes-test-secret-0123456789abcdef")
	port.Logger = hclog.New(&hclog.LoggerOptions{Name: port.NodeName, Level: hclog.Info, Output: testWriter{t}})
	portNode, err := New(port, fsm.New(port.Logger.Named("fsm")))
	if err != nil {
		t.Fatal(err)
	}
	if err := portNode.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = portNode.Shutdown(context.Background()) })

	const bad = "r\x1b[2J\x1b[31mogue"
	gcfg := DefaultConfig()
	gcfg.NodeName, gcfg.GossipAddr, gcfg.InMemory = bad, "127.0.0.1:0", true
	g, err := newGossip(gcfg, memberMeta{Role: fsm.RoleServer, Cluster: portNode.ClusterAddr(), LogFormat: logFormatGroups},
		hclog.New(&hclog.LoggerOptions{Name: "rogue", Level: hclog.Info, Output: testWriter{t}}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = g.ml.Shutdown() })
	if _, err := g.ml.Join([]string{leader.GossipAddr()}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, func() bool {
		m, ok := leader.gossip.member(bad)
		return ok && m.Status == fsm.NodeAlive && m.Role == fsm.RoleServer
	}, "the leader's gossip sees the badly named server alive")

	for range 3 {
		leader.reconcile(context.Background()) // what the leader loop runs on gossip events
	}
	f := leader.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		t.Fatal(err)
	}
	for _, s := range f.Configuration().Servers {
		if string(s.ID) == bad {
			t.Fatalf("the badly named member is in the Raft configuration: %+v", f.Configuration().Servers)
		}
	}
	if n := logs.count("its node name breaks the rule", leader.Name()); n != 1 {
		t.Errorf("the leader logged the bad name %d times, want once", n)
	}
	if logs.contains("\x1b") {
		t.Error("a log line holds a raw ESC")
	}
}

// lineCounter keeps log lines for counting.
type lineCounter struct {
	mu    sync.Mutex
	lines []string
}

func (l *lineCounter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, string(bytes.TrimSpace(p)))
	return len(p), nil
}

// count counts the lines holding every one of subs.
func (l *lineCounter) count(subs ...string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
next:
	for _, line := range l.lines {
		for _, s := range subs {
			if !strings.Contains(line, s) {
				continue next
			}
		}
		n++
	}
	return n
}

func (l *lineCounter) contains(s string) bool { return l.count(s) > 0 }
