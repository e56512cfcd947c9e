package chaostest

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"
)

// RunConfig describes one run: a fresh cluster, the workload for Duration
// with the nemesis injecting faults, then healing, final reads and checks.
type RunConfig struct {
	// Binary is the built beacon binary.
	Binary string
	// Dir receives the nodes' data dirs and logs, and the history and the
	// visualisation when a check fails.
	Dir      string
	Duration time.Duration
	Seed     uint64
	Nodes    int
	Workload WorkloadConfig
	Nemesis  NemesisConfig
	// NoFaults runs the workload without the nemesis (soak mode).
	NoFaults bool
	// SampleEvery, if set, samples each node's heap and goroutines through
	// /debug/pprof (the agents then run with --enable-pprof).
	SampleEvery time.Duration
	// LinearizabilityTimeout bounds the porcupine check (default 5m).
	LinearizabilityTimeout time.Duration
	LogLevel               string
	// Logf receives progress lines (nemesis actions); nil discards them.
	Logf func(format string, args ...any)
}

// Result is what one run found.
type Result struct {
	Seed     uint64
	Duration time.Duration
	// Ops counts workload operations by outcome (final reads excluded).
	Ops, OKs, Fails, Unknowns int
	Faults                    []Fault
	// FinalRecovery is the recovery time after the last heal; MaxRecovery
	// the longest after any heal.
	FinalRecovery, MaxRecovery time.Duration

	Linearizability  porcupine.CheckResult
	LinOps           int
	LinTook          time.Duration
	Lost             []LostWrite
	LeaderViolations []string
	Terms            int
	Monotonic        []MonotonicViolation
	Staleness        []StalenessViolation
	StalenessChecked int
	RestartHonest    int
	RestartDishonest []RestartRegression
	// Understated lists default reads whose Last-Contact understated their
	// staleness by more than a second.
	Understated []Understatement
	Crashes     []string
	// MaxWait is the longest any workload request waited for its answer
	// (acknowledged or failed); MaxWaitLive the longest for a request sent
	// to a node that was up and reachable throughout (not the one killed,
	// paused or black-holed), i.e. one that the leader-wait bound covers.
	MaxWait, MaxWaitLive time.Duration
	Problems             []string
	Samples              []Sample
	HistoryPath          string
	VisualizationPath    string
	lin                  LinearizabilityResult
}

// Violations counts every safety violation found: a non-linearizable
// history, each term with two leaders, each read that went back in time,
// each understated Last-Contact (on an isolated node, on a restarted node
// behind its earlier self, or by more than a second anywhere) and each agent
// crash. Lost writes are counted apart.
func (r *Result) Violations() int {
	v := len(r.LeaderViolations) + len(r.Monotonic) + len(r.Staleness) + len(r.Crashes) +
		len(r.Understated) + len(r.RestartDishonest)
	if r.Linearizability == porcupine.Illegal {
		v++
	}
	return v
}

// Failed reports whether the run found a violation, lost a write, or could
// not complete its checks.
func (r *Result) Failed() bool {
	return r.Violations() > 0 || len(r.Lost) > 0 || len(r.Problems) > 0 || r.Linearizability != porcupine.Ok
}

// Summary is the run's one-line report.
func (r *Result) Summary() string {
	kinds := map[FaultKind]int{}
	for _, f := range r.Faults {
		kinds[f.Kind]++
	}
	var fk []string
	for _, k := range AllFaults {
		if kinds[k] > 0 {
			fk = append(fk, fmt.Sprintf("%s:%d", k, kinds[k]))
		}
	}
	return fmt.Sprintf("seed=%d ops=%d (ok %d, fail %d) faults=%d [%s] unknown=%d violations=%d lost=%d max-recovery=%s final-recovery=%s max-wait=%s max-wait-live=%s | linearizable=%s (%d ops, %s) terms=%d staleness-checked=%d understated=%d restart-regressions=%d/%d problems=%d",
		r.Seed, r.Ops, r.OKs, r.Fails, len(r.Faults), strings.Join(fk, " "), r.Unknowns, r.Violations(), len(r.Lost),
		r.MaxRecovery.Round(time.Millisecond), r.FinalRecovery.Round(time.Millisecond),
		r.MaxWait.Round(time.Millisecond), r.MaxWaitLive.Round(time.Millisecond),
		r.Linearizability, r.LinOps, r.LinTook.Round(time.Millisecond), r.Terms, r.StalenessChecked,
		len(r.Understated), r.RestartHonest, len(r.RestartDishonest), len(r.Problems))
}

