package chaostest_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/pprof"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/beaconhq/beacon/api/client"
	"github.com/beaconhq/beacon/cluster/chaostest"
)

// The checkers are tested on hand-built histories, so that each is shown to
// fail on the anomaly it exists to catch. Times are in milliseconds.

func ms(n int) time.Duration { return time.Duration(n) * time.Millisecond }

func put(key, value string, call, ret int, out chaostest.Outcome) chaostest.Op {
	return chaostest.Op{Kind: chaostest.Put, Key: key, Value: value, Call: ms(call), Return: ms(ret), Outcome: out, NodeName: "n1", Incarnation: 1}
}

func del(key string, call, ret int, out chaostest.Outcome) chaostest.Op {
	return chaostest.Op{Kind: chaostest.Del, Key: key, Call: ms(call), Return: ms(ret), Outcome: out, NodeName: "n1", Incarnation: 1}
}

func cread(key, value string, call, ret int) chaostest.Op {
	return chaostest.Op{Kind: chaostest.ConsistentRead, Key: key, Value: value, Call: ms(call), Return: ms(ret), Outcome: chaostest.OK, NodeName: "n2", Incarnation: 1}
}

func final(key, value string, call, ret int) chaostest.Op {
	o := cread(key, value, call, ret)
	o.Kind = chaostest.FinalRead
	return o
}

func number(ops []chaostest.Op) []chaostest.Op {
	for i := range ops {
		ops[i].ID = i
		ops[i].Process = i
	}
	return ops
}

func TestLinearizabilityChecker(t *testing.T) {
	tests := []struct {
		name string
		ops  []chaostest.Op
		want porcupine.CheckResult
	}{
		{"a read of an overwritten value is not linearizable", []chaostest.Op{
			put("a", "v1", 0, 10, chaostest.OK), put("a", "v2", 20, 30, chaostest.OK), cread("a", "v1", 40, 50),
		}, porcupine.Illegal},
		{"a read concurrent with a write may return the old value", []chaostest.Op{
			put("a", "v1", 0, 10, chaostest.OK), put("a", "v2", 20, 30, chaostest.OK), cread("a", "v1", 25, 35),
		}, porcupine.Ok},
		{"a read concurrent with a write may return the new value", []chaostest.Op{
			put("a", "v1", 0, 10, chaostest.OK), put("a", "v2", 20, 30, chaostest.OK), cread("a", "v2", 25, 35),
		}, porcupine.Ok},
		{"a read after a deregistration must find the instance absent", []chaostest.Op{
			put("a", "v1", 0, 10, chaostest.OK), del("a", 20, 30, chaostest.OK), cread("a", "v1", 40, 50),
		}, porcupine.Illegal},
		{"a write of unknown outcome may take effect long after it was sent", []chaostest.Op{
			put("a", "v1", 0, 10, chaostest.OK), put("a", "v2", 20, 30, chaostest.Unknown), cread("a", "v1", 40, 50), cread("a", "v2", 60, 70),
		}, porcupine.Ok},
		{"a write of unknown outcome cannot take effect before it was sent", []chaostest.Op{
			cread("a", "v2", 0, 5), put("a", "v2", 10, 20, chaostest.Unknown),
		}, porcupine.Illegal},
		{"a failed write never takes effect", []chaostest.Op{
			put("a", "v1", 0, 10, chaostest.OK), put("a", "v2", 20, 30, chaostest.Fail), cread("a", "v2", 40, 50),
		}, porcupine.Illegal},
		{"reads that flip back and forth between two values are not linearizable", []chaostest.Op{
			put("a", "v1", 0, 10, chaostest.OK), put("a", "v2", 20, 100, chaostest.Unknown),
			cread("a", "v2", 30, 40), cread("a", "v1", 50, 60),
		}, porcupine.Illegal},
		{"a list read is checked for every key", []chaostest.Op{
			put("a", "v1", 0, 10, chaostest.OK), put("b", "w1", 0, 10, chaostest.OK),
			{Kind: chaostest.ConsistentRead, Key: chaostest.AllKeys, Values: map[string]string{"a": "v1"}, Call: ms(20), Return: ms(30), Outcome: chaostest.OK},
		}, porcupine.Illegal},
		{"keys are independent", []chaostest.Op{
			put("a", "v1", 0, 10, chaostest.OK), put("b", "w1", 20, 30, chaostest.OK), cread("a", "v1", 40, 50), cread("b", "w1", 40, 50),
		}, porcupine.Ok},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := chaostest.CheckLinearizability(number(tt.ops), 10*time.Second)
			if res.Result != tt.want {
				t.Fatalf("got %s, want %s", res.Result, tt.want)
			}
			if res.Result == porcupine.Illegal {
				path := filepath.Join(t.TempDir(), "lin.html")
				if err := res.WriteVisualization(path); err != nil {
					t.Fatalf("visualisation: %v", err)
				}
				if b, _ := os.ReadFile(path); !strings.Contains(string(b), "<html") {
					t.Fatalf("visualisation is not HTML")
				}
			}
		})
	}
}

