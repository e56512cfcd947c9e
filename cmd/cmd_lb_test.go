package cmd

import (
	"bytes"
	"context"
	"slices"
	"testing"
	"time"

	"github.com/beaconhq/beacon/lb"
	"github.com/spf13/cobra"
)

func TestLBCommandParsesItsFlags(t *testing.T) {
	cases := []struct {
		name  string
		args  []string
		env   map[string]string
		check func(t *testing.T, o *lbOptions)
	}{
		{"defaults follow --addr and listen on :8080", []string{"lb"}, map[string]string{"BEACON_ADDR": "10.0.0.1:8750,10.0.0.2:8750"},
			func(t *testing.T, o *lbOptions) {
				if !slices.Equal(o.cfg.Registry, []string{"10.0.0.1:8750", "10.0.0.2:8750"}) || o.cfg.Listen != ":8080" ||
					o.cfg.LB.Strategy != lb.RoundRobin || !slices.Equal(o.cfg.LB.Domains, []string{"service.beacon", "localhost"}) {
					t.Fatalf("%+v", o.cfg)
				}
			}},
		{"strategies and hash keys are set by default and per service",
			[]string{"lb", "--registry", "a:1", "--registry", "b:2,c:3", "--strategy", "least-requests", "--strategy", "cart=hash",
				"--hash-key", "cart=cookie:session", "--domain", "Svc.Example."},
			nil, func(t *testing.T, o *lbOptions) {
				c := o.cfg.LB
				if !slices.Equal(o.cfg.Registry, []string{"a:1", "b:2", "c:3"}) || c.Strategy != lb.LeastRequests ||
					c.Strategies["cart"] != lb.Hash || c.HashKeys["cart"] != (lb.HashKey{Source: "cookie", Name: "session"}) ||
					!slices.Equal(c.Domains, []string{"svc.example"}) {
					t.Fatalf("%+v %+v", o.cfg, c)
				}
			}},
		{"zones, panic mode, slow start and timeouts reach the balancer",
			[]string{"lb", "--zone", "eu-1", "--zone-min-healthy", "2", "--panic-threshold", "0.3", "--slow-start", "20s",
				"--dial-timeout", "1s", "--request-timeout", "5s", "--fallback-warning", "--service", "web,api", "--eject-after", "0"},
			nil, func(t *testing.T, o *lbOptions) {
				c := o.cfg.LB
				if c.Zone != "eu-1" || c.ZoneMinHealthy != 2 || c.PanicThreshold != 0.3 || c.SlowStart != 20*time.Second ||
					c.DialTimeout != time.Second || c.RequestTimeout != 5*time.Second || !c.FallbackToWarning ||
					!slices.Equal(c.Services, []string{"web", "api"}) || c.EjectAfter != 0 {
					t.Fatalf("%+v", c)
				}
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var got *lbOptions
			root := lbRoot(tc.env, func(_ context.Context, o *lbOptions) error { got = o; return nil })
			root.SetArgs(tc.args)
			if err := root.ExecuteContext(context.Background()); err != nil {
				t.Fatal(err)
			}
			tc.check(t, got)
		})
	}
	for _, bad := range [][]string{
		{"lb", "--strategy", "fastest"},
		{"lb", "--hash-key", "body"},
		{"lb", "--panic-threshold", "2"},
		{"lb", "--max-retries", "-1"},
	} {
		t.Run("rejects "+bad[1]+" "+bad[2], func(t *testing.T) {
			root := lbRoot(nil, func(context.Context, *lbOptions) error {
				t.Fatal("bad flags reached the command")
				return nil
			})
			root.SetArgs(bad)
			err := root.ExecuteContext(context.Background())
			var ue usageError
			if err == nil || !asUsage(err, &ue) {
				t.Fatalf("got %v, want a usage error", err)
			}
		})
	}
}

// lbRoot is the command tree with `lb` running runF instead of a balancer.
func lbRoot(env map[string]string, runF func(context.Context, *lbOptions) error) *cobra.Command {
	f := &Factory{Out: &bytes.Buffer{}, Err: &bytes.Buffer{}, Getenv: func(k string) string { return env[k] }}
	root := NewRootCmd(f)
	for _, c := range root.Commands() {
		if c.Name() == "lb" {
			root.RemoveCommand(c)
		}
	}
	root.AddCommand(newLBCmd(f, runF))
	return root
}

func asUsage(err error, ue *usageError) bool {
	u, ok := err.(usageError)
	if ok {
		*ue = u
	}
	return ok
}