// Details describes every violation and problem, one per line.
func (r *Result) Details() string {
	var b strings.Builder
	if r.Linearizability != porcupine.Ok {
		fmt.Fprintf(&b, "linearizability: %s\n", r.Linearizability)
	}
	for _, l := range r.Lost {
		fmt.Fprintf(&b, "lost write: %s\n", l)
	}
	for _, l := range r.LeaderViolations {
		fmt.Fprintf(&b, "leaders: %s\n", l)
	}
	for _, m := range r.Monotonic {
		fmt.Fprintf(&b, "monotonic reads: %s\n", m)
	}
	for _, s := range r.Staleness {
		fmt.Fprintf(&b, "staleness: %s\n", s)
	}
	for _, c := range r.Crashes {
		fmt.Fprintf(&b, "crash: %s\n", c)
	}
	for _, p := range r.Problems {
		fmt.Fprintf(&b, "problem: %s\n", p)
	}
	for _, f := range r.Faults {
		fmt.Fprintf(&b, "fault: %s\n", f)
	}
	for i, u := range r.Understated {
		if i == 5 {
			fmt.Fprintf(&b, "understated staleness: ... %d more\n", len(r.Understated)-i)
			break
		}
		fmt.Fprintf(&b, "understated staleness: %s\n", u)
	}
	for _, d := range r.RestartDishonest {
		fmt.Fprintf(&b, "restart regression claiming to be current: %s read op %d returned index %d < %d before the restart, Last-Contact %s\n",
			d.Read.NodeName, d.Read.ID, d.Read.Index, d.Before, d.Read.LastContact)
	}
	if r.HistoryPath != "" {
		fmt.Fprintf(&b, "history: %s\n", r.HistoryPath)
	}
	if r.VisualizationPath != "" {
		fmt.Fprintf(&b, "visualisation: %s\n", r.VisualizationPath)
	}
	return b.String()
}

