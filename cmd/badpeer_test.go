package cmd_test

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/beaconhq/beacon/agent/agenttest"
	"github.com/beaconhq/beacon/api/client"
)

// TestRemovePeerRemovesAVoterWhoseNameBreaksTheRule: voters named before the
// rule of node names (an older release's "my node", or a name with terminal
// escapes) sit in the Raft configuration of a real cluster. An operator
// removes the first by its ID and the second by its cluster address, through
// a follower; an ID with control characters is refused (pointing to
// --address) and nothing the CLI prints or the agents log holds a raw ESC.
func TestRemovePeerRemovesAVoterWhoseNameBreaksTheRule(t *testing.T) {
	var logs escLog
	c := agenttest.New(t, 3, agenttest.WithLogWriter(&logs))
	c.WaitForVoters(3)
	const (
		spaced = "my node"
		rogue  = "r\x1b[2J\x1b[31mogue"
		// Cluster addresses nothing listens on (port range of this test's
		// helper): the voters are dead, as a server gone for good is.
		spacedAddr = "127.0.0.1:34901"
		rogueAddr  = "127.0.0.1:34902"
	)
	leader := c.Node(c.Leader())
	for _, v := range [][2]string{{spaced, spacedAddr}, {rogue, rogueAddr}} {
		if err := leader.Agent.Node().AddVoterForTest(v[0], v[1]); err != nil {
			t.Fatalf("add voter %q: %v", v[0], err)
		}
	}
	f := c.Follower()
	addr := c.Node(f).HTTPAddr()
	peers := func() map[string]string {
		var ps []client.Peer
		out := mustBeacon(t, addr, "operator", "raft", "list-peers", "-o", "json")
		if err := json.Unmarshal([]byte(out), &ps); err != nil {
			t.Fatalf("list-peers -o json: %v\n%s", err, out)
		}
		m := map[string]string{}
		for _, p := range ps {
			m[p.ID] = p.Address
		}
		return m
	}
	agenttest.Eventually(t, 20*time.Second, func() bool { return len(peers()) == 5 }, "5 peers on "+c.Node(f).Name)

	// list-peers prints the rogue name escaped.
	out := mustBeacon(t, addr, "operator", "raft", "list-peers")
	if strings.Contains(out, "\x1b") || !strings.Contains(out, `r\x1b[2J\x1b[31mogue`) {
		t.Fatalf("list-peers does not show the rogue name escaped:\n%q", out)
	}

	// By ID: a name that breaks the rule is taken as it is.
	out = mustBeacon(t, addr, "operator", "raft", "remove-peer", spaced)
	if !strings.Contains(out, "removed my node from the raft configuration") {
		t.Fatalf("remove-peer %q: %q", spaced, out)
	}
	agenttest.Eventually(t, 20*time.Second, func() bool { _, ok := peers()[spaced]; return !ok }, spaced+" out of the configuration")

	// An ID with control characters is refused, saying what to do.
	_, err := cli(context.Background(), t, addr, "operator", "raft", "remove-peer", rogue)
	if err == nil || !strings.Contains(err.Error(), "--address") || strings.Contains(err.Error(), "\x1b") {
		t.Fatalf("remove-peer with a raw ESC in the ID: %q, want a refusal naming --address", err)
	}
	if _, ok := peers()[rogue]; !ok {
		t.Fatal("the refused remove-peer removed the rogue voter")
	}
	// A wrong address is not found.
	if _, err := cli(context.Background(), t, addr, "operator", "raft", "remove-peer", "--address", "127.0.0.1:34999"); err == nil || !strings.Contains(err.Error(), "no Raft peer has the address") {
		t.Fatalf("remove-peer --address of no peer: %v", err)
	}

	// By address: the answer names the server, escaped.
	out = mustBeacon(t, addr, "operator", "raft", "remove-peer", "--address", rogueAddr)
	if strings.Contains(out, "\x1b") || !strings.Contains(out, `removed r\x1b[2J\x1b[31mogue (`+rogueAddr+`) from the raft configuration`) {
		t.Fatalf("remove-peer --address %s: %q", rogueAddr, out)
	}
	agenttest.Eventually(t, 20*time.Second, func() bool { return len(peers()) == 3 }, "3 peers again")
	if _, ok := peers()[rogue]; ok {
		t.Fatal("the rogue voter is still a peer")
	}
	if logs.has("\x1b") {
		t.Error("a log line holds a raw ESC")
	}
}

// escLog keeps every agent's log output.
type escLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *escLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *escLog) has(s string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return bytes.Contains(l.buf.Bytes(), []byte(s))
}
