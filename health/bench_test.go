package health_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/beaconhq/beacon/agent/agenttest"
	"github.com/beaconhq/beacon/api/client"
)

// untilGone measures, on every running node at once, how long after start
// healthy=true discovery of service stops returning id. It polls each node
// every 2ms and returns one duration per node.
func untilGone(b *testing.B, c *agenttest.Cluster, service, id string, start time.Time) []time.Duration {
	nodes := running(c)
	out := make([]time.Duration, len(nodes))
	var wg sync.WaitGroup
	for k, i := range nodes {
		wg.Add(1)
		go func(k, i int) {
			defer wg.Done()
			deadline := time.Now().Add(60 * time.Second)
			for time.Now().Before(deadline) {
				insts, _, err := c.Client(i).Instances(context.Background(), service, &client.QueryOptions{Healthy: true})
				if err == nil {
					found := false
					for _, in := range insts {
						found = found || in.ID == id
					}
					if !found {
						out[k] = time.Since(start)
						return
					}
				}
				time.Sleep(2 * time.Millisecond)
			}
			out[k] = -1
		}(k, i)
	}
	wg.Wait()
	for _, d := range out {
		if d < 0 {
			b.Fatalf("%s/%s still healthy on some node after 60s", service, id)
		}
	}
	return out
}

func report(b *testing.B, name string, ds []time.Duration) {
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	var sum time.Duration
	for _, d := range ds {
		sum += d
	}
	b.ReportMetric(float64(sum.Milliseconds())/float64(len(ds)), name+"-mean-ms")
	b.ReportMetric(float64(ds[len(ds)-1].Milliseconds()), name+"-max-ms")
}

// BenchmarkTargetDeathToUnhealthyEverywhere measures the time from a
// service being killed (its HTTP server closed) to healthy=true discovery
// no longer returning it, on every node of a 3-node cluster. The check has
// interval 1s and failures_before_critical 1 (the defaults but the
// interval); the kill comes at a random phase of the interval.
//
//	go test ./health -run '^$' -bench TargetDeath -benchtime 10x
func BenchmarkTargetDeathToUnhealthyEverywhere(b *testing.B) {
	c := agenttest.New(b, 3)
	c.WaitForVoters(3)
	var all []time.Duration
	for n := 0; n < b.N; n++ {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
		register(b, c.Client(n%3), "victim", "v1", &client.Registration{Address: "127.0.0.1", Port: 80,
			Checks: []client.CheckDefinition{{Name: "http", HTTP: srv.URL + "/", Interval: client.Duration(time.Second)}}})
		waitInstance(b, c, 30*time.Second, "victim", "v1", "passing", hasStatus("passing"))
		// Kill at a random phase of the check's interval, as a real
		// failure would (the mean is then about half an interval).
		time.Sleep(rand.N(time.Second))
		start := time.Now()
		srv.Close()
		all = append(all, untilGone(b, c, "victim", "v1", start)...)
	}
	report(b, "unhealthy", all)
}

// BenchmarkNodeKill measures, for a killed follower and a killed leader of
// a 3-node cluster (default gossip tuning: probe 500ms, timeout 250ms,
// suspicion multiplier 2): when a survivor's gossip reports it failed, when
// every check it owned is assigned to a live node, when an instance
// registered with node = the killed node leaves healthy=true discovery on
// every survivor, and when each moved check (interval 1s) is probed by its
// new owner.
//
//	go test ./health -run '^$' -bench NodeKill -benchtime 5x
func BenchmarkNodeKill(b *testing.B) {
	for _, which := range []string{"follower", "leader"} {
		b.Run(which, func(b *testing.B) {
			c := agenttest.New(b, 3)
			c.WaitForVoters(3)
			tg := newTarget(b)
			for k := 0; k < 12; k++ {
				id := fmt.Sprintf("w%d", k)
				register(b, c.Client(0), "web", id, &client.Registration{Address: "127.0.0.1", Port: 8000 + k,
					Checks: []client.CheckDefinition{{Name: "http", HTTP: tg.url("/" + id), Interval: client.Duration(time.Second)}}})
			}
			var gossip, reassigned, unhealthy, probed []time.Duration
			for n := 0; n < b.N; n++ {
				victim := c.Leader()
				if which == "follower" {
					victim = (victim + 1) % 3
				}
				name := c.Node(victim).Name
				register(b, c.Client((victim+1)%3), "db", "db-1", &client.Registration{Address: "127.0.0.1", Port: 5432, Node: name})
				waitInstance(b, c, 60*time.Second, "db", "db-1", "passing", func(i *client.Instance) bool { return i.Status == "passing" && !i.NodeFailed })
				var moved []string
				agenttest.Eventually(b, 60*time.Second, func() bool {
					moved = moved[:0]
					for _, ch := range checksOf(b, c, (victim+1)%3, client.CheckFilter{Service: "web"}) {
						if ch.Owner == name {
							moved = append(moved, ch.Instance)
						}
					}
					return len(moved) > 0
				}, "the victim to own checks")

				start := time.Now()
				c.Stop(victim)
				survivor := (victim + 1) % 3
				var wg sync.WaitGroup
				wg.Add(3)
				go func() {
					defer wg.Done()
					agenttest.Eventually(b, 60*time.Second, func() bool {
						ms, err := c.Client(survivor).Members(context.Background())
						if err != nil {
							return false
						}
						for _, m := range ms {
							if m.Name == name {
								return m.Status == "failed"
							}
						}
						return false
					}, "gossip to report the victim failed")
					gossip = append(gossip, time.Since(start))
				}()
				go func() {
					defer wg.Done()
					agenttest.Eventually(b, 60*time.Second, func() bool {
						cs, _, err := c.Client(survivor).Checks(context.Background(), client.CheckFilter{Service: "web"}, nil)
						if err != nil {
							return false
						}
						for _, ch := range cs {
							if ch.Owner == name {
								return false
							}
						}
						return true
					}, "the victim's checks reassigned")
					reassigned = append(reassigned, time.Since(start))
					agenttest.Eventually(b, 60*time.Second, func() bool {
						for _, id := range moved {
							if len(tg.since("/"+id, start.Add(reassigned[len(reassigned)-1]))) == 0 {
								return false
							}
						}
						return true
					}, "the moved checks probed by their new owners")
					probed = append(probed, time.Since(start))
				}()
				go func() {
					defer wg.Done()
					unhealthy = append(unhealthy, untilGone(b, c, "db", "db-1", start)...)
				}()
				wg.Wait()
				c.Restart(victim)
				c.WaitForVoters(3)
				c.WaitForLeader()
			}
			report(b, "gossip-failed", gossip)
			report(b, "reassigned", reassigned)
			report(b, "node-instance-unhealthy", unhealthy)
			report(b, "moved-check-probed", probed)
		})
	}
}
