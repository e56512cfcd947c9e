package chaostest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"
)

// FaultKind names one kind of fault.
type FaultKind string

// The faults the nemesis injects.
const (
	KillLeader        FaultKind = "kill-leader"        // SIGKILL, restarted with its data dir at heal
	KillFollower      FaultKind = "kill-follower"      // SIGKILL, restarted at heal
	PauseLeader       FaultKind = "pause-leader"       // SIGSTOP, SIGCONT at heal
	PartitionLeader   FaultKind = "partition-leader"   // leader cut from the majority
	PartitionFollower FaultKind = "partition-follower" // one follower cut from the others
	// BlackHoleLeader drops every packet to and from the leader (peers and
	// clients alike), as when its host or container vanishes: connections
	// time out instead of being refused.
	BlackHoleLeader FaultKind = "blackhole-leader"
	// PauseLeaderInFlight sends a burst of writes through the followers and
	// SIGSTOPs the leader while they are in flight (forwarded to it).
	PauseLeaderInFlight FaultKind = "pause-leader-inflight"
)

// AllFaults lists every fault kind.
var AllFaults = []FaultKind{KillLeader, KillFollower, PauseLeader, PartitionLeader, PartitionFollower, BlackHoleLeader, PauseLeaderInFlight}

// inFlightBurst is how many writes PauseLeaderInFlight sends through the
// followers just before it pauses the leader.
const inFlightBurst = 8

// ParseFaults parses a comma-separated list of fault kinds ("" or "all":
// every kind).
func ParseFaults(s string) ([]FaultKind, error) {
	if s == "" || s == "all" {
		return AllFaults, nil
	}
	var out []FaultKind
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		ok := false
		for _, k := range AllFaults {
			ok = ok || string(k) == f
		}
		if !ok {
			return nil, fmt.Errorf("chaostest: unknown fault %q (want %v)", f, AllFaults)
		}
		out = append(out, FaultKind(f))
	}
	return out, nil
}

// NemesisConfig is the fault schedule's shape; the seed fixes the choices.
type NemesisConfig struct {
	Faults []FaultKind
	// Each fault lasts a uniform time in [MinHold, MaxHold] (default 2-6s)
	// and is followed, once the cluster has recovered, by a quiet spell in
	// [MinQuiet, MaxQuiet] (default 1-3s).
	MinHold, MaxHold   time.Duration
	MinQuiet, MaxQuiet time.Duration
	// RecoveryTimeout is how long the cluster may take to recover after a
	// heal before the run fails (default 60s).
	RecoveryTimeout time.Duration
}

func (n *NemesisConfig) defaults() {
	if len(n.Faults) == 0 {
		n.Faults = AllFaults
	}
	if n.MaxHold == 0 {
		n.MinHold, n.MaxHold = 2*time.Second, 6*time.Second
	}
	if n.MaxQuiet == 0 {
		n.MinQuiet, n.MaxQuiet = time.Second, 3*time.Second
	}
	if n.RecoveryTimeout == 0 {
		n.RecoveryTimeout = 60 * time.Second
	}
}

// Fault is one injected fault, as it happened.
type Fault struct {
	Kind FaultKind
	Node int
	// Start is when the fault was in place, Healed when it was lifted, and
	// Recovery how long the cluster then took to agree on a leader and
	// accept a write through every node. Offsets from the run's start.
	Start, Healed time.Duration
	Recovery      time.Duration
}

// String describes the fault in one line.
func (f Fault) String() string {
	return fmt.Sprintf("%s n%d at %s for %s (recovered in %s)", f.Kind, f.Node+1,
		f.Start.Round(time.Millisecond), (f.Healed - f.Start).Round(time.Millisecond), f.Recovery.Round(time.Millisecond))
}

// Nemesis injects faults on a seeded schedule: the fault kinds in a
// shuffled order (every kind once before any repeats), each held for a
// while, healed, then a quiet spell once the cluster has recovered.
type Nemesis struct {
	cfg    NemesisConfig
	c      *Cluster
	h      *History
	rng    *rand.Rand
	logf   func(string, ...any)
	faults []Fault
	err    error
	// InFlight, when set, performs one write through node (recorded in the
	// history); PauseLeaderInFlight uses it. Run waits for those writes.
	InFlight func(ctx context.Context, node int)
	inflight sync.WaitGroup
}

// NewNemesis prepares a nemesis for c; times are offsets on h's clock.
func NewNemesis(c *Cluster, h *History, cfg NemesisConfig, seed uint64, logf func(string, ...any)) *Nemesis {
	cfg.defaults()
	return &Nemesis{cfg: cfg, c: c, h: h, rng: rand.New(rand.NewPCG(seed, 0x6e656d65736973)), logf: logf}
}

