package agent_test

import (
	"context"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/beaconhq/beacon/agent"
	"github.com/beaconhq/beacon/api/client"
)

// An agent asked for port 0 everywhere writes, once it serves, the ports it
// bound and advertises to --addr-file, and removes the file at shutdown.
func TestAddrFileNamesThePortsTheKernelPicked(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an agent")
	}
	path := filepath.Join(t.TempDir(), "sub", "addrs.json")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	a, err := agent.New(agent.Config{
		Dev: true, Node: "dev", HTTPAddr: "127.0.0.1:0", RaftAddr: "127.0.0.1:0", GossipAddr: "127.0.0.1:0",
		DNSAddr: "127.0.0.1:0", AddrFile: path, LeaderWait: 5 * time.Second, RejoinInterval: time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	stopped := false
	defer func() {
		if !stopped {
			_ = a.Shutdown(context.Background())
		}
	}()
	af, err := agent.ReadAddrFile(path)
	if err != nil {
		t.Fatalf("the file is not there once Start returned: %v", err)
	}
	t.Logf("%+v", af)
	for _, c := range []struct{ what, got, want string }{
		{"http bind", af.HTTP.Bind, a.HTTPAddr()},
		{"http advertise", af.HTTP.Advertise, a.HTTPAddr()},
		{"cluster advertise", af.Cluster.Advertise, a.Node().ClusterAddr()},
		{"cluster bind", af.Cluster.Bind, a.Node().ClusterAddr()},
		{"gossip advertise", af.Gossip.Advertise, a.Node().GossipAddr()},
		{"gossip bind", af.Gossip.Bind, a.Node().GossipAddr()},
	} {
		if c.got != c.want {
			t.Errorf("%s: %q, want %q", c.what, c.got, c.want)
		}
		if _, port, err := net.SplitHostPort(c.got); err != nil || port == "0" {
			t.Errorf("%s: %q is not a bound host:port", c.what, c.got)
		}
	}
	if af.Node != "dev" || af.DNS == nil || af.DNS.Bind != a.DNSAddr() || af.LB != nil || af.LBAdmin != nil {
		t.Errorf("node %q, dns %+v (want %s), lb %+v, lb admin %+v", af.Node, af.DNS, a.DNSAddr(), af.LB, af.LBAdmin)
	}
	// The address in the file answers.
	cl, err := client.New(client.Config{Addresses: []string{af.HTTP.Bind}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Status(context.Background()); err != nil {
		t.Fatalf("status through the address in the file: %v", err)
	}
	// No temporary file is left beside it.
	if ents, _ := os.ReadDir(filepath.Dir(path)); len(ents) != 1 {
		t.Errorf("directory holds %d entries, want only the address file", len(ents))
	}
	stopped = true
	if err := a.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("after shutdown: %v, want the file removed", err)
	}
}
