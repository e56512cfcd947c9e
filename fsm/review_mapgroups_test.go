package fsm

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/hashicorp/raft"
)

// Group entries, check updates (some refused: partial writes), assign
// checks, node failures, metrics: the published map and every record's set
// stay exact after each batch.
func TestReviewMapGroupsAndRejections(t *testing.T) {
	r := newRV(t)
	rng := rand.New(rand.NewPCG(7, 7))
	r.batch(rvNode(t, "n0", NodeAlive), rvNode(t, "n1", NodeAlive))
	cmd := func() []byte {
		svc := fmt.Sprintf("s%d", rng.IntN(4))
		id := fmt.Sprintf("i%d", rng.IntN(20))
		switch rng.IntN(8) {
		case 0, 1:
			return rvReg(t, svc, id, fmt.Sprintf("n%d", rng.IntN(2)), "x", CheckDefinition{Name: "ttl", Type: CheckTTL, TTL: 1e9}, CheckDefinition{Name: "h", Type: CheckHTTP, Target: "http://x", Interval: 1e9})
		case 2:
			return rvDereg(t, svc, id)
		case 3:
			st := []Health{Passing, Critical, Warning}[rng.IntN(3)]
			return rvEnc(t, CheckUpdateType, &CheckUpdateRequest{Node: []string{"", "n0", "n1"}[rng.IntN(3)], Updates: []CheckUpdate{
				{Check: CheckID(svc, id, "ttl"), Status: st}, {Check: CheckID(svc, id, "h"), Status: st}}, Time: rvT0})
		case 4:
			return rvEnc(t, AssignChecksType, &AssignChecksRequest{Assignments: []Assignment{{Check: CheckID(svc, id, "h"), Owner: "n1"}}})
		case 5:
			return rvNode(t, fmt.Sprintf("n%d", rng.IntN(2)), []NodeStatus{NodeAlive, NodeFailed}[rng.IntN(2)])
		case 6:
			return rvEnc(t, MetricsType, &MetricsRequest{Updates: []InstanceMetrics{{Service: svc, Instance: id, Metrics: map[string]float64{"x": float64(rng.IntN(3))}}}})
		default:
			return rvMaint(t, svc, id, []string{ModeNone, ModeDrain, ModeMaintenance}[rng.IntN(3)])
		}
	}
	for b := range 300 {
		var logs []*raft.Log
		for range 1 + rng.IntN(5) {
			r.index++
			if rng.IntN(2) == 0 {
				g := []byte{byte(GroupType)}
				for k := range 1 + rng.IntN(8) {
					g = AppendGroupMember(g, [GroupIDLen]byte{byte(k)}, cmd())
				}
				logs = append(logs, rvLog(r.index, g))
			} else {
				logs = append(logs, rvLog(r.index, cmd()))
			}
		}
		r.f.ApplyBatch(logs)
		rvCheckServiceLists(t, r.f.Store(), fmt.Sprintf("batch %d", b))
	}
}