// Run performs one run and checks it. It returns an error only when the
// cluster could not be started; everything found afterwards is in Result.
func Run(ctx context.Context, cfg RunConfig) (*Result, error) {
	if cfg.LinearizabilityTimeout == 0 {
		cfg.LinearizabilityTimeout = 5 * time.Minute
	}
	logf := cfg.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	cfg.Workload.defaults()
	opts := Options{Nodes: cfg.Nodes, Binary: cfg.Binary, Dir: cfg.Dir, LogLevel: cfg.LogLevel}
	if cfg.SampleEvery > 0 {
		opts.ExtraArgs = append(opts.ExtraArgs, "--enable-pprof")
	}
	c, err := StartCluster(ctx, opts)
	if err != nil {
		return nil, err
	}
	defer c.Close()

	res := &Result{Seed: cfg.Seed, Duration: cfg.Duration}
	h := NewHistory()
	wctx, cancel := context.WithTimeout(ctx, cfg.Duration)
	defer cancel()

	var wg sync.WaitGroup
	poller := newStatusPoller(c)
	pctx, stopPoller := context.WithCancel(ctx)
	wg.Add(1)
	go func() {
		defer wg.Done()
		poller.run(pctx)
	}()
	var sampler *sampler
	if cfg.SampleEvery > 0 {
		sampler = newSampler(c, h, cfg.SampleEvery)
		wg.Add(1)
		go func() {
			defer wg.Done()
			sampler.run(pctx)
		}()
	}
	var nem *Nemesis
	nemDone := make(chan struct{})
	if cfg.NoFaults {
		close(nemDone)
	} else {
		nem = NewNemesis(c, h, cfg.Nemesis, cfg.Seed, logf)
		burst := NewWorkload(c, h, cfg.Workload, cfg.Seed)
		burst.process.Store(1 << 20) // its own process ids
		var seq int64
		var seqMu sync.Mutex
		nem.InFlight = func(ctx context.Context, node int) {
			seqMu.Lock()
			seq++
			n := seq
			seqMu.Unlock()
			p := int(burst.process.Add(1))
			burst.Do(ctx, p, -2, node, Put, Key(int(n)%cfg.Workload.Keys), fmt.Sprintf("burst-%d", n))
		}
		go func() {
			defer close(nemDone)
			nem.Run(wctx)
		}()
	}
	wl := NewWorkload(c, h, cfg.Workload, cfg.Seed)
	obsDone := make(chan struct{})
	go func() {
		defer close(obsDone)
		wl.Observe(wctx, 100*time.Millisecond)
	}()
	wl.Run(wctx)
	<-obsDone
	// The nemesis heals its last fault before it returns; afterwards make
	// sure nothing is left broken (it may have stopped early) and measure
	// recovery from there.
	<-nemDone
	if nem != nil {
		res.Faults = nem.Faults()
		if err := nem.Err(); err != nil {
			res.Problems = append(res.Problems, "nemesis: "+err.Error())
		}
	}
	healStart := time.Now()
	bg := context.WithoutCancel(ctx)
	if err := healAll(bg, c); err != nil {
		res.Problems = append(res.Problems, "final heal: "+err.Error())
	}
	rec, err := c.WaitRecovered(bg, healStart, 2*time.Minute)
	res.FinalRecovery = rec
	if err != nil {
		res.Problems = append(res.Problems, "final recovery: "+err.Error())
	}
	res.MaxRecovery = rec
	for _, f := range res.Faults {
		res.MaxRecovery = max(res.MaxRecovery, f.Recovery)
	}
	if err == nil {
		finalReads(bg, c, h, cfg.Workload.Keys, res)
	}
	stopPoller()
	wg.Wait()
	if sampler != nil {
		res.Samples = sampler.samples()
	}

	ops := h.Ops()
	res.MaxWait, res.MaxWaitLive = maxWaits(ops, res.Faults)
	check(ops, c, poller, res, cfg.LinearizabilityTimeout)
	// The history always goes to Dir (removed with it when a run passes
	// and artifacts are not kept); the visualisation only when needed.
	res.HistoryPath = filepath.Join(cfg.Dir, "history.jsonl")
	if err := WriteJSONFile(res.HistoryPath, ops); err != nil {
		res.Problems = append(res.Problems, "write history: "+err.Error())
	}
	if res.Linearizability == porcupine.Illegal {
		res.VisualizationPath = filepath.Join(cfg.Dir, "linearizability.html")
		if err := res.lin.WriteVisualization(res.VisualizationPath); err != nil {
			res.Problems = append(res.Problems, "write visualisation: "+err.Error())
		}
	}
	writeFaults(filepath.Join(cfg.Dir, "summary.txt"), res)
	if b, err := json.MarshalIndent(res.Faults, "", "  "); err == nil {
		_ = os.WriteFile(filepath.Join(cfg.Dir, "faults.json"), b, 0o644)
	}
	return res, nil
}

// maxWaits returns the longest wait of any workload request (observers and
// final reads excluded), and of those sent to a node no fault made
// unreachable while they ran.
func maxWaits(ops []Op, faults []Fault) (all, live time.Duration) {
	for _, op := range ops {
		if op.Process < 0 && op.Worker != -2 {
			continue
		}
		wait := op.Return - op.Call
		all = max(all, wait)
		reachable := true
		for _, f := range faults {
			if f.Node == op.Node && f.unreachable(op.Call, op.Return) {
				reachable = false
			}
		}
		if reachable {
			live = max(live, wait)
		}
	}
	return all, live
}
