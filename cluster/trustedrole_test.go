package cluster

import (
	"testing"

	"github.com/beaconhq/beacon/fsm"
)

// TestARefusedMemberStaysUntrustedOnceItStops: a member the leader refused
// (alive, a server by its own word, not in Raft) is untrusted, and stays so
// once it fails or leaves in the same run; a server that was in Raft keeps
// its role when it leaves or fails (a leave, force-leave or reaping took it
// out, not a refused credential).
func TestARefusedMemberStaysUntrustedOnceItStops(t *testing.T) {
	inRaft := map[string]bool{"s1": true}
	untrusted := &fsm.Node{Name: "rogue", Role: fsm.RoleUntrusted, Incarnation: 5}
	wasServer := &fsm.Node{Name: "s2", Role: fsm.RoleServer, Incarnation: 5}
	for _, tc := range []struct {
		name   string
		m      Member
		prev   *fsm.Node
		inRaft map[string]bool
		want   string
	}{
		{"a server in Raft", Member{Name: "s1", Role: fsm.RoleServer, Status: fsm.NodeAlive}, nil, inRaft, fsm.RoleServer},
		{"alive, not in Raft", Member{Name: "rogue", Role: fsm.RoleServer, Status: fsm.NodeAlive, Incarnation: 5}, nil, inRaft, fsm.RoleUntrusted},
		{"a refused member that failed", Member{Name: "rogue", Role: fsm.RoleServer, Status: fsm.NodeFailed, Incarnation: 5}, untrusted, inRaft, fsm.RoleUntrusted},
		{"a refused member that left", Member{Name: "rogue", Role: fsm.RoleServer, Status: fsm.NodeLeft, Incarnation: 5}, untrusted, inRaft, fsm.RoleUntrusted},
		{"refused in an earlier run, failed in a later one", Member{Name: "rogue", Role: fsm.RoleServer, Status: fsm.NodeFailed, Incarnation: 6}, untrusted, inRaft, fsm.RoleServer},
		{"a server that left Raft", Member{Name: "s2", Role: fsm.RoleServer, Status: fsm.NodeLeft, Incarnation: 5}, wasServer, inRaft, fsm.RoleServer},
		{"a server that failed, no record yet", Member{Name: "s2", Role: fsm.RoleServer, Status: fsm.NodeFailed, Incarnation: 5}, nil, inRaft, fsm.RoleServer},
		{"no configuration known", Member{Name: "x", Role: fsm.RoleServer, Status: fsm.NodeAlive}, nil, nil, fsm.RoleServer},
	} {
		if got := trustedRole(tc.m, tc.inRaft, tc.prev); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}