func TestPorcupineHistoryDropsOnlyUnobservedUnknownPuts(t *testing.T) {
	ops := number([]chaostest.Op{
		put("a", "seen", 0, 10, chaostest.Unknown),
		put("a", "unseen", 0, 10, chaostest.Unknown),
		del("a", 0, 10, chaostest.Unknown),
		put("a", "failed", 0, 10, chaostest.Fail),
		cread("a", "seen", 20, 30),
		{Kind: chaostest.Read, Key: "a", Value: "unseen", Call: ms(20), Return: ms(30), Outcome: chaostest.OK},
	})
	got := chaostest.PorcupineHistory(ops)
	if len(got) != 3 {
		t.Fatalf("got %d porcupine operations, want 3 (the observed unknown put, the unknown del and the consistent read): %+v", len(got), got)
	}
	for _, op := range got {
		if op.Call > op.Return {
			t.Fatalf("operation ends before it starts: %+v", op)
		}
	}
}

func TestLostWriteChecker(t *testing.T) {
	tests := []struct {
		name string
		ops  []chaostest.Op
		lost int
	}{
		{"the last acknowledged put survives", []chaostest.Op{
			put("a", "v1", 0, 10, chaostest.OK), put("a", "v2", 20, 30, chaostest.OK), final("a", "v2", 100, 110),
		}, 0},
		{"a final state from an earlier put loses the later acknowledged put", []chaostest.Op{
			put("a", "v1", 0, 10, chaostest.OK), put("a", "v2", 20, 30, chaostest.OK), final("a", "v1", 100, 110),
		}, 1},
		{"concurrent puts may end in either order", []chaostest.Op{
			put("a", "v1", 0, 30, chaostest.OK), put("a", "v2", 10, 20, chaostest.OK), final("a", "v1", 100, 110),
		}, 0},
		{"an instance still present loses the acknowledged deregistration", []chaostest.Op{
			put("a", "v1", 0, 10, chaostest.OK), del("a", 20, 30, chaostest.OK), final("a", "v1", 100, 110),
		}, 1},
		{"an absent instance loses the put acknowledged after the deregistration", []chaostest.Op{
			del("a", 0, 10, chaostest.OK), put("a", "v1", 20, 30, chaostest.OK), final("a", "", 100, 110),
		}, 1},
		{"a put of unknown outcome may be the last write", []chaostest.Op{
			put("a", "v1", 0, 10, chaostest.Unknown), put("a", "v2", 20, 30, chaostest.OK), final("a", "v1", 100, 110),
		}, 0},
		{"a value nobody wrote is reported", []chaostest.Op{
			put("a", "v1", 0, 10, chaostest.OK), final("a", "ghost", 100, 110),
		}, 1},
		{"a failed put is not required to survive", []chaostest.Op{
			put("a", "v1", 0, 10, chaostest.OK), put("a", "v2", 20, 30, chaostest.Fail), final("a", "v1", 100, 110),
		}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lost := chaostest.CheckLostWrites(number(tt.ops))
			if len(lost) != tt.lost {
				t.Fatalf("got %d lost writes %v, want %d", len(lost), lost, tt.lost)
			}
		})
	}
}

func readAt(node, inc int, key string, idx uint64, call, ret int) chaostest.Op {
	return chaostest.Op{Kind: chaostest.Read, Node: node, NodeName: fmt.Sprintf("n%d", node+1), Incarnation: inc, Key: key,
		Index: idx, Call: ms(call), Return: ms(ret), Outcome: chaostest.OK, KnownLeader: true}
}

