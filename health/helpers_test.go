package health_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/beaconhq/beacon/agent/agenttest"
	"github.com/beaconhq/beacon/api/client"
)

// target is a real HTTP service on loopback whose health the test controls.
// It records every probe (path, time, whether it was answered healthy).
type target struct {
	srv *httptest.Server
	mu  sync.Mutex
	// sick paths answer 500; toggle paths alternate 500 and 200.
	sick   map[string]bool
	toggle map[string]bool
	probes map[string][]probe
}

type probe struct {
	at      time.Time
	healthy bool
}

func newTarget(t testing.TB) *target {
	tg := &target{sick: map[string]bool{}, toggle: map[string]bool{}, probes: map[string][]probe{}}
	tg.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tg.mu.Lock()
		ps := tg.probes[r.URL.Path]
		healthy := !tg.sick[r.URL.Path]
		if tg.toggle[r.URL.Path] {
			healthy = len(ps)%2 == 0
		}
		tg.probes[r.URL.Path] = append(ps, probe{at: time.Now(), healthy: healthy})
		n := len(ps) + 1
		tg.mu.Unlock()
		if !healthy {
			w.WriteHeader(http.StatusInternalServerError)
		}
		fmt.Fprintf(w, "probe %d", n)
	}))
	t.Cleanup(tg.srv.Close)
	return tg
}

func (tg *target) url(path string) string { return tg.srv.URL + path }

// setSick makes path answer 500 (or 200 again) from the next probe on and
// returns the moment of the switch.
func (tg *target) setSick(path string, sick bool) time.Time {
	tg.mu.Lock()
	defer tg.mu.Unlock()
	tg.sick[path] = sick
	return time.Now()
}

func (tg *target) setToggle(path string, on bool) {
	tg.mu.Lock()
	tg.toggle[path] = on
	tg.mu.Unlock()
}

// count returns the probes of path in [from, to] with the given health.
func (tg *target) count(path string, from, to time.Time, healthy bool) int {
	tg.mu.Lock()
	defer tg.mu.Unlock()
	n := 0
	for _, p := range tg.probes[path] {
		if !p.at.Before(from) && !p.at.After(to) && p.healthy == healthy {
			n++
		}
	}
	return n
}

func (tg *target) since(path string, from time.Time) []probe {
	tg.mu.Lock()
	defer tg.mu.Unlock()
	var out []probe
	for _, p := range tg.probes[path] {
		if !p.at.Before(from) {
			out = append(out, p)
		}
	}
	return out
}

func register(t testing.TB, cl *client.Client, service, id string, r *client.Registration) {
	t.Helper()
	agenttest.Register(t, cl, service, id, r)
}

// running returns the indexes of the running nodes.
func running(c *agenttest.Cluster) []int {
	var out []int
	for i, n := range c.Nodes() {
		if n.Running() {
			out = append(out, i)
		}
	}
	return out
}

// waitInstance waits until cond holds for the instance as every running
// node sees it (a local read on each).
func waitInstance(t testing.TB, c *agenttest.Cluster, timeout time.Duration, service, id string, what string, cond func(*client.Instance) bool) {
	t.Helper()
	agenttest.Eventually(t, timeout, func() bool {
		for _, i := range running(c) {
			inst, _, err := c.Client(i).Instance(context.Background(), service, id, nil)
			if err != nil || !cond(inst) {
				return false
			}
		}
		return true
	}, fmt.Sprintf("%s/%s %s on every node", service, id, what))
}

func hasStatus(s string) func(*client.Instance) bool {
	return func(i *client.Instance) bool { return i.Status == s }
}

// healthyIDs returns the IDs discovery with healthy=true returns on node i.
func healthyIDs(t testing.TB, c *agenttest.Cluster, i int, service string) map[string]bool {
	insts, _, err := c.Client(i).Instances(context.Background(), service, &client.QueryOptions{Healthy: true})
	if err != nil {
		return nil
	}
	out := map[string]bool{}
	for _, in := range insts {
		out[in.ID] = true
	}
	return out
}

// transitionTo returns the time of the last transition of check to status.
func transitionTo(inst *client.Instance, check, status string) (time.Time, bool) {
	for k := len(inst.Transitions) - 1; k >= 0; k-- {
		tr := inst.Transitions[k]
		if tr.Check == check && tr.To == status {
			return tr.Time, true
		}
	}
	return time.Time{}, false
}

// checksOf returns the checks of service as node i sees them.
func checksOf(t testing.TB, c *agenttest.Cluster, i int, f client.CheckFilter) []client.Check {
	t.Helper()
	cs, _, err := c.Client(i).Checks(context.Background(), f, nil)
	if err != nil {
		t.Fatalf("checks on node %d: %v", i, err)
	}
	return cs
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func asClientError(err error, target **client.Error) bool { return errors.As(err, target) }
