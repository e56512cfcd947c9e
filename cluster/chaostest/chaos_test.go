package chaostest_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/beaconhq/beacon/cluster/chaostest"
)

func TestMain(m *testing.M) { chaostest.Main(m) }

func env(t *testing.T) chaostest.Env {
	t.Helper()
	e, err := chaostest.EnvFromOS()
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// runDir returns where a run keeps its data, logs and artifacts, and
// whether it must be kept regardless of the outcome.
func runDir(t *testing.T, e chaostest.Env, name string) (string, bool) {
	t.Helper()
	if e.Out != "" {
		dir := filepath.Join(e.Out, name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		return dir, true
	}
	dir, err := os.MkdirTemp("", "beacon-chaos-"+name+"-*")
	if err != nil {
		t.Fatal(err)
	}
	return dir, e.Keep
}

// TestChaos runs the workload against a 3-node cluster while the nemesis
// kills, pauses and partitions nodes, then checks the history: the
// consistent history is linearizable, no acknowledged write is lost, no term
// has two leaders, default reads never go back in time on a node and
// Last-Contact shows an isolated node's staleness; and the cluster recovers
// after each heal. CHAOS_RUNS, CHAOS_DURATION and CHAOS_SEED shape it (see
// chaostest.Env); each run prints a one-line summary with its seed.
func TestChaos(t *testing.T) {
	chaostest.RequireNetns(t)
	e := env(t)
	bin := chaostest.Binary(t, e)
	t.Logf("chaos: %d run(s) of %s, first seed %d (replay one with CHAOS_SEED=<seed> CHAOS_RUNS=1 CHAOS_DURATION=%s)",
		e.Runs, e.Duration, e.Seed, e.Duration)
	var agg chaostest.Aggregate
	for i := 0; i < e.Runs; i++ {
		seed := e.Seed + uint64(i)
		dir, keep := runDir(t, e, fmt.Sprintf("seed-%d", seed))
		res, err := chaostest.Run(context.Background(), chaostest.RunConfig{
			Binary: bin, Dir: dir, Duration: e.Duration, Seed: seed, LogLevel: e.LogLevel,
			Workload: chaostest.WorkloadConfig{Clients: e.Clients, Keys: e.Keys},
			Nemesis:  chaostest.NemesisConfig{Faults: e.Faults},
			Logf:     t.Logf,
		})
		if err != nil {
			t.Fatalf("run %d (seed %d): %v (artifacts in %s)", i+1, seed, err, dir)
		}
		agg.Add(res)
		t.Logf("run %d/%d: %s", i+1, e.Runs, res.Summary())
		if res.Failed() {
			t.Errorf("run %d/%d FAILED (replay: CHAOS_SEED=%d CHAOS_RUNS=1 CHAOS_DURATION=%s make chaos); artifacts and agent logs in %s\n%s",
				i+1, e.Runs, seed, e.Duration, dir, res.Details())
			continue
		}
		if !keep {
			os.RemoveAll(dir)
		}
	}
	t.Log(agg.Summary())
}

// TestSoak runs sustained mixed load without faults for CHAOS_SOAK (it is
// skipped when that is unset) and samples every node's heap and goroutine
// count through /debug/pprof, so that growth is visible; the history is
// checked as in TestChaos. CHAOS_FAULTS=partition-leader,... adds faults
// that do not restart processes.
func TestSoak(t *testing.T) {
	e := env(t)
	if e.Soak == 0 {
		t.Skip("soak: set CHAOS_SOAK (e.g. CHAOS_SOAK=10m make soak)")
	}
	chaostest.RequireNetns(t)
	bin := chaostest.Binary(t, e)
	dir, keep := runDir(t, e, fmt.Sprintf("soak-%d", e.Seed))
	noFaults := os.Getenv("CHAOS_FAULTS") == ""
	res, err := chaostest.Run(context.Background(), chaostest.RunConfig{
		Binary: bin, Dir: dir, Duration: e.Soak, Seed: e.Seed, LogLevel: e.LogLevel,
		Workload:    chaostest.WorkloadConfig{Clients: e.Clients, Keys: e.Keys},
		Nemesis:     chaostest.NemesisConfig{Faults: e.Faults},
		NoFaults:    noFaults,
		SampleEvery: e.SampleEvery,
		Logf:        t.Logf,
	})
	if err != nil {
		t.Fatalf("soak: %v (artifacts in %s)", err, dir)
	}
	t.Logf("soak: %s", res.Summary())
	t.Logf("soak samples (heap in use after GC, goroutines), every %s:\n%s", e.SampleEvery, chaostest.SampleTable(res.Samples))
	if res.Failed() {
		t.Errorf("soak FAILED; artifacts in %s\n%s", dir, res.Details())
		return
	}
	if !keep {
		os.RemoveAll(dir)
	}
}

func tail(path string, lines int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	ls := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(ls) > lines {
		ls = ls[len(ls)-lines:]
	}
	return strings.Join(ls, "\n")
}

// TestRecheck re-runs the history checkers on a saved run directory
// (CHAOS_RECHECK=/path/to/seed-N; skipped otherwise), for instance after a
// checker changed, and writes porcupine's visualisation there if the
// history is not linearizable.
func TestRecheck(t *testing.T) {
	dir := os.Getenv("CHAOS_RECHECK")
	if dir == "" {
		t.Skip("recheck: set CHAOS_RECHECK to a run directory")
	}
	f, err := os.Open(filepath.Join(dir, "history.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	ops, err := chaostest.ReadJSON(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	var faults []chaostest.Fault
	if b, err := os.ReadFile(filepath.Join(dir, "faults.json")); err == nil {
		if err := json.Unmarshal(b, &faults); err != nil {
			t.Fatal(err)
		}
	}
	lin := chaostest.CheckLinearizability(ops, 5*time.Minute)
	t.Logf("linearizability: %s (%d porcupine ops, %s)", lin.Result, lin.Ops, lin.Took)
	if lin.Result == porcupine.Illegal {
		path := filepath.Join(dir, "linearizability.html")
		if err := lin.WriteVisualization(path); err != nil {
			t.Fatal(err)
		}
		t.Errorf("not linearizable; visualisation in %s", path)
	}
	for _, l := range chaostest.CheckLostWrites(ops) {
		t.Errorf("lost write: %s", l)
	}
	for _, m := range chaostest.CheckMonotonicReads(ops) {
		t.Errorf("monotonic reads: %s", m)
	}
	stale, checked := chaostest.CheckStaleness(ops, chaostest.Isolations(faults))
	for _, s := range stale {
		t.Errorf("staleness: %s", s)
	}
	honest, dishonest := chaostest.RestartRegressions(ops)
	t.Logf("%d ops, %d faults, staleness checked on %d reads, %d understated, restart regressions %d/%d",
		len(ops), len(faults), checked, len(chaostest.UnderstatedStaleness(ops, time.Second)), len(honest), len(dishonest))
}
