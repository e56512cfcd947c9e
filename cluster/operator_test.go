package cluster_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/beaconhq/beacon/agent"
	"github.com/beaconhq/beacon/agent/agenttest"
	"github.com/beaconhq/beacon/api/client"
	"github.com/beaconhq/beacon/fsm"
	"go.uber.org/goleak"
)

// TestMain fails the package if a test leaves goroutines behind.
//
// memberlist's Shutdown does not wait for a probe in flight: the probe's
// goroutine ends when the probe's ack timeout fires, up to 8 probe
// intervals later (Lifeguard stretches a node's probes while its own
// probes fail, as a lone survivor's do in
// TestALoneSurvivorDeclaresItsPeersFailedWithoutConfirmations). goleak's
// own wait is about half a second, so what is left is looked for again
// for up to lingerBound before it is called a leak.
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		const lingerBound = 5 * time.Second
		for deadline := time.Now().Add(lingerBound); ; {
			err := goleak.Find()
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				fmt.Fprintf(os.Stderr, "goleak: goroutines left %s after the tests: %v\n", lingerBound, err)
				code = 1
				break
			}
		}
	}
	os.Exit(code)
}

func register(t *testing.T, cl *client.Client, service, id string, node string) uint64 {
	t.Helper()
	var idx uint64
	agenttest.Retry503(t, "register "+id, func() (err error) {
		idx, err = cl.Register(context.Background(), service, id, &client.Registration{Address: "10.0.0.1", Port: 8080, Node: node})
		return err
	})
	return idx
}

// ids lists the instance IDs of service on node i, read from its own store.
func ids(c *agenttest.Cluster, i int, service string) []string {
	_, insts := c.Node(i).Agent.Store().ServiceInstances(nil, service)
	var out []string
	for _, in := range insts {
		out = append(out, in.ID)
	}
	return out
}

