package chaostest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Names and addresses of the harness's network. Every name carries the tag
// of the process that created it ("bcn" + its PID in base 36), so that two
// test processes on one machine never collide, and a later run can remove
// what a killed run left behind (and nothing else).
const (
	nsPrefix     = "bcn"
	hostPrefix   = "bcr"
	nftTable     = "beacon_chaos"
	subnetFormat = "10.77.%d.%d"
	lockDir      = "/tmp"
	lockFormat   = "beacon-chaos-net-10.77.%d.lock"
	// HTTPPort, RaftPort and GossipPort are the ports every node binds on
	// its own address.
	HTTPPort   = 8750
	RaftPort   = 8751
	GossipPort = 8752
)

// Network is a private network for n nodes: node i lives in its own network
// namespace with address 10.77.X.(11+i); the namespaces are joined by a
// bridge that lives in a "switch" namespace of its own (so the host's
// firewall, which may drop forwarded traffic, is never involved), and a veth
// link gives the test's namespace the address 10.77.X.1 on the same subnet,
// so clients reach every node. X is chosen per process and held with a lock
// file for the network's life.
//
// Partitions are nftables rules in the isolated node's namespace that drop
// traffic to and from other node addresses only: clients still reach an
// isolated node. A Network is safe for concurrent use.
type Network struct {
	tag    string
	subnet int
	lock   *os.File
	n      int

	mu       sync.Mutex
	created  []string // namespaces created, in order
	hostLink string
	blocked  map[int][]int // node -> peers it is cut from
	closed   bool
}

// netnsTag is this process's tag in every name the harness creates.
func netnsTag() string { return strconv.FormatInt(int64(os.Getpid()), 36) }

// CheckPrivileges reports why this machine cannot run the harness (not
// root, no `ip` or `nft`, namespaces refused), or nil.
func CheckPrivileges() error {
	if os.Geteuid() != 0 {
		return errors.New("chaostest: needs root (network namespaces and nftables)")
	}
	for _, tool := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("chaostest: %s not found in PATH (install iproute2 and nftables)", tool)
		}
	}
	probe := nsPrefix + netnsTag() + "probe"
	if err := run("ip", "netns", "add", probe); err != nil {
		return fmt.Errorf("chaostest: cannot create a network namespace: %w", err)
	}
	defer run("ip", "netns", "del", probe) //nolint:errcheck // best effort
	if err := run("ip", "netns", "exec", probe, "nft", "list", "tables"); err != nil {
		return fmt.Errorf("chaostest: nftables does not work in a namespace: %w", err)
	}
	return nil
}

// NewNetwork builds the network for n nodes (1 to 9). On error everything
// created is removed again. Close removes it.
func NewNetwork(n int) (_ *Network, err error) {
	if n < 1 || n > 9 {
		return nil, fmt.Errorf("chaostest: %d nodes: want 1 to 9", n)
	}
	SweepStale()
	nw := &Network{tag: netnsTag(), n: n, blocked: map[int][]int{}}
	if err := nw.lockSubnet(); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			nw.Close()
		}
	}()
	sw := nw.switchNS()
	if err := nw.addNS(sw); err != nil {
		return nil, err
	}
	nw.hostLink = hostPrefix + nw.tag
	steps := [][]string{
		{"ip", "-n", sw, "link", "set", "lo", "up"},
		{"ip", "-n", sw, "link", "add", "br0", "type", "bridge"},
		{"ip", "-n", sw, "link", "set", "br0", "up"},
		{"ip", "link", "add", nw.hostLink, "type", "veth", "peer", "name", "host", "netns", sw},
		{"ip", "addr", "add", nw.HostIP() + "/24", "dev", nw.hostLink},
		{"ip", "link", "set", nw.hostLink, "up"},
		{"ip", "-n", sw, "link", "set", "host", "master", "br0"},
		{"ip", "-n", sw, "link", "set", "host", "up"},
	}
	for i := 0; i < n; i++ {
		ns := nw.Namespace(i)
		if err := nw.addNS(ns); err != nil {
			return nil, err
		}
		port := "p" + strconv.Itoa(i+1)
		steps = append(steps,
			[]string{"ip", "-n", ns, "link", "set", "lo", "up"},
			[]string{"ip", "-n", sw, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns},
			[]string{"ip", "-n", sw, "link", "set", port, "master", "br0"},
			[]string{"ip", "-n", sw, "link", "set", port, "up"},
			[]string{"ip", "-n", ns, "addr", "add", nw.NodeIP(i) + "/24", "dev", "eth0"},
			[]string{"ip", "-n", ns, "link", "set", "eth0", "up"},
		)
	}
	for _, s := range steps {
		if err := run(s[0], s[1:]...); err != nil {
			return nil, err
		}
	}
	// Never send a workload anywhere but into our own namespaces: the route
	// to every node must leave through our link.
	for i := 0; i < n; i++ {
		out, err := output("ip", "route", "get", nw.NodeIP(i))
		if err != nil {
			return nil, err
		}
		if !strings.Contains(out, "dev "+nw.hostLink+" ") {
			return nil, fmt.Errorf("chaostest: route to %s does not use %s: %s", nw.NodeIP(i), nw.hostLink, out)
		}
	}
	return nw, nil
}

