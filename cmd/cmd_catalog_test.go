package cmd_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/beaconhq/beacon/agent/agenttest"
	"github.com/beaconhq/beacon/api/client"
	"github.com/beaconhq/beacon/cmd"
)

// syncBuffer is a bytes.Buffer safe to read while a command writes to it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// beacon runs the CLI with args against addr and returns stdout and stderr.
func beacon(ctx context.Context, addr string, args ...string) (string, string, error) {
	var out, errOut syncBuffer
	return run(ctx, &out, &errOut, addr, args...)
}

func run(ctx context.Context, out, errOut *syncBuffer, addr string, args ...string) (string, string, error) {
	f := &cmd.Factory{Out: out, Err: errOut, Getenv: func(string) string { return "" }}
	root := cmd.NewRootCmd(f)
	root.SetArgs(append([]string{"--addr", addr}, args...))
	err := root.ExecuteContext(ctx)
	return out.String(), errOut.String(), err
}

func TestCLIDiscoverAndServices(t *testing.T) {
	c := agenttest.New(t, 3)
	c.WaitForVoters(3)
	ctx := context.Background()
	for _, r := range []struct {
		svc, id string
		reg     client.Registration
	}{
		{"shop", "shop-1", client.Registration{Address: "10.0.0.1", Port: 80, Tags: []string{"v1"}, Meta: map[string]string{"zone": "a"}, Version: "1.2.0"}},
		{"shop", "shop-2", client.Registration{Address: "10.0.0.2", Port: 80, Tags: []string{"v2"}, Meta: map[string]string{"zone": "b"}, Version: "2.1.0"}},
		{"shop", "shop-3", client.Registration{Address: "10.0.0.3", Port: 80, Tags: []string{"v2"}, Version: "2.2.0", Checks: ttl("critical")}},
		{"ship", "ship-1", client.Registration{Address: "10.0.1.1", Port: 80, Tags: []string{"v2"}}},
		{"shelf", "shelf-1", client.Registration{Address: "10.0.1.2", Port: 80}},
		{"other", "other-1", client.Registration{Address: "10.0.1.3", Port: 80, Tags: []string{"v2"}}},
	} {
		c.WaitForIndex(agenttest.Register(t, c.Client(0), r.svc, r.id, &r.reg))
	}
	addr := c.Node(c.Follower()).HTTPAddr()

	discover := func(t *testing.T, args ...string) []string {
		t.Helper()
		out, errOut, err := beacon(ctx, addr, append([]string{"-o", "json", "discover", "shop"}, args...)...)
		if err != nil {
			t.Fatalf("discover %v: %v (%s)", args, err, errOut)
		}
		var insts []client.Instance
		if err := json.Unmarshal([]byte(out), &insts); err != nil {
			t.Fatalf("output %q: %v", out, err)
		}
		return ids(insts)
	}
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"no flags lists every instance", nil, []string{"shop-1", "shop-2", "shop-3"}},
		{"--healthy", []string{"--healthy"}, []string{"shop-1", "shop-2"}},
		{"--tag", []string{"--tag", "v2"}, []string{"shop-2", "shop-3"}},
		{"--meta", []string{"--meta", "zone:b"}, []string{"shop-2"}},
		{"--version with a range", []string{"--version", ">=2.0.0 <3.0.0"}, []string{"shop-2", "shop-3"}},
		{"--consistent", []string{"--consistent", "--healthy"}, []string{"shop-1", "shop-2"}},
		{"--max-stale", []string{"--max-stale", "1ns", "--tag", "v1"}, []string{"shop-1"}},
		{"--index behind the result answers at once", []string{"--index", "1", "--wait", "5s"}, []string{"shop-1", "shop-2", "shop-3"}},
	} {
		t.Run("beacon discover "+tc.name, func(t *testing.T) {
			if got := discover(t, tc.args...); !slices.Equal(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
	t.Run("beacon discover prints a table by default", func(t *testing.T) {
		out, _, err := beacon(ctx, addr, "discover", "shop", "--healthy")
		if err != nil || !strings.Contains(out, "ID") || !strings.Contains(out, "10.0.0.2:80") || strings.Contains(out, "shop-3") {
			t.Errorf("%v\n%s", err, out)
		}
	})
	t.Run("beacon discover prints the index on stderr, and --index with it waits for the next change", func(t *testing.T) {
		out, errOut, err := beacon(ctx, addr, "-o", "json", "discover", "ship")
		var insts []client.Instance
		if err != nil || json.Unmarshal([]byte(out), &insts) != nil || len(insts) != 1 {
			t.Fatalf("%v: stdout %q is not the JSON array of ship's instance", err, out)
		}
		var idx uint64
		if _, err := fmt.Sscanf(errOut, "index: %d\n", &idx); err != nil || idx == 0 {
			t.Fatalf("stderr %q: want index: N (%v)", errOut, err)
		}
		type result struct {
			out, errOut string
			err         error
		}
		done := make(chan result, 1)
		go func() {
			out, errOut, err := beacon(ctx, addr, "discover", "ship", "--index", strconv.FormatUint(idx, 10), "--wait", "30s")
			done <- result{out, errOut, err}
		}()
		agenttest.Register(t, c.Client(0), "ship", "ship-2", &client.Registration{Address: "10.0.1.4", Port: 80})
		r := <-done
		var next uint64
		if _, err := fmt.Sscanf(r.errOut, "index: %d\n", &next); r.err != nil || err != nil || next <= idx || !strings.Contains(r.out, "ship-2") {
			t.Fatalf("blocking discover past %d: %v, stdout %q, stderr %q; want ship-2 and a later index", idx, r.err, r.out, r.errOut)
		}
	})
	t.Run("beacon discover --quiet leaves the index out and keeps errors", func(t *testing.T) {
		for _, q := range []string{"--quiet", "-q"} {
			out, errOut, err := beacon(ctx, addr, "discover", "shop", q)
			if err != nil || !strings.Contains(out, "shop-1") || errOut != "" {
				t.Errorf("discover shop %s: %v, stdout %q, stderr %q; want the table and nothing on stderr", q, err, out, errOut)
			}
		}
		if _, _, err := beacon(ctx, addr, "discover", "Not_A_Service", "-q"); err == nil || !strings.Contains(err.Error(), "service") {
			t.Errorf("discover of a bad service name with -q: %v, want the error", err)
		}
	})
	t.Run("beacon checks shows a TTL check's owner as (leader), which --owner matches", func(t *testing.T) {
		out, _, err := beacon(ctx, addr, "checks", "--service", "shop")
		if err != nil || !regexpLine(out, `shop:shop-3:\S+\s+shop\s+ttl\s+critical\s+\(leader\)\s`) {
			t.Fatalf("%v\n%s", err, out)
		}
		out, _, err = beacon(ctx, addr, "-o", "json", "checks", "--owner", "(leader)")
		var checks []client.Check
		if err != nil || json.Unmarshal([]byte(out), &checks) != nil || len(checks) != 1 || !strings.HasPrefix(checks[0].ID, "shop:shop-3:") {
			t.Fatalf("checks --owner (leader): %v, %s; want shop-3's TTL check", err, out)
		}
	})
	t.Run("beacon discover --wait without --index is refused", func(t *testing.T) {
		_, _, err := beacon(ctx, addr, "discover", "ship", "--wait", "5s")
		if err == nil || !strings.Contains(err.Error(), "--wait needs --index") {
			t.Fatalf("err = %v, want a usage error naming --index", err)
		}
	})
	t.Run("beacon discover with a bad version range fails", func(t *testing.T) {
		if _, _, err := beacon(ctx, addr, "discover", "shop", "--version", ">=1 <<2"); err == nil || !strings.Contains(err.Error(), "version") {
			t.Errorf("err = %v", err)
		}
	})
	t.Run("beacon discover --watch prints each change until interrupted", func(t *testing.T) {
		wctx, cancel := context.WithCancel(ctx)
		defer cancel()
		var out, errOut syncBuffer
		done := make(chan error, 1)
		// Every agent, so that the watch can move.
		var addrs []string
		for _, n := range c.Nodes() {
			addrs = append(addrs, n.HTTPAddr())
		}
		go func() {
			_, _, err := run(wctx, &out, &errOut, strings.Join(addrs, ","), "discover", "shop", "--watch", "--healthy", "--wait", "10s")
			done <- err
		}()
		agenttest.Eventually(t, 30*time.Second, func() bool { return strings.Count(out.String(), "--- index") == 1 }, "the first listing")
		agenttest.Register(t, c.Client(1), "shop", "shop-4", &client.Registration{Address: "10.0.0.4", Port: 80})
		agenttest.Eventually(t, 30*time.Second, func() bool {
			return strings.Count(out.String(), "--- index") == 2 && strings.Contains(out.String(), "shop-4")
		}, "the change to be printed")
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("watch ended with %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("watch did not end on interrupt")
		}
	})

	services := func(t *testing.T, args ...string) ([]string, string) {
		t.Helper()
		out, errOut, err := beacon(ctx, addr, append([]string{"-o", "json", "services"}, args...)...)
		if err != nil {
			t.Fatalf("services %v: %v (%s)", args, err, errOut)
		}
		var sums []client.ServiceSummary
		if err := json.Unmarshal([]byte(out), &sums); err != nil {
			t.Fatalf("output %q: %v", out, err)
		}
		var names []string
		for _, s := range sums {
			names = append(names, s.Name)
		}
		return names, errOut
	}
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"lists every service", nil, []string{"other", "shelf", "ship", "shop"}},
		{"--prefix", []string{"--prefix", "sh"}, []string{"shelf", "ship", "shop"}},
		{"--tag keeps services with a matching instance", []string{"--tag", "v2"}, []string{"other", "ship", "shop"}},
		{"--meta", []string{"--meta", "zone:a"}, []string{"shop"}},
		{"--healthy", []string{"--healthy", "--prefix", "sho"}, []string{"shop"}},
		{"--prefix and --tag combine", []string{"--prefix", "sh", "--tag", "v2"}, []string{"ship", "shop"}},
	} {
		t.Run("beacon services "+tc.name, func(t *testing.T) {
			if got, _ := services(t, tc.args...); !slices.Equal(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
	t.Run("beacon services --limit prints the next cursor and --cursor continues", func(t *testing.T) {
		got, errOut := services(t, "--limit", "2")
		if !slices.Equal(got, []string{"other", "shelf"}) || !strings.Contains(errOut, "next cursor: shelf") {
			t.Fatalf("first page %v, stderr %q", got, errOut)
		}
		got, errOut = services(t, "--limit", "2", "--cursor", "shelf")
		if !slices.Equal(got, []string{"ship", "shop"}) || errOut != "" {
			t.Fatalf("second page %v, stderr %q", got, errOut)
		}
	})
	t.Run("beacon services prints counts by health", func(t *testing.T) {
		out, _, err := beacon(ctx, addr, "services", "--prefix", "shop")
		if err != nil || !strings.Contains(out, "UNAVAILABLE") || !regexpLine(out, `shop\s+4\s+3\s+0\s+1\s+0\s`) {
			t.Errorf("%v\n%s", err, out)
		}
	})
	t.Run("beacon services counts instances in maintenance or draining as unavailable, as the API does", func(t *testing.T) {
		var idx uint64
		agenttest.Retry503(t, "maintenance", func() (err error) {
			idx, err = c.Client(0).Maintenance(ctx, "shop", "shop-1", &client.MaintenanceRequest{Mode: "maintenance", Reason: "test"})
			return err
		})
		agenttest.Retry503(t, "drain", func() (err error) {
			idx, err = c.Client(0).Maintenance(ctx, "shop", "shop-2", &client.MaintenanceRequest{Mode: "drain", Deadline: client.Duration(time.Hour)})
			return err
		})
		c.WaitForIndex(idx)
		out, _, err := beacon(ctx, addr, "services", "--prefix", "shop")
		if err != nil || !regexpLine(out, `shop\s+4\s+3\s+0\s+1\s+2\s`) {
			t.Errorf("%v\n%s", err, out)
		}
	})
}

// regexpLine reports whether a line of out matches the regular expression re.
func regexpLine(out, re string) bool {
	return regexp.MustCompile(`(?m)^` + re).MatchString(out)
}

func ttl(initial string) []client.CheckDefinition {
	return []client.CheckDefinition{{TTL: client.Duration(time.Hour), InitialStatus: initial}}
}

func ids(insts []client.Instance) []string {
	out := []string{}
	for _, i := range insts {
		out = append(out, i.ID)
	}
	return out
}