func TestSnapshotRestoreThroughAFollowerReplacesTheCatalogOfEveryNode(t *testing.T) {
	c := agenttest.New(t, 3)
	ctx := context.Background()
	f := c.Follower()
	g := c.Follower(f)
	register(t, c.Client(f), "web", "web-1", "")
	idx := register(t, c.Client(g), "web", "web-2", "")

	// Saved through a node that did not take the last write: the archive
	// holds it all the same (a read index from the leader comes first).
	var saved bytes.Buffer
	if _, err := c.Client(f).SaveSnapshot(ctx, &saved, false); err != nil {
		t.Fatal(err)
	}
	ar, err := fsm.ReadArchive(bytes.NewReader(saved.Bytes()), 0)
	if err != nil {
		t.Fatal(err)
	}
	if counts, _ := ar.Counts(); counts.Instances != 2 || ar.Info.Index < idx {
		t.Fatalf("archive index %d (last write %d) holds %+v", ar.Info.Index, idx, counts)
	}

	// The catalog moves on after the save.
	if _, err := c.Client(g).Deregister(ctx, "web", "web-1"); err != nil {
		t.Fatal(err)
	}
	apiIdx := register(t, c.Client(g), "api", "api-1", "")
	c.WaitForIndex(apiIdx)

	// A reader blocked on "api" before the restore is woken by it.
	woke := make(chan []client.Instance, 1)
	go func() {
		insts, _, _ := c.Client(g).Instances(ctx, "api", &client.QueryOptions{WaitIndex: apiIdx, WaitTime: 30 * time.Second})
		woke <- insts
	}()

	var res *client.RestoreResult
	agenttest.Retry503(t, "restore", func() (err error) {
		res, err = c.Client(f).RestoreSnapshot(ctx, saved.Bytes())
		return err
	})
	if res.Index <= apiIdx || res.Snapshot.Index != ar.Info.Index || res.Snapshot.Counts.Instances != 2 {
		t.Fatalf("restore result %+v (index before: %d)", res, apiIdx)
	}
	// Read-your-restore on the node that took it, without waiting.
	if got := ids(c, f, "web"); !slices.Equal(got, []string{"web-1", "web-2"}) {
		t.Fatalf("web on %s right after the restore: %v", c.Node(f).Name, got)
	}
	// Every node: the saved catalog, at the restore's index.
	c.WaitForIndex(res.Index)
	for i := range c.Nodes() {
		if got := ids(c, i, "web"); !slices.Equal(got, []string{"web-1", "web-2"}) {
			t.Errorf("web on %s after the restore: %v", c.Node(i).Name, got)
		}
		if got := ids(c, i, "api"); len(got) != 0 {
			t.Errorf("api on %s after the restore: %v", c.Node(i).Name, got)
		}
		if ai := c.Node(i).Agent.Node().Status().AppliedIndex; ai != res.Index {
			t.Errorf("%s applied index %d, want the restore's %d", c.Node(i).Name, ai, res.Index)
		}
		// A committed restore leaves no mark of an unknown outcome.
		if _, err := os.Stat(filepath.Join(c.Node(i).Config.DataDir, "restore-outcome-unknown")); !errors.Is(err, os.ErrNotExist) || c.Node(i).Agent.Node().Diverged() {
			t.Errorf("%s: restore mark: %v; diverged %v", c.Node(i).Name, err, c.Node(i).Agent.Node().Diverged())
		}
	}
	select {
	case insts := <-woke:
		if len(insts) != 0 {
			t.Fatalf("the woken reader saw %v", insts)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("a reader blocked before the restore was not woken by it")
	}

	// Writes go on after the restore, on top of the restored catalog.
	after := register(t, c.Client(c.Leader()), "api", "api-2", "")
	if after <= res.Index {
		t.Fatalf("write after the restore at index %d, restore at %d", after, res.Index)
	}
	c.WaitForIndex(after)
	for i := range c.Nodes() {
		if got := ids(c, i, "api"); !slices.Equal(got, []string{"api-2"}) {
			t.Errorf("api on %s: %v", c.Node(i).Name, got)
		}
	}
}

func TestSnapshotRestoreRefusesDamagedArchivesAndLeavesTheCatalogAlone(t *testing.T) {
	c := agenttest.New(t, 3)
	ctx := context.Background()
	idx := register(t, c.Client(0), "web", "web-1", "")
	c.WaitForIndex(idx)
	var saved bytes.Buffer
	if _, err := c.Client(1).SaveSnapshot(ctx, &saved, false); err != nil {
		t.Fatal(err)
	}
	good := saved.Bytes()
	altered := bytes.Clone(good)
	altered[len(altered)-5] ^= 1
	cases := []struct {
		name   string
		body   []byte
		status int
		code   string
		says   string
	}{
		{"a truncated archive is a 400 that says so", good[:len(good)-20], 400, "bad_snapshot", "truncated"},
		{"an altered archive is a 400 that says so", altered, 400, "bad_snapshot", "checksum mismatch"},
		{"a foreign file is a 400 that says so", []byte(`{"services": []}`), 400, "bad_snapshot", "not a beacon snapshot"},
		{"an empty body is a 400", nil, 400, "bad_snapshot", "empty"},
		{"an archive above the size limit is a 413", make([]byte, 32<<20+1), 413, "too_large", "too large"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.Client(2).RestoreSnapshot(ctx, tc.body)
			var ce *client.Error
			if !errors.As(err, &ce) || ce.Status != tc.status || ce.Code != tc.code || !strings.Contains(ce.ErrorBody.Error, tc.says) {
				t.Fatalf("restore: %v, want HTTP %d %s saying %q", err, tc.status, tc.code, tc.says)
			}
		})
	}
	for i := range c.Nodes() {
		if st := c.Node(i).Agent.Node().Status(); st.AppliedIndex < idx {
			t.Fatalf("%s at index %d", c.Node(i).Name, st.AppliedIndex)
		}
		if got := ids(c, i, "web"); !slices.Equal(got, []string{"web-1"}) {
			t.Fatalf("web on %s after refused restores: %v", c.Node(i).Name, got)
		}
	}
}

func memberStatus(c *agenttest.Cluster, i int, name string) string {
	for _, m := range c.Node(i).Agent.Node().Members() {
		if m.Name == name {
			return string(m.Status)
		}
	}
	return ""
}

func voters(c *agenttest.Cluster, i int) []string {
	var out []string
	for _, p := range c.Node(i).Agent.Node().Status().Peers {
		if p.Suffrage == "Voter" {
			out = append(out, p.ID)
		}
	}
	slices.Sort(out)
	return out
}

