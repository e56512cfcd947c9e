package cluster

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/beaconhq/beacon/fsm/fsmtest"
	"github.com/hashicorp/raft"
	dto "github.com/prometheus/client_model/go"
)

func voters(ids ...string) raft.Configuration {
	var c raft.Configuration
	for _, id := range ids {
		c.Servers = append(c.Servers, raft.Server{ID: raft.ServerID(id), Suffrage: raft.Voter, Address: raft.ServerAddress(id)})
	}
	return c
}

func withNonvoter(c raft.Configuration, id string) raft.Configuration {
	c.Servers = append(c.Servers, raft.Server{ID: raft.ServerID(id), Suffrage: raft.Nonvoter, Address: raft.ServerAddress(id)})
	return c
}

func TestVouchingQuorumNeedsBothVotersAndAtMostThree(t *testing.T) {
	cases := []struct {
		name             string
		cfg              raft.Configuration
		leader, follower string
		want             bool
	}{
		{"three voters", voters("a", "b", "c"), "a", "b", true},
		{"two voters", voters("a", "b"), "a", "b", true},
		{"three voters and a non-voter", withNonvoter(voters("a", "b", "c"), "d"), "a", "b", true},
		{"four voters", voters("a", "b", "c", "d"), "a", "b", false},
		{"five voters", voters("a", "b", "c", "d", "e"), "a", "b", false},
		{"the follower is a non-voter", withNonvoter(voters("a", "b", "c"), "d"), "a", "d", false},
		{"the follower is not in the configuration", voters("a", "b", "c"), "a", "x", false},
		{"the leader is not in the configuration", voters("a", "b", "c"), "x", "b", false},
		{"the leader vouches for itself", voters("a", "b", "c"), "a", "a", false},
		{"a cluster of one", voters("a"), "a", "a", false},
	}
	for _, c := range cases {
		if got := vouchingQuorum(c.cfg, raft.ServerID(c.leader), raft.ServerID(c.follower)); got != c.want {
			t.Errorf("%s: vouchingQuorum = %v, want %v", c.name, got, c.want)
		}
	}
}