// lockSubnet picks a free 10.77.X.0/24, holding a lock file (released by the
// kernel if this process dies) and checking that no route uses it already.
func (nw *Network) lockSubnet() error {
	start := os.Getpid() % 200
	for k := 0; k < 200; k++ {
		x := 20 + (start+k)%200
		f, err := os.OpenFile(filepath.Join(lockDir, fmt.Sprintf(lockFormat, x)), os.O_CREATE|os.O_RDWR, 0o600)
		if err != nil {
			return fmt.Errorf("chaostest: subnet lock: %w", err)
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			f.Close()
			continue
		}
		if out, err := output("ip", "-4", "route", "show", fmt.Sprintf("10.77.%d.0/24", x)); err != nil || strings.TrimSpace(out) != "" {
			f.Close()
			continue
		}
		nw.subnet, nw.lock = x, f
		return nil
	}
	return errors.New("chaostest: no free subnet in 10.77.20-219.0/24")
}

func (nw *Network) addNS(name string) error {
	if err := run("ip", "netns", "add", name); err != nil {
		return err
	}
	nw.mu.Lock()
	nw.created = append(nw.created, name)
	nw.mu.Unlock()
	return nil
}

func (nw *Network) switchNS() string { return nsPrefix + nw.tag + "sw" }

// Namespace returns the name of node i's network namespace.
func (nw *Network) Namespace(i int) string { return nsPrefix + nw.tag + "n" + strconv.Itoa(i+1) }

// NodeIP returns node i's address.
func (nw *Network) NodeIP(i int) string { return fmt.Sprintf(subnetFormat, nw.subnet, 11+i) }

// HostIP returns the test namespace's address on the network.
func (nw *Network) HostIP() string { return fmt.Sprintf(subnetFormat, nw.subnet, 1) }

// Size returns the number of nodes.
func (nw *Network) Size() int { return nw.n }

// Block cuts node i off from the given peers, in both directions, leaving
// its link to the test's namespace (the clients) intact. It replaces any
// earlier cut of node i.
func (nw *Network) Block(i int, peers []int) error {
	var addrs []string
	for _, p := range peers {
		if p != i {
			addrs = append(addrs, nw.NodeIP(p))
		}
	}
	if len(addrs) == 0 {
		return nw.Unblock(i)
	}
	set := strings.Join(addrs, ", ")
	// Recreating the table in one transaction replaces any earlier cut.
	rules := fmt.Sprintf(`table inet %[1]s
delete table inet %[1]s
table inet %[1]s {
	chain input { type filter hook input priority -10; policy accept; ip saddr { %[2]s } drop; }
	chain output { type filter hook output priority -10; policy accept; ip daddr { %[2]s } drop; }
}
`, nftTable, set)
	if err := runInput(rules, "ip", "netns", "exec", nw.Namespace(i), "nft", "-f", "-"); err != nil {
		return err
	}
	nw.mu.Lock()
	nw.blocked[i] = append([]int(nil), peers...)
	nw.mu.Unlock()
	return nil
}

// Isolate cuts node i off from every other node.
func (nw *Network) Isolate(i int) error {
	var peers []int
	for p := 0; p < nw.n; p++ {
		if p != i {
			peers = append(peers, p)
		}
	}
	return nw.Block(i, peers)
}

// BlackHole drops every packet to and from node i except on its loopback:
// peers and clients alike see their connections time out (nothing is
// refused), as when a host or container disappears. Unblock lifts it.
func (nw *Network) BlackHole(i int) error {
	rules := fmt.Sprintf(`table inet %[1]s
delete table inet %[1]s
table inet %[1]s {
	chain input { type filter hook input priority -10; policy accept; iifname != "lo" drop; }
	chain output { type filter hook output priority -10; policy accept; oifname != "lo" drop; }
}
`, nftTable)
	if err := runInput(rules, "ip", "netns", "exec", nw.Namespace(i), "nft", "-f", "-"); err != nil {
		return err
	}
	var peers []int
	for p := 0; p < nw.n; p++ {
		if p != i {
			peers = append(peers, p)
		}
	}
	nw.mu.Lock()
	nw.blocked[i] = peers
	nw.mu.Unlock()
	return nil
}

