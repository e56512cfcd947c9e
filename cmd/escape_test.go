package cmd_test

import (
	"io"
	"log"
	"strings"
	"testing"
	"time"

	"github.com/beaconhq/beacon/agent/agenttest"
	"github.com/hashicorp/memberlist"
)

// rogueMeta is the gossip metadata of a member claiming to be a server,
// as a peer that is not Beacon could announce it.
type rogueMeta struct{}

func (rogueMeta) NodeMeta(int) []byte {
	return []byte(`{"r":"server","c":"127.0.0.1:1","h":"127.0.0.1:2\u001b[2J"}`)
}
func (rogueMeta) NotifyMsg([]byte)                {}
func (rogueMeta) GetBroadcasts(int, int) [][]byte { return nil }
func (rogueMeta) LocalState(bool) []byte          { return nil }
func (rogueMeta) MergeRemoteState([]byte, bool)   {}

// TestTablesEscapeServerProvidedNames: a gossip member whose name and
// address carry terminal escapes is listed by `beacon members` with them
// escaped, as check output is, never raw.
func TestTablesEscapeServerProvidedNames(t *testing.T) {
	c := agenttest.New(t, 1)
	c.WaitForVoters(1)
	const bad = "r\x1b[2J\x1b[31mogue"
	mc := memberlist.DefaultLocalConfig()
	mc.Name, mc.BindAddr, mc.BindPort, mc.AdvertisePort = bad, "127.0.0.1", 0, 0
	mc.Delegate = rogueMeta{}
	mc.Logger = log.New(io.Discard, "", 0)
	ml, err := memberlist.Create(mc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ml.Shutdown() })
	if _, err := ml.Join([]string{c.Node(0).Config.GossipAddr}); err != nil {
		t.Fatal(err)
	}
	addr := c.Node(0).HTTPAddr()
	var out string
	agenttest.Eventually(t, 20*time.Second, func() bool {
		out = mustBeacon(t, addr, "members")
		return strings.Contains(out, "ogue")
	}, "the rogue member in `beacon members`")
	if strings.ContainsRune(out, 0x1b) {
		t.Fatalf("members printed a raw ESC:\n%q", out)
	}
	if !strings.Contains(out, `r\x1b[2J\x1b[31mogue`) || !strings.Contains(out, `127.0.0.1:2\x1b[2J`) {
		t.Fatalf("members should show the name and address escaped:\n%s", out)
	}
	if !strings.Contains(mustBeacon(t, addr, "members", "-o", "json"), `r\u001b[2J\u001b[31mogue`) {
		t.Fatal("-o json should carry the name as JSON escapes")
	}
}