func TestMonotonicReadChecker(t *testing.T) {
	putAt := func(node int, key string, idx uint64, call, ret int) chaostest.Op {
		o := put(key, "v", call, ret, chaostest.OK)
		o.Node, o.Index = node, idx
		return o
	}
	tests := []struct {
		name       string
		ops        []chaostest.Op
		violations int
	}{
		{"increasing indexes are fine", []chaostest.Op{readAt(0, 1, "a", 5, 0, 10), readAt(0, 1, "a", 7, 20, 30)}, 0},
		{"a later read with a lower index went back in time", []chaostest.Op{readAt(0, 1, "a", 7, 0, 10), readAt(0, 1, "a", 5, 20, 30)}, 1},
		{"concurrent reads may come back in any order", []chaostest.Op{readAt(0, 1, "a", 7, 0, 30), readAt(0, 1, "a", 5, 20, 40)}, 0},
		{"different nodes are not compared", []chaostest.Op{readAt(0, 1, "a", 7, 0, 10), readAt(1, 1, "a", 5, 20, 30)}, 0},
		{"different incarnations are not compared", []chaostest.Op{readAt(0, 1, "a", 7, 0, 10), readAt(0, 2, "a", 5, 20, 30)}, 0},
		{"a read must see the node's own acknowledged put", []chaostest.Op{putAt(0, "a", 9, 0, 10), readAt(0, 1, "a", 8, 20, 30)}, 1},
		{"a service read must see the node's own acknowledged put", []chaostest.Op{putAt(0, "a", 9, 0, 10), readAt(0, 1, chaostest.AllKeys, 8, 20, 30)}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := chaostest.CheckMonotonicReads(number(tt.ops))
			if len(got) != tt.violations {
				t.Fatalf("got %d violations %v, want %d", len(got), got, tt.violations)
			}
		})
	}
}

func TestRestartRegressions(t *testing.T) {
	fresh := readAt(0, 2, "a", 3, 20, 30)
	never := readAt(0, 2, "a", 1, 40, 50)
	never.LastContact, never.KnownLeader = -1, false
	honest, dishonest := chaostest.RestartRegressions(number([]chaostest.Op{readAt(0, 1, "a", 9, 0, 10), fresh, never}))
	if len(honest) != 1 || len(dishonest) != 1 {
		t.Fatalf("got %d honest and %d dishonest regressions, want 1 and 1", len(honest), len(dishonest))
	}
}

func TestStalenessChecker(t *testing.T) {
	iso := []chaostest.Isolation{{Node: 0, From: ms(1000), To: ms(11000)}}
	withLC := func(call int, lc time.Duration) chaostest.Op {
		o := readAt(0, 1, chaostest.AllKeys, 5, call, call+5)
		o.LastContact = lc
		return o
	}
	tests := []struct {
		name       string
		op         chaostest.Op
		checked    int
		violations int
	}{
		{"a Last-Contact that grows with the partition is honest", withLC(6000, ms(4900)), 1, 0},
		{"a fresh Last-Contact five seconds into a partition understates", withLC(6000, ms(100)), 1, 1},
		{"never (-1) is honest", withLC(6000, -1), 1, 0},
		{"reads in the grace period after the cut are not checked", withLC(2000, 0), 0, 0},
		{"reads after the heal are not checked", withLC(12000, 0), 0, 0},
	}
	leader := []chaostest.Isolation{{Node: 0, Leader: true, From: ms(1000), To: ms(11000)}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, checked := chaostest.CheckStaleness(number([]chaostest.Op{tt.op}), iso)
			if len(got) != tt.violations || checked != tt.checked {
				t.Fatalf("got %d violations (%v) of %d checked, want %d of %d", len(got), got, checked, tt.violations, tt.checked)
			}
		})
	}
	t.Run("an isolated leader may count from its step-down", func(t *testing.T) {
		if got, _ := chaostest.CheckStaleness(number([]chaostest.Op{withLC(6000, ms(3600))}), leader); len(got) != 0 {
			t.Fatalf("got %v", got)
		}
		if got, _ := chaostest.CheckStaleness(number([]chaostest.Op{withLC(6000, ms(3000))}), leader); len(got) != 1 {
			t.Fatalf("a leader understating by 2s passed: %v", got)
		}
	})
}

func TestUnderstatedStaleness(t *testing.T) {
	w := put("a", "v", 0, 100, chaostest.OK)
	w.Index = 50
	stale := readAt(1, 1, chaostest.AllKeys, 40, 3000, 3001)
	stale.LastContact = ms(10)
	honest := readAt(1, 1, chaostest.AllKeys, 40, 3000, 3001)
	honest.LastContact = ms(2950)
	caughtUp := readAt(1, 1, chaostest.AllKeys, 60, 3000, 3001)
	got := chaostest.UnderstatedStaleness(number([]chaostest.Op{w, stale, honest, caughtUp}), time.Second)
	if len(got) != 1 || got[0].Read.ID != 1 {
		t.Fatalf("got %v, want only the read that missed a put acknowledged ~3s before while claiming 10ms", got)
	}
}

