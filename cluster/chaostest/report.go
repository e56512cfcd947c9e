package chaostest

import (
	"fmt"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/anishathalye/porcupine"
)

// Aggregate sums the results of several runs.
type Aggregate struct {
	Runs, FailedRuns          int
	Ops, OKs, Fails, Unknowns int
	Faults                    map[FaultKind]int
	Violations, Lost          int
	NotLinearizable           int
	Recoveries                []time.Duration
	MaxRecovery               time.Duration
	StalenessChecked          int
	RestartHonest             int
	RestartDishonest          int
	Understated               int
	LinOps                    int
	LinTook                   time.Duration
	MaxWait, MaxWaitLive      time.Duration
}

// Add folds one run in.
func (a *Aggregate) Add(r *Result) {
	if a.Faults == nil {
		a.Faults = map[FaultKind]int{}
	}
	a.Runs++
	if r.Failed() {
		a.FailedRuns++
	}
	a.Ops += r.Ops
	a.OKs += r.OKs
	a.Fails += r.Fails
	a.Unknowns += r.Unknowns
	for _, f := range r.Faults {
		a.Faults[f.Kind]++
		a.Recoveries = append(a.Recoveries, f.Recovery)
	}
	a.Violations += r.Violations()
	a.Lost += len(r.Lost)
	if r.Linearizability == porcupine.Illegal {
		a.NotLinearizable++
	}
	a.MaxRecovery = max(a.MaxRecovery, r.MaxRecovery)
	a.StalenessChecked += r.StalenessChecked
	a.RestartHonest += r.RestartHonest
	a.RestartDishonest += len(r.RestartDishonest)
	a.Understated += len(r.Understated)
	a.LinOps += r.LinOps
	a.LinTook = max(a.LinTook, r.LinTook)
	a.MaxWait = max(a.MaxWait, r.MaxWait)
	a.MaxWaitLive = max(a.MaxWaitLive, r.MaxWaitLive)
}

// Summary is the aggregate's report: totals, faults by kind and the
// distribution of recovery times.
func (a *Aggregate) Summary() string {
	total := 0
	var fk []string
	for _, k := range AllFaults {
		total += a.Faults[k]
		if a.Faults[k] > 0 {
			fk = append(fk, fmt.Sprintf("%s:%d", k, a.Faults[k]))
		}
	}
	rec := append([]time.Duration(nil), a.Recoveries...)
	sort.Slice(rec, func(i, j int) bool { return rec[i] < rec[j] })
	pct := func(p float64) time.Duration {
		if len(rec) == 0 {
			return 0
		}
		return rec[min(len(rec)-1, int(p*float64(len(rec))))].Round(time.Millisecond)
	}
	return fmt.Sprintf("TOTAL runs=%d failed=%d ops=%d (ok %d, fail %d) faults=%d [%s] unknown=%d violations=%d not-linearizable=%d lost=%d recovery p50=%s p95=%s max=%s max-wait=%s max-wait-live=%s staleness-checked=%d understated=%d restart-regressions=%d/%d porcupine-ops=%d slowest-check=%s",
		a.Runs, a.FailedRuns, a.Ops, a.OKs, a.Fails, total, strings.Join(fk, " "), a.Unknowns, a.Violations, a.NotLinearizable, a.Lost,
		pct(0.5), pct(0.95), a.MaxRecovery.Round(time.Millisecond), a.MaxWait.Round(time.Millisecond), a.MaxWaitLive.Round(time.Millisecond), a.StalenessChecked, a.Understated, a.RestartHonest, a.RestartDishonest,
		a.LinOps, a.LinTook.Round(time.Millisecond))
}

// SampleTable formats soak samples as a table, one row per sampling round
// and a column per node, then the growth from the first to the last sample.
func SampleTable(samples []Sample) string {
	nodes := map[string]bool{}
	for _, s := range samples {
		nodes[s.Node] = true
	}
	names := sortedKeys(nodes)
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprint(tw, "at")
	for _, n := range names {
		fmt.Fprintf(tw, "\t%s heap\t%s goroutines", n, n)
	}
	fmt.Fprintln(tw)
	rounds := map[time.Duration]map[string]Sample{}
	var ats []time.Duration
	for _, s := range samples {
		at := s.At.Truncate(time.Second)
		if rounds[at] == nil {
			rounds[at] = map[string]Sample{}
			ats = append(ats, at)
		}
		rounds[at][s.Node] = s
	}
	sort.Slice(ats, func(i, j int) bool { return ats[i] < ats[j] })
	first, last := map[string]Sample{}, map[string]Sample{}
	for _, at := range ats {
		fmt.Fprintf(tw, "%s", at)
		for _, n := range names {
			s, ok := rounds[at][n]
			if !ok || s.Err != "" {
				fmt.Fprint(tw, "\t-\t-")
				continue
			}
			if _, ok := first[n]; !ok {
				first[n] = s
			}
			last[n] = s
			fmt.Fprintf(tw, "\t%.1f MiB\t%d", float64(s.HeapInuse)/(1<<20), s.Goroutines)
		}
		fmt.Fprintln(tw)
	}
	fmt.Fprint(tw, "growth")
	for _, n := range names {
		f, l := first[n], last[n]
		fmt.Fprintf(tw, "\t%+.1f MiB\t%+d", (float64(l.HeapInuse)-float64(f.HeapInuse))/(1<<20), l.Goroutines-f.Goroutines)
	}
	fmt.Fprintln(tw)
	tw.Flush()
	return b.String()
}
