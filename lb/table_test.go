package lb

import (
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

func be(id string, status Health, zone string) Backend {
	b := Backend{ID: id, Address: "10.0.0.1", Port: 80, Weight: 1, Status: status}
	if zone != "" {
		b.Meta = map[string]string{MetaZone: zone}
	}
	return b
}

func build(cfg Config, bs ...Backend) *Table {
	states := map[string]*instanceState{}
	return buildTable("web", &InstanceList{Index: 7, Backends: bs}, &cfg, func(id string) *instanceState {
		if states[id] == nil {
			states[id] = &instanceState{}
		}
		return states[id]
	}, new(atomic.Uint64), time.Unix(1000, 0))
}

func TestTableChoosesWhomToRoute(t *testing.T) {
	draining := be("d", Passing, "a")
	draining.Draining = true
	maint := be("m", Passing, "a")
	maint.Maintenance = true
	cases := []struct {
		name   string
		mutate func(*Config)
		in     []Backend
		mode   string
		routed []string
	}{
		{"only passing instances are routed", nil,
			[]Backend{be("p1", Passing, ""), be("w", Warning, ""), be("c", Critical, ""), be("p2", Passing, "")}, ModeNormal, []string{"p1", "p2"}},
		{"draining and maintenance instances get no new requests", nil,
			[]Backend{be("p", Passing, ""), draining, maint}, ModeNormal, []string{"p"}},
		{"no passing instance routes nowhere", nil,
			[]Backend{be("w", Warning, ""), be("c", Critical, "")}, ModeUnavailable, []string{}},
		{"no passing instance falls back to warning ones when configured", func(c *Config) { c.FallbackToWarning = true },
			[]Backend{be("w", Warning, ""), be("c", Critical, "")}, ModeWarning, []string{"w"}},
		{"the balancer's zone is preferred", func(c *Config) { c.Zone = "a" },
			[]Backend{be("a1", Passing, "a"), be("b1", Passing, "b"), be("a2", Passing, "a")}, ModeZone, []string{"a1", "a2"}},
		{"traffic spills over when too few are passing in the zone", func(c *Config) { c.Zone, c.ZoneMinHealthy = "a", 2 },
			[]Backend{be("a1", Passing, "a"), be("a2", Critical, "a"), be("b1", Passing, "b")}, ModeSpillover, []string{"a1", "b1"}},
		{"traffic spills over when the zone has no instance", func(c *Config) { c.Zone = "c" },
			[]Backend{be("a1", Passing, "a"), be("b1", Passing, "b")}, ModeSpillover, []string{"a1", "b1"}},
		{"panic mode routes to every available instance when too few pass", func(c *Config) { c.PanicThreshold = 0.5 },
			[]Backend{be("p", Passing, ""), be("c1", Critical, ""), be("c2", Critical, ""), draining}, ModePanic, []string{"c1", "c2", "p"}},
		{"panic mode stays off at the threshold", func(c *Config) { c.PanicThreshold = 0.5 },
			[]Backend{be("p1", Passing, ""), be("p2", Passing, ""), be("c1", Critical, ""), be("c2", Critical, "")}, ModeNormal, []string{"p1", "p2"}},
		{"panic mode needs a survivor: none passing is a 503", func(c *Config) { c.PanicThreshold = 0.5 },
			[]Backend{be("c1", Critical, ""), be("c2", Critical, "")}, ModeUnavailable, []string{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			if tc.mutate != nil {
				tc.mutate(&cfg)
			}
			tbl := build(cfg, tc.in...)
			if tbl.Mode() != tc.mode || !slices.Equal(tbl.Routed(), tc.routed) {
				t.Fatalf("mode %s routed %v, want %s %v", tbl.Mode(), tbl.Routed(), tc.mode, tc.routed)
			}
		})
	}
}

func TestMetricsTurnIntoEffectiveWeights(t *testing.T) {
	cases := []struct {
		name    string
		metrics map[string]float64
		want    float64
	}{
		{"no metrics keep the weight", nil, 1},
		{"capacity multiplies", map[string]float64{MetricCapacity: 2}, 2},
		{"capacity is clamped below", map[string]float64{MetricCapacity: 0}, 0.05},
		{"load takes its share away", map[string]float64{MetricLoad: 0.75}, 0.25},
		{"a saturated instance keeps a trickle", map[string]float64{MetricLoad: 3}, 0.05},
		{"negative load counts as idle", map[string]float64{MetricLoad: -1}, 1},
		{"both multiply", map[string]float64{MetricCapacity: 2, MetricLoad: 0.5}, 1},
		{"other metrics are ignored", map[string]float64{"queue": 12}, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := MetricFactor(tc.metrics); got != tc.want {
				t.Fatalf("factor %v, want %v", got, tc.want)
			}
		})
	}
	t.Run("the weighted strategy follows the effective weights", func(t *testing.T) {
		a, b := be("a", Passing, ""), be("b", Passing, "")
		a.Weight, b.Weight = 4, 4
		b.Metrics = map[string]float64{MetricLoad: 0.75}
		cfg := DefaultConfig()
		cfg.Strategy = Weighted
		tbl := build(cfg, a, b)
		got := map[string]int{}
		for i := 0; i < 500; i++ {
			_, e := tbl.pick(Key{}, nil, 0)
			got[e.ID]++
		}
		if got["a"] != 400 || got["b"] != 100 {
			t.Fatalf("picks %v, want a:400 b:100", got)
		}
	})
}