// Unblock removes node i's cut.
func (nw *Network) Unblock(i int) error {
	rules := fmt.Sprintf("table inet %[1]s\ndelete table inet %[1]s\n", nftTable)
	if err := runInput(rules, "ip", "netns", "exec", nw.Namespace(i), "nft", "-f", "-"); err != nil {
		return err
	}
	nw.mu.Lock()
	delete(nw.blocked, i)
	nw.mu.Unlock()
	return nil
}

// HealAll removes every cut.
func (nw *Network) HealAll() error {
	var errs []error
	for i := 0; i < nw.n; i++ {
		if err := nw.Unblock(i); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Blocked reports the peers node i is cut from.
func (nw *Network) Blocked(i int) []int {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	return append([]int(nil), nw.blocked[i]...)
}

// Close removes the namespaces (with every process still in them, which it
// kills), the links and the subnet lock. It is safe to call twice.
func (nw *Network) Close() error {
	nw.mu.Lock()
	if nw.closed {
		nw.mu.Unlock()
		return nil
	}
	nw.closed = true
	created := nw.created
	nw.mu.Unlock()
	var errs []error
	for i := len(created) - 1; i >= 0; i-- {
		killNamespacePIDs(created[i])
		if err := run("ip", "netns", "del", created[i]); err != nil {
			errs = append(errs, err)
		}
	}
	if nw.hostLink != "" && linkExists(nw.hostLink) {
		// Namespace teardown is asynchronous; the veth usually goes with
		// its peer, but do not rely on it.
		_ = run("ip", "link", "del", nw.hostLink)
	}
	if nw.lock != nil {
		nw.lock.Close()
	}
	return errors.Join(errs...)
}

var staleName = regexp.MustCompile(`^` + nsPrefix + `([0-9a-z]+)(sw|n[0-9]|probe)$`)

// SweepStale removes namespaces (and the processes in them) and host links
// that a harness process which no longer runs left behind, for instance one
// killed by `go test -timeout`. Names of live processes are left alone.
func SweepStale() {
	out, err := output("ip", "netns", "list")
	if err == nil {
		for _, line := range strings.Split(out, "\n") {
			name, _, _ := strings.Cut(strings.TrimSpace(line), " ")
			m := staleName.FindStringSubmatch(name)
			if m == nil || tagAlive(m[1]) {
				continue
			}
			killNamespacePIDs(name)
			_ = run("ip", "netns", "del", name)
		}
	}
	out, err = output("ip", "-o", "link", "show")
	if err == nil {
		re := regexp.MustCompile(`^\d+: (` + hostPrefix + `([0-9a-z]+))[@:]`)
		for _, line := range strings.Split(out, "\n") {
			if m := re.FindStringSubmatch(line); m != nil && !tagAlive(m[2]) {
				_ = run("ip", "link", "del", m[1])
			}
		}
	}
}

// tagAlive reports whether the process a tag names still runs.
func tagAlive(tag string) bool {
	pid, err := strconv.ParseInt(tag, 36, 64)
	if err != nil || pid <= 0 || pid > 1<<22 {
		return true // not ours to judge
	}
	return syscall.Kill(int(pid), 0) == nil || pid == int64(os.Getpid())
}

// killNamespacePIDs SIGKILLs the processes inside one of our namespaces.
func killNamespacePIDs(ns string) {
	out, err := output("ip", "netns", "pids", ns)
	if err != nil {
		return
	}
	for _, f := range strings.Fields(out) {
		if pid, err := strconv.Atoi(f); err == nil && pid > 1 && pid != os.Getpid() {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

func linkExists(name string) bool { return run("ip", "link", "show", name) == nil }

// run runs a short administrative command, bounded to 20 seconds.
func run(name string, args ...string) error {
	_, err := output(name, args...)
	return err
}

func output(name string, args ...string) (string, error) { return outputInput("", name, args...) }

func runInput(stdin, name string, args ...string) error {
	_, err := outputInput(stdin, name, args...)
	return err
}

func outputInput(stdin, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c := exec.CommandContext(ctx, name, args...)
	if stdin != "" {
		c.Stdin = strings.NewReader(stdin)
	}
	var out, errb bytes.Buffer
	c.Stdout, c.Stderr = &out, &errb
	if err := c.Run(); err != nil {
		return out.String(), fmt.Errorf("chaostest: %s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}