func TestParseVouch(t *testing.T) {
	p := append(appendIndex(nil, 300), "node2"...)
	term, id, ok := parseVouch(p)
	if !ok || term != 300 || id != "node2" {
		t.Fatalf("parseVouch(%x) = %d %q %v, want 300 node2 true", p, term, id, ok)
	}
	for _, bad := range [][]byte{
		nil,
		{},
		{0},
		appendIndex(nil, 5),                     // no ID
		append(appendIndex(nil, 0), "node2"...), // term 0
		append([]byte{1, 5}, "node2"...),        // not the index encoding
		append([]byte{0, 0x80, 0x80}, []byte{}...),                                                  // truncated varint
		append([]byte{0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, "x"...), // varint overflow
	} {
		if term, id, ok := parseVouch(bad); ok {
			t.Errorf("parseVouch(%x) = %d %q true, want not a vouch", bad, term, id)
		}
	}
}

func FuzzParseVouch(f *testing.F) {
	f.Add(append(appendIndex(nil, 7), "node1"...))
	f.Add([]byte{})
	f.Add([]byte{0, 0x80})
	f.Fuzz(func(t *testing.T, p []byte) {
		term, id, ok := parseVouch(p)
		if !ok {
			return
		}
		if term == 0 || id == "" {
			t.Fatalf("parseVouch(%x) accepted term %d, id %q", p, term, id)
		}
		// What it accepts, vouch's encoding gives back byte for byte.
		if again := append(appendIndex(nil, term), id...); string(again) != string(p) {
			// A non-minimal varint decodes to the same term; that is the
			// only other form accepted.
			if t2, id2, _ := parseVouch(again); t2 != term || id2 != id {
				t.Fatalf("parseVouch(%x) = %d %q; its re-encoding %x reads %d %q", p, term, id, again, t2, id2)
			}
		}
	})
}

func servedValue(t *testing.T, n *Node, how string) float64 {
	t.Helper()
	var m dto.Metric
	if err := n.metrics.readIndexServed.WithLabelValues(how).Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// In a cluster of three, a consistent read on a follower is answered from
// the follower's vouch: the leader serves the read index without a quorum
// round, and the index covers every write acknowledged before the read —
// here each write is acknowledged by the leader, and the follower's read
// that follows must return an index at or past it and see the write.
// A request whose term is not the leader's (as after a leader change) and
// one from the leader itself are verified by a quorum round instead.
func TestAFollowersConsistentReadInAClusterOfThreeIsVouched(t *testing.T) {
	tn := newTestNodes(t, 3, nil)
	l := tn.waitForLeader(30 * time.Second)
	leader := tn.nodes[l]
	f := tn.other(l)
	follower := tn.nodes[f]

	vouched0, verified0 := servedValue(t, leader, "vouched"), servedValue(t, leader, "verified")
	var last uint64
	for i := range 20 {
		idx, err := leader.Apply(context.Background(), fsmtest.Register(t, fmt.Sprintf("v-%d", i), "web"))
		if err != nil {
			// An election on a loaded machine: the test's assertions
			// need a steady leader, so start again from a new one.
			t.Skipf("write %d: %v (leader changed)", i, err)
		}
		got, err := follower.ConsistentIndex(context.Background())
		if err != nil {
			t.Fatalf("consistent read %d on the follower: %v", i, err)
		}
		last = idx
		if got < idx {
			t.Fatalf("read %d: read index %d is below the acknowledged write's %d", i, got, idx)
		}
		if _, inst, _ := tn.fsms[f].Store().Instance(nil, "web", fmt.Sprintf("v-%d", i)); inst == nil {
			t.Fatalf("read %d: the follower's catalog at the read index lacks v-%d", i, i)
		}
	}
	if !leader.IsLeader() {
		t.Skip("the leader changed during the reads")
	}
	vouched, verified := servedValue(t, leader, "vouched")-vouched0, servedValue(t, leader, "verified")-verified0
	t.Logf("leader served %v vouched and %v verified read indexes", vouched, verified)
	if vouched < 20 {
		t.Errorf("the leader vouched %v read indexes for 20 follower reads, want 20", vouched)
	}

	// A stale term: verified, and still a correct index.
	term := leader.raft.CurrentTerm()
	before := servedValue(t, leader, "verified")
	idx, err := leader.serveReadIndex(context.Background(), append(appendIndex(nil, term-1), follower.cfg.NodeName...))
	if err != nil {
		t.Fatalf("read index for an older term: %v", err)
	}
	if idx < last {
		t.Errorf("read index for an older term: %d, below the last acknowledged write's %d", idx, last)
	}
	if got := servedValue(t, leader, "verified") - before; got != 1 {
		t.Errorf("a request of an older term was verified %v times, want 1", got)
	}
	// The leader's own reads: verified.
	before = servedValue(t, leader, "verified")
	if _, err := leader.ConsistentIndex(context.Background()); err != nil {
		t.Fatalf("consistent read on the leader: %v", err)
	}
	if got := servedValue(t, leader, "verified") - before; got != 1 {
		t.Errorf("the leader's own read was verified %v times, want 1", got)
	}
}

// With four voters a follower and the leader are not a majority: every
// read index is verified by a quorum round.
func TestAFollowersConsistentReadInAClusterOfFourIsVerified(t *testing.T) {
	tn := newTestNodes(t, 4, nil)
	l := tn.waitForLeader(30 * time.Second)
	leader := tn.nodes[l]
	eventually(t, 30*time.Second, func() bool {
		f := leader.raft.GetConfiguration()
		return f.Error() == nil && len(f.Configuration().Servers) == 4
	}, "four voters")
	follower := tn.nodes[tn.other(l)]
	vouched0, verified0 := servedValue(t, leader, "vouched"), servedValue(t, leader, "verified")
	for i := range 5 {
		if _, err := follower.ConsistentIndex(context.Background()); err != nil {
			t.Fatalf("consistent read %d: %v", i, err)
		}
	}
	if !leader.IsLeader() {
		t.Skip("the leader changed during the reads")
	}
	if got := servedValue(t, leader, "vouched") - vouched0; got != 0 {
		t.Errorf("the leader of four voters vouched %v read indexes, want 0", got)
	}
	if got := servedValue(t, leader, "verified") - verified0; got < 5 {
		t.Errorf("the leader of four voters verified %v read indexes for 5 reads, want 5", got)
	}
}
