package chaostest

import (
	"testing"
	"time"
)

// maxWaits counts every workload request, and as "live" only those sent to a
// node no kill, pause or black-hole fault touched while they ran.
func TestMaxWaitsSeparatesRequestsToTheFaultedNode(t *testing.T) {
	s := time.Second
	faults := []Fault{{Kind: BlackHoleLeader, Node: 0, Start: 10 * s, Healed: 15 * s, Recovery: s}}
	ops := []Op{
		{Process: 1, Node: 0, Call: 11 * s, Return: 16 * s},                   // to the black-holed node: 5s
		{Process: 2, Node: 1, Call: 10 * s, Return: 10*s + 1500*1e6},          // through a follower: 1.5s
		{Process: 3, Node: 0, Call: 20 * s, Return: 20*s + 2*1e6},             // after recovery: live
		{Process: -101, Worker: -1, Node: 1, Call: 0, Return: 30 * s},         // an observer: ignored
		{Process: 1 << 20, Worker: -2, Node: 2, Call: 10 * s, Return: 12 * s}, // an in-flight burst write: 2s
	}
	all, live := maxWaits(ops, faults)
	if all != 5*s || live != 2*s {
		t.Fatalf("maxWaits = %s, %s; want 5s, 2s", all, live)
	}
}
