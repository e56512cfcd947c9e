package chaostest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"
)

// healAll lifts every fault that may be left: partitions, paused and dead
// processes.
func healAll(ctx context.Context, c *Cluster) error {
	var errs []error
	if err := c.Net.HealAll(); err != nil {
		errs = append(errs, err)
	}
	for i, n := range c.Nodes {
		if n.Paused() {
			if err := n.Resume(); err != nil {
				errs = append(errs, err)
			}
		}
		if !n.Running() {
			if err := c.Restart(ctx, i); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// finalReads reads every key with ?consistent after the cluster recovered,
// each through a different node, retrying for up to 30 seconds per key.
func finalReads(ctx context.Context, c *Cluster, h *History, keys int, res *Result) {
	for k := 0; k < keys; k++ {
		deadline := time.Now().Add(30 * time.Second)
		for attempt := 0; ; attempt++ {
			node := (k + attempt) % len(c.Nodes)
			op := DoOp(ctx, c, h, 5*time.Second, -1000-k, -1, node, FinalRead, Key(k), "")
			if op.Outcome == OK {
				break
			}
			if time.Now().After(deadline) {
				res.Problems = append(res.Problems, fmt.Sprintf("final read of %s never succeeded: %s", Key(k), op.Err))
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// check runs every checker over the history and fills res.
func check(ops []Op, c *Cluster, poller *statusPoller, res *Result, linTimeout time.Duration) {
	for i := range ops {
		o := &ops[i]
		if o.Kind == FinalRead {
			continue
		}
		res.Ops++
		switch o.Outcome {
		case OK:
			res.OKs++
		case Fail:
			res.Fails++
		case Unknown:
			res.Unknowns++
		}
	}
	res.lin = CheckLinearizability(ops, linTimeout)
	res.Linearizability, res.LinOps, res.LinTook = res.lin.Result, res.lin.Ops, res.lin.Took
	if res.Linearizability == porcupine.Unknown {
		res.Problems = append(res.Problems, fmt.Sprintf("linearizability check gave up after %s", linTimeout))
	}
	res.Lost = CheckLostWrites(ops)
	res.Monotonic = CheckMonotonicReads(ops)
	honest, dishonest := RestartRegressions(ops)
	res.RestartHonest, res.RestartDishonest = len(honest), dishonest
	res.Staleness, res.StalenessChecked = CheckStaleness(ops, Isolations(res.Faults))
	res.Understated = UnderstatedStaleness(ops, time.Second)

	var claims []LeaderClaim
	for _, n := range c.Nodes {
		cl, err := ParseElections(n.LogPath(), n.Name)
		if err != nil {
			res.Problems = append(res.Problems, fmt.Sprintf("read %s log: %v", n.Name, err))
		}
		claims = append(claims, cl...)
	}
	if len(claims) == 0 {
		res.Problems = append(res.Problems, "no \"election won\" line in any agent log: cannot check leaders per term")
	}
	res.LeaderViolations = CheckLeaders(claims)
	res.LeaderViolations = append(res.LeaderViolations, poller.violations()...)
	terms := map[uint64]bool{}
	for _, cl := range claims {
		terms[cl.Term] = true
	}
	res.Terms = len(terms)
	res.Crashes = c.Unexpected()
}

func writeFaults(path string, res *Result) {
	_ = os.WriteFile(path, []byte(res.Summary()+"\n"+res.Details()), 0o644)
}

// statusPoller polls every node's GET /v1/cluster/status and records which
// node says it leads in which term. A claim counts once the same node
// reported it in two consecutive polls, which filters out the instant in
// which a stepping-down leader reports its old state with its new term.
type statusPoller struct {
	c  *Cluster
	mu sync.Mutex
	// confirmed[term][node] = first time seen
	confirmed map[uint64]map[string]time.Time
	last      map[string]uint64 // node -> term of its previous Leader answer (0: not leader)
}

func newStatusPoller(c *Cluster) *statusPoller {
	return &statusPoller{c: c, confirmed: map[uint64]map[string]time.Time{}, last: map[string]uint64{}}
}

func (p *statusPoller) run(ctx context.Context) {
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		sts := p.c.Statuses(ctx, 500*time.Millisecond)
		p.mu.Lock()
		for i, st := range sts {
			name := p.c.Nodes[i].Name
			if st == nil || st.State != "Leader" {
				p.last[name] = 0
				continue
			}
			if p.last[name] == st.Term {
				if p.confirmed[st.Term] == nil {
					p.confirmed[st.Term] = map[string]time.Time{}
				}
				if _, ok := p.confirmed[st.Term][name]; !ok {
					p.confirmed[st.Term][name] = time.Now()
				}
			}
			p.last[name] = st.Term
		}
		p.mu.Unlock()
	}
}

func (p *statusPoller) violations() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for term, nodes := range p.confirmed {
		if len(nodes) > 1 {
			out = append(out, fmt.Sprintf("status endpoints: term %d claimed by %v", term, sortedKeys(nodes)))
		}
	}
	return out
}

// Sample is one node's heap and goroutine count at one time.
type Sample struct {
	At   time.Duration
	Node string
	// HeapInuse is the in-use heap after a forced GC, in bytes.
	HeapInuse  uint64
	HeapAlloc  uint64
	Goroutines int
	Err        string
}

// sampler reads /debug/pprof/heap?gc=1&debug=1 and
// /debug/pprof/goroutine?debug=1 from every node periodically.
type sampler struct {
	c     *Cluster
	h     *History
	every time.Duration
	mu    sync.Mutex
	out   []Sample
}

func newSampler(c *Cluster, h *History, every time.Duration) *sampler {
	return &sampler{c: c, h: h, every: every}
}

func (s *sampler) run(ctx context.Context) {
	t := time.NewTicker(s.every)
	defer t.Stop()
	s.sampleAll(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.sampleAll(ctx)
		}
	}
}

func (s *sampler) sampleAll(ctx context.Context) {
	for _, n := range s.c.Nodes {
		if !n.Running() || n.Paused() {
			continue
		}
		smp, err := SampleNode(ctx, s.c.HTTPClient(), n.HTTPAddr())
		smp.At, smp.Node = s.h.Now(), n.Name
		if err != nil {
			smp.Err = err.Error()
		}
		s.mu.Lock()
		s.out = append(s.out, smp)
		s.mu.Unlock()
	}
}

func (s *sampler) samples() []Sample {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Sample(nil), s.out...)
}

// SampleNode reads one agent's heap (after a GC) and goroutine count from
// its pprof endpoints (the agent must run with --enable-pprof).
func SampleNode(ctx context.Context, hc *http.Client, addr string) (Sample, error) {
	var s Sample
	body, err := get(ctx, hc, "http://"+addr+"/debug/pprof/heap?gc=1&debug=1")
	if err != nil {
		return s, err
	}
	sc := bufio.NewScanner(strings.NewReader(body))
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, "# HeapInuse = "); ok {
			s.HeapInuse, _ = strconv.ParseUint(v, 10, 64)
		}
		if v, ok := strings.CutPrefix(line, "# HeapAlloc = "); ok {
			s.HeapAlloc, _ = strconv.ParseUint(v, 10, 64)
		}
	}
	body, err = get(ctx, hc, "http://"+addr+"/debug/pprof/goroutine?debug=1")
	if err != nil {
		return s, err
	}
	first, _, _ := strings.Cut(body, "\n")
	if v, ok := strings.CutPrefix(first, "goroutine profile: total "); ok {
		s.Goroutines, _ = strconv.Atoi(strings.TrimSpace(v))
	}
	if s.HeapInuse == 0 || s.Goroutines == 0 {
		return s, fmt.Errorf("chaostest: cannot parse pprof output of %s", addr)
	}
	return s, nil
}

func get(ctx context.Context, hc *http.Client, url string) (string, error) {
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("chaostest: GET %s: %s", url, resp.Status)
	}
	return string(b), nil
}