func TestForceLeaveMarksAFailedServerLeftEverywhereAndRemovesItFromRaft(t *testing.T) {
	c := agenttest.New(t, 3)
	ctx := context.Background()
	c.WaitForVoters(3)
	gone := c.Follower()
	goneName := c.Node(gone).Name
	idx := register(t, c.Client(c.Leader()), "web", "web-on-gone", goneName)
	c.WaitForIndex(idx)

	// An alive member is refused, and so is a name nobody knows.
	var ce *client.Error
	if err := c.Client(c.Leader()).ForceLeave(ctx, goneName); !errors.As(err, &ce) || ce.Status != 409 {
		t.Fatalf("force-leave of an alive member: %v, want 409", err)
	}
	if err := c.Client(c.Leader()).ForceLeave(ctx, "no-such-node"); !errors.As(err, &ce) || ce.Status != 404 {
		t.Fatalf("force-leave of an unknown member: %v, want 404", err)
	}
	// remove-peer of an ID that never was a peer is a 404 too, through a
	// follower (forwarded) as through the leader, and changes nothing.
	for _, i := range []int{gone, c.Leader()} {
		if err := c.Client(i).RemovePeer(ctx, "n9"); !errors.As(err, &ce) || ce.Status != 404 {
			t.Fatalf("remove-peer of a never-peer via node %d: %v, want 404", i, err)
		}
	}
	c.WaitForVoters(3)

	c.Stop(gone)
	l := c.WaitForLeader()
	other := c.Follower(gone)
	agenttest.Eventually(t, 30*time.Second, func() bool { return memberStatus(c, l, goneName) == "failed" }, goneName+" failed")
	// Through a follower, which forwards to the leader.
	agenttest.Retry503(t, "force-leave", func() error { return c.Client(other).ForceLeave(ctx, goneName) })

	l = c.Leader()
	if got := voters(c, l); slices.Contains(got, goneName) || len(got) != 2 {
		t.Fatalf("voters after force-leave: %v", got)
	}
	for _, i := range []int{l, other} {
		agenttest.Eventually(t, 10*time.Second, func() bool { return memberStatus(c, i, goneName) == "left" },
			fmt.Sprintf("%s left in %s's view", goneName, c.Node(i).Name))
	}
	// The catalog's nodes table follows the leader's view; the instance on
	// the gone node stays critical.
	agenttest.Eventually(t, 15*time.Second, func() bool {
		n := c.Node(l).Agent.Store().Node(goneName)
		return n != nil && n.Status == fsm.NodeLeft
	}, goneName+" left in the catalog")
	// other is read below: it applies what the leader applied a moment later.
	c.WaitForIndex(c.Node(l).Agent.Node().Status().AppliedIndex)
	if _, inst, _ := c.Node(other).Agent.Store().Instance(nil, "web", "web-on-gone"); inst == nil || inst.Status != fsm.Critical {
		t.Fatalf("instance on the force-left node: %+v", inst)
	}
	// Forcing it out again is harmless.
	agenttest.Retry503(t, "second force-leave", func() error { return c.Client(l).ForceLeave(ctx, goneName) })

	// If it comes back after all, it is a member and a voter again.
	c.Restart(gone)
	c.WaitForVoters(3)
	agenttest.Eventually(t, 30*time.Second, func() bool { return memberStatus(c, c.Leader(), goneName) == "alive" }, goneName+" alive again")
}

// TestReapRemovesAFailedServerAfterTheTimeButNeverBelowTheMinimumQuorum
// runs five servers that reap after 2s and keep at least four voters. Two
// fail together: exactly one is removed, and the other stays for more than
// two reconcile rounds after it became due.
func TestReapRemovesAFailedServerAfterTheTimeButNeverBelowTheMinimumQuorum(t *testing.T) {
	const reapAfter = 2 * time.Second
	c := agenttest.New(t, 5, agenttest.WithConfig(func(cfg *agent.Config) {
		cfg.ReapFailedAfter = reapAfter
		cfg.MinQuorum = 4
	}))
	c.WaitForVoters(5)
	a := c.Follower()
	b := c.Follower(a)
	names := []string{c.Node(a).Name, c.Node(b).Name}
	c.Stop(a)
	c.Stop(b)
	stopped := time.Now()

	c.WaitForVoters(4)
	if took := time.Since(stopped); took < reapAfter {
		t.Fatalf("a failed server was reaped after %s, before the %s configured", took, reapAfter)
	}
	l := c.Leader()
	remaining := voters(c, l)
	kept := ""
	for _, n := range names {
		if slices.Contains(remaining, n) {
			kept = n
		}
	}
	if kept == "" {
		t.Fatalf("voters %v: both failed servers were removed", remaining)
	}
	// Both are past due now; the reconcile loop runs every 5s and on every
	// membership event. Over two rounds the kept one must stay.
	agenttest.Eventually(t, 10*time.Second, func() bool {
		return memberStatus(c, l, kept) == "failed"
	}, kept+" failed in the leader's view")
	deadline := time.Now().Add(12 * time.Second)
	for time.Now().Before(deadline) {
		if l := c.Leader(); l >= 0 && !slices.Contains(voters(c, l), kept) {
			t.Fatalf("%s was reaped below the minimum quorum: voters %v", kept, voters(c, l))
		}
		time.Sleep(100 * time.Millisecond)
	}
}