func TestSlowStartRampsAnInstanceThatJustBecamePassing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cat := newMemCatalog()
		cfg := DefaultConfig()
		cfg.Strategy, cfg.SlowStart, cfg.SlowStartMinShare = Weighted, 10*time.Second, 0.1
		b, err := New(cfg, cat)
		if err != nil {
			t.Fatal(err)
		}
		old, fresh := be("old", Passing, ""), be("new", Passing, "")
		old.HealthySince = time.Now().Add(-time.Hour)
		fresh.HealthySince = time.Now()
		idx := cat.Set("web", old, fresh)
		if err := b.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		defer b.Shutdown(context.Background())
		if err := b.WaitForIndex(context.Background(), "web", idx); err != nil {
			t.Fatal(err)
		}
		share := func() float64 {
			tbl := b.Table("web")
			n := 0
			for i := 0; i < 1000; i++ {
				if _, e := tbl.pick(Key{}, nil, 0); e.ID == "new" {
					n++
				}
			}
			return float64(n) / 1000
		}
		for _, step := range []struct {
			at   time.Duration
			want float64 // the new instance's weight relative to the old one's 1
		}{{0, 0.1}, {2500 * time.Millisecond, 0.25}, {5 * time.Second, 0.5}, {10 * time.Second, 1}, {time.Minute, 1}} {
			time.Sleep(step.at - time.Since(fresh.HealthySince))
			synctest.Wait()
			want := step.want / (1 + step.want)
			if got := share(); got < want-0.01 || got > want+0.01 {
				t.Fatalf("at %v the new instance gets %.3f of the traffic, want %.3f", step.at, got, want)
			}
		}
		if at := b.Table("web").rebuildAt; !at.IsZero() {
			t.Fatalf("ramp over but a rebuild is still planned at %v", at)
		}
	})
}

func TestPanicModeEntersAndLeavesByItself(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cat := newMemCatalog()
		cfg := DefaultConfig()
		cfg.PanicThreshold = 0.5
		b, err := New(cfg, cat)
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		defer b.Shutdown(context.Background())
		var bs []Backend
		for i := 0; i < 4; i++ {
			bs = append(bs, be(fmt.Sprint("i", i), Passing, ""))
		}
		ctx := context.Background()
		steps := []struct {
			critical int
			mode     string
			routed   int
		}{{0, ModeNormal, 4}, {2, ModeNormal, 2}, {3, ModePanic, 4}, {1, ModeNormal, 3}}
		for _, s := range steps {
			for i := range bs {
				bs[i].Status = Passing
				if i < s.critical {
					bs[i].Status = Critical
				}
			}
			idx := cat.Set("web", bs...)
			if err := b.WaitForIndex(ctx, "web", idx); err != nil {
				t.Fatal(err)
			}
			st := b.Status().Services[0]
			if st.Mode != s.mode || st.Routed != s.routed || st.Panic != (s.mode == ModePanic) {
				t.Fatalf("with %d of 4 critical: mode %s routed %d panic %v, want %s %d", s.critical, st.Mode, st.Routed, st.Panic, s.mode, s.routed)
			}
		}
	})
}
