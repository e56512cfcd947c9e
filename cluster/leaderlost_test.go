package cluster

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/hashicorp/raft"
)

// TestAnOperatorCallWhoseLeaderLostItsLeadershipHasAnUnknownOutcome: an
// operator call (force-leave, remove-peer) that the leader ran itself and
// whose Raft change failed with raft.ErrLeadershipLost reports
// ErrUnknownOutcome (the API's 503 unknown_outcome), as the same call
// forwarded from a follower does. It was returned as is, and the API
// answered it with 500 internal ("force-leave "n3": remove from raft:
// leadership lost while committing log", seen on a busy machine).
func TestAnOperatorCallWhoseLeaderLostItsLeadershipHasAnUnknownOutcome(t *testing.T) {
	tn := newTestNodes(t, 3, nil)
	const opTest Op = 200
	for _, n := range tn.nodes {
		n.rpcSrv.handle(opTest, func(context.Context, []byte) ([]byte, error) {
			return nil, fmt.Errorf("cluster: force-leave %q: remove from raft: %w", "n9", raft.ErrLeadershipLost)
		})
	}
	leader := tn.waitForLeader(30e9)
	for i, n := range tn.nodes {
		_, err := n.CallLeader(context.Background(), opTest, nil)
		if !errors.Is(err, ErrUnknownOutcome) {
			t.Errorf("node %d (leader: %v): %v, want ErrUnknownOutcome", i, i == leader, err)
		}
	}
}
