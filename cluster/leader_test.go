package cluster

import (
	"testing"
	"time"

	"github.com/beaconhq/beacon/fsm"
	"github.com/hashicorp/raft"
)

func TestReapableRemovesOnlyServersFailedLongEnoughAndKeepsTheMinimumQuorum(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	on := Config{ReapFailedAfter: time.Minute, MinQuorum: 3}
	voter := raft.Server{ID: "n5", Suffrage: raft.Voter}
	nonvoter := raft.Server{ID: "n5", Suffrage: raft.Nonvoter}
	failedFor := func(d time.Duration) Member {
		return Member{Name: "n5", Status: fsm.NodeFailed, Since: now.Add(-d)}
	}
	cases := []struct {
		name   string
		cfg    Config
		m      Member
		srv    raft.Server
		voters int
		want   bool
	}{
		{"reaping is off by default, however long a server has failed", Config{MinQuorum: 3}, failedFor(24 * time.Hour), voter, 5, false},
		{"a server failed for less than the time is kept", on, failedFor(59 * time.Second), voter, 5, false},
		{"a server failed for exactly the time is removed", on, failedFor(time.Minute), voter, 5, true},
		{"a server failed for longer is removed while enough voters remain", on, failedFor(time.Hour), voter, 4, true},
		{"a voter is kept if removing it leaves fewer voters than the minimum quorum", on, failedFor(time.Hour), voter, 3, false},
		{"the minimum quorum is configurable", Config{ReapFailedAfter: time.Minute, MinQuorum: 5}, failedFor(time.Hour), voter, 5, false},
		{"a non-voter is removed whatever the voter count", on, failedFor(time.Hour), nonvoter, 3, true},
		{"an alive server is never removed", on, Member{Name: "n5", Status: fsm.NodeAlive, Since: now.Add(-time.Hour)}, voter, 5, false},
		{"a server that left is not the reaper's business", on, Member{Name: "n5", Status: fsm.NodeLeft, Since: now.Add(-time.Hour)}, voter, 5, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := reapable(tc.cfg, tc.m, tc.srv, tc.voters, now); got != tc.want {
				t.Fatalf("reapable = %t, want %t", got, tc.want)
			}
		})
	}
}