func TestLeaderChecker(t *testing.T) {
	dir := t.TempDir()
	logs := map[string]string{
		"n1": `{"@message":"election won","@timestamp":"t1","term":2}` + "\n" + `{"@message":"entering leader state"}` + "\n",
		"n2": `{"@message":"election won","@timestamp":"t2","term":3}` + "\n",
		"n3": `{"@message":"election won","@timestamp":"t3","term":3}` + "\n" + "not json election won\n",
	}
	var claims []chaostest.LeaderClaim
	for _, n := range []string{"n1", "n2", "n3"} {
		path := filepath.Join(dir, n+".log")
		if err := os.WriteFile(path, []byte(logs[n]), 0o644); err != nil {
			t.Fatal(err)
		}
		c, err := chaostest.ParseElections(path, n)
		if err != nil {
			t.Fatal(err)
		}
		claims = append(claims, c...)
	}
	if len(claims) != 3 {
		t.Fatalf("parsed %d elections, want 3: %v", len(claims), claims)
	}
	got := chaostest.CheckLeaders(claims)
	if len(got) != 1 || !strings.Contains(got[0], "term 3") {
		t.Fatalf("got %v, want one violation for term 3", got)
	}
	if got := chaostest.CheckLeaders(claims[:2]); len(got) != 0 {
		t.Fatalf("one leader per term reported as %v", got)
	}
}

func TestClassify(t *testing.T) {
	apiErr := func(status int, code string) error {
		return &client.Error{Status: status, ErrorBody: client.ErrorBody{Code: code}}
	}
	refused := &net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}
	tests := []struct {
		name  string
		err   error
		write bool
		want  chaostest.Outcome
	}{
		{"success is ok", nil, true, chaostest.OK},
		{"a 503 no_leader write had no effect", apiErr(503, "no_leader"), true, chaostest.Fail},
		{"a 503 not_leader write had no effect", apiErr(503, "not_leader"), true, chaostest.Fail},
		{"a 503 unknown_outcome write may have happened", apiErr(503, "unknown_outcome"), true, chaostest.Unknown},
		{"a 504 write may have happened", apiErr(504, "timeout"), true, chaostest.Unknown},
		{"a 500 write may have happened", apiErr(500, "internal"), true, chaostest.Unknown},
		{"a 400 write had no effect", apiErr(400, "invalid"), true, chaostest.Fail},
		{"a refused connection never carried the write", fmt.Errorf("client: no agent reachable: %w", refused), true, chaostest.Fail},
		{"a timed-out write may have happened", context.DeadlineExceeded, true, chaostest.Unknown},
		{"a dropped connection leaves a write unknown", errors.New("EOF"), true, chaostest.Unknown},
		{"a timed-out read simply failed", context.DeadlineExceeded, false, chaostest.Fail},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, _, _ := chaostest.Classify(tt.err, tt.write); got != tt.want {
				t.Fatalf("Classify(%v, write=%v) = %s, want %s", tt.err, tt.write, got, tt.want)
			}
		})
	}
}

func TestParseFaults(t *testing.T) {
	if got, err := chaostest.ParseFaults(""); err != nil || len(got) != len(chaostest.AllFaults) {
		t.Fatalf("empty list: %v, %v; want every fault", got, err)
	}
	if got, err := chaostest.ParseFaults("kill-leader, pause-leader"); err != nil || len(got) != 2 {
		t.Fatalf("two faults: %v, %v", got, err)
	}
	if _, err := chaostest.ParseFaults("kill-everything"); err == nil {
		t.Fatal("an unknown fault was accepted")
	}
}

func TestSampleNodeReadsHeapAndGoroutinesFromPprof(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	s, err := chaostest.SampleNode(context.Background(), srv.Client(), strings.TrimPrefix(srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	if s.HeapInuse == 0 || s.Goroutines < 2 {
		t.Fatalf("implausible sample %+v", s)
	}
	table := chaostest.SampleTable([]chaostest.Sample{
		{At: time.Second, Node: "n1", HeapInuse: 8 << 20, Goroutines: 40},
		{At: time.Minute, Node: "n1", HeapInuse: 10 << 20, Goroutines: 38},
	})
	if !strings.Contains(table, "+2.0 MiB") || !strings.Contains(table, "-2") {
		t.Fatalf("growth missing from the table:\n%s", table)
	}
}