// Run injects faults until ctx ends, healing the last one before it
// returns. It stops at the first fault it cannot inject or heal, or when the
// cluster does not recover in time; Err reports that.
func (n *Nemesis) Run(ctx context.Context) {
	defer n.inflight.Wait()
	var order []FaultKind
	for ctx.Err() == nil {
		if len(order) == 0 {
			order = append([]FaultKind(nil), n.cfg.Faults...)
			n.rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		}
		kind := order[0]
		order = order[1:]
		hold := n.between(n.cfg.MinHold, n.cfg.MaxHold)
		quiet := n.between(n.cfg.MinQuiet, n.cfg.MaxQuiet)
		pick := n.rng.IntN(1 << 20)
		if err := n.inject(ctx, kind, hold, pick); err != nil {
			n.err = err
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(quiet):
		}
	}
}

func (n *Nemesis) between(lo, hi time.Duration) time.Duration {
	if hi <= lo {
		return lo
	}
	return lo + time.Duration(n.rng.Int64N(int64(hi-lo)+1))
}

// inject applies one fault, holds it (a cancelled ctx shortens the hold but
// never skips the heal), heals it and measures recovery.
func (n *Nemesis) inject(ctx context.Context, kind FaultKind, hold time.Duration, pick int) error {
	bg := context.WithoutCancel(ctx)
	leader, err := n.c.WaitForLeader(bg, 30*time.Second)
	if err != nil {
		return fmt.Errorf("before %s: %w", kind, err)
	}
	target := leader
	if kind == KillFollower || kind == PartitionFollower {
		var followers []int
		for i := range n.c.Nodes {
			if i != leader {
				followers = append(followers, i)
			}
		}
		target = followers[pick%len(followers)]
	}
	node := n.c.Nodes[target]
	var heal func() error
	switch kind {
	case KillLeader, KillFollower:
		err = node.Kill()
		heal = func() error { return n.c.Restart(bg, target) }
	case PauseLeader:
		err = node.Pause()
		heal = node.Resume
	case PauseLeaderInFlight:
		if n.InFlight != nil {
			var followers []int
			for i := range n.c.Nodes {
				if i != target {
					followers = append(followers, i)
				}
			}
			for k := range inFlightBurst {
				n.inflight.Add(1)
				go func() {
					defer n.inflight.Done()
					n.InFlight(bg, followers[k%len(followers)])
				}()
			}
			// Long enough for the followers to forward them, too short
			// for the leader to answer them all.
			time.Sleep(2 * time.Millisecond)
		}
		err = node.Pause()
		heal = node.Resume
	case BlackHoleLeader:
		err = n.c.Net.BlackHole(target)
		heal = func() error { return n.c.Net.Unblock(target) }
	case PartitionLeader, PartitionFollower:
		err = n.c.Net.Isolate(target)
		heal = func() error { return n.c.Net.Unblock(target) }
	}
	f := Fault{Kind: kind, Node: target, Start: n.h.Now()}
	if err != nil {
		return fmt.Errorf("inject %s on %s: %w", kind, node.Name, err)
	}
	n.logf("nemesis: %s on %s for %s", kind, node.Name, hold.Round(time.Millisecond))
	select {
	case <-ctx.Done():
	case <-time.After(hold):
	}
	healStart := n.h.Now()
	if err := heal(); err != nil {
		return fmt.Errorf("heal %s on %s: %w", kind, node.Name, err)
	}
	f.Healed = healStart
	rec, err := n.c.WaitRecovered(bg, n.h.Start().Add(healStart), n.cfg.RecoveryTimeout)
	f.Recovery = rec
	n.faults = append(n.faults, f)
	if err != nil {
		return fmt.Errorf("after healing %s on %s: cluster did not recover: %w", kind, node.Name, err)
	}
	n.logf("nemesis: healed %s on %s; recovered in %s", kind, node.Name, rec.Round(time.Millisecond))
	return nil
}

// Faults returns the faults injected so far.
func (n *Nemesis) Faults() []Fault { return append([]Fault(nil), n.faults...) }

// Err reports why the nemesis stopped early, if it did.
func (n *Nemesis) Err() error { return n.err }

// Isolations returns the spans during which a node was cut off from its
// peers by a partition fault.
func Isolations(faults []Fault) []Isolation {
	var out []Isolation
	for _, f := range faults {
		if f.Kind == PartitionLeader || f.Kind == PartitionFollower {
			out = append(out, Isolation{Node: f.Node, Leader: f.Kind == PartitionLeader, From: f.Start, To: f.Healed})
		}
	}
	return out
}

// unreachable reports whether fault f made its node unable to answer
// clients (killed, paused, black-holed) during [from, to].
func (f Fault) unreachable(from, to time.Duration) bool {
	switch f.Kind {
	case KillLeader, KillFollower, PauseLeader, PauseLeaderInFlight, BlackHoleLeader:
	default:
		return false
	}
	return from <= f.Healed+f.Recovery && to >= f.Start
}
