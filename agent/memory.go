package agent

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Memory limit modes (Config.MemoryLimit, --memory-limit). Besides these,
// the setting takes a size: "512MiB", "2GB", "300000000" (bytes).
const (
	// MemoryLimitContainer (the default; "" means the same) sets Go's soft
	// memory limit to 80 % of the container's memory limit (cgroup v2
	// memory.max or v1 memory.limit_in_bytes) when one is set, so that the
	// runtime collects harder before the kernel kills the process, and
	// otherwise leaves the runtime alone. GOMEMLIMIT, when set, wins.
	MemoryLimitContainer = "container"
	// MemoryLimitAuto also keeps the soft limit at 1.5 times the live heap
	// (at least 64 MiB, at most the container cap): RSS stays closer to the
	// catalog's real size, at the price of more collections, so more CPU
	// per write as the catalog grows. Opt-in (docs/operations.md).
	MemoryLimitAuto = "auto"
	// MemoryLimitOff leaves the runtime alone, container or not.
	MemoryLimitOff = "off"
)

// containerShare is the part of a container's memory limit the Go heap is
// allowed: the rest is for stacks, the mapped Raft log and the kernel.
const containerShare = 0.8

// autoFloor is the smallest limit auto mode sets: below it a small heap
// would be collected all the time for nothing.
const autoFloor = 64 << 20

// autoPeriod is how often auto mode follows the live heap.
const autoPeriod = time.Second

// memoryPolicy is a parsed Config.MemoryLimit.
type memoryPolicy struct {
	mode  string // container, auto, off or fixed
	fixed int64  // bytes, in mode "fixed"
}

func parseMemoryLimit(s string) (memoryPolicy, error) {
	switch s = strings.TrimSpace(s); strings.ToLower(s) {
	case "", MemoryLimitContainer:
		return memoryPolicy{mode: MemoryLimitContainer}, nil
	case MemoryLimitAuto, MemoryLimitOff:
		return memoryPolicy{mode: strings.ToLower(s)}, nil
	}
	n, err := parseBytes(s)
	if err != nil || n <= 0 {
		return memoryPolicy{}, fmt.Errorf("agent: memory limit %q: want container, auto, off or a size such as 512MiB", s)
	}
	return memoryPolicy{mode: "fixed", fixed: n}, nil
}

// parseBytes reads a size: digits with an optional B, KB, MB, GB (powers
// of 1000) or KiB, MiB, GiB (powers of 1024) suffix.
func parseBytes(s string) (int64, error) {
	units := []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"B", 1}}
	mult := int64(1)
	for _, u := range units {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, err
	}
	if n > math.MaxInt64/mult {
		return 0, fmt.Errorf("too large")
	}
	return n * mult, nil
}

// containerLimit returns the memory limit of the cgroup the process runs
// in, read under root (/sys/fs/cgroup), or 0 when there is none.
func containerLimit(root string) int64 {
	// The process's own cgroup, from /proc/self/cgroup ("0::/PATH" for v2,
	// "N:memory:/PATH" for v1), else the root of the mount (what a
	// container's cgroup namespace shows).
	var paths []string
	if b, err := os.ReadFile("/proc/self/cgroup"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if p, ok := strings.CutPrefix(line, "0::"); ok {
				paths = append(paths, filepath.Join(root, p, "memory.max"))
			} else if f := strings.SplitN(line, ":", 3); len(f) == 3 && f[1] == "memory" {
				paths = append(paths, filepath.Join(root, "memory", f[2], "memory.limit_in_bytes"))
			}
		}
	}
	paths = append(paths, filepath.Join(root, "memory.max"), filepath.Join(root, "memory", "memory.limit_in_bytes"))
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		v := strings.TrimSpace(string(b))
		if v == "max" {
			return 0
		}
		n, err := strconv.ParseInt(v, 10, 64)
		// cgroup v1 reports "no limit" as a huge number near MaxInt64.
		if err != nil || n <= 0 || n >= math.MaxInt64/2 {
			return 0
		}
		return n
	}
	return 0
}

// autoLimit is auto mode's limit for a live heap of live bytes under cap
// (0: none).
func autoLimit(live, cap int64) int64 {
	l := max(live+live/2, autoFloor)
	if cap > 0 {
		l = min(l, cap)
	}
	return l
}

// liveHeap returns the heap the last GC found live, in bytes.
func liveHeap() int64 {
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return int64(s[0].Value.Uint64())
}

// memLimitMu serialises the agents of one process over the runtime's one
// soft memory limit (tests run several agents in a process).
var memLimitMu sync.Mutex

// memoryLimiter owns the runtime's soft memory limit for an agent: it sets
// it at start, follows the live heap in auto mode, and puts back the limit
// it found when the agent stops (unless someone changed it meanwhile).
type memoryLimiter struct {
	prev, set int64
	stop      chan struct{}
	done      chan struct{}
}

// startMemoryLimit applies policy p with the container limit found under
// cgroupRoot. It returns nil when it leaves the runtime alone.
func startMemoryLimit(p memoryPolicy, cgroupRoot string, period time.Duration, logger hclog.Logger) *memoryLimiter {
	if p.mode == MemoryLimitOff {
		return nil
	}
	memLimitMu.Lock()
	defer memLimitMu.Unlock()
	prev := debug.SetMemoryLimit(-1)
	cap := int64(0)
	if c := containerLimit(cgroupRoot); c > 0 {
		cap = int64(float64(c) * containerShare)
	}
	if os.Getenv("GOMEMLIMIT") != "" && prev < math.MaxInt64 {
		cap = prev // the operator's own limit is the ceiling
	}
	m := &memoryLimiter{prev: prev}
	switch p.mode {
	case "fixed":
		m.set = p.fixed
	case MemoryLimitAuto:
		m.set = autoLimit(liveHeap(), cap)
	default: // container
		if cap == 0 || cap == prev {
			return nil
		}
		m.set = cap
	}
	debug.SetMemoryLimit(m.set)
	logger.Info("Go soft memory limit set", "mode", p.mode, "limit_bytes", m.set, "container_cap_bytes", cap)
	if p.mode == MemoryLimitAuto {
		m.stop, m.done = make(chan struct{}), make(chan struct{})
		go m.follow(cap, period)
	}
	return m
}

// follow keeps the limit at autoLimit of the live heap until stopped.
func (m *memoryLimiter) follow(cap int64, period time.Duration) {
	defer close(m.done)
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-t.C:
		}
		l := autoLimit(liveHeap(), cap)
		memLimitMu.Lock()
		// Someone else (another agent, the embedding program) changed it:
		// they own it now.
		if debug.SetMemoryLimit(-1) == m.set {
			debug.SetMemoryLimit(l)
			m.set = l
		}
		memLimitMu.Unlock()
	}
}

// close stops following the heap and restores the limit found at start.
func (m *memoryLimiter) close() {
	if m == nil {
		return
	}
	if m.stop != nil {
		close(m.stop)
		<-m.done
	}
	memLimitMu.Lock()
	defer memLimitMu.Unlock()
	if debug.SetMemoryLimit(-1) == m.set {
		debug.SetMemoryLimit(m.prev)
	}
}
