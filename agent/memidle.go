package agent

import (
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
)

// DefaultMemoryIdleRelease is how long a process must be quiet before the
// heap it keeps beyond its live data goes back to the OS
// (Config.MemoryIdleRelease).
const DefaultMemoryIdleRelease = 500 * time.Millisecond

// minMemoryIdleRelease is the shortest period Config.Validate accepts: the
// releaser reads the runtime's metrics once a period.
const minMemoryIdleRelease = 10 * time.Millisecond

// Idle release. Go's collector lets the heap grow to twice what the last
// collection found live (GOGC 100) and keeps the pages it freed for the next
// growth: after a burst of registrations a node's RSS stays near twice its
// catalog for as long as it then sits idle, which for a registry is most of
// the time. The idle releaser watches how much the process allocates; once
// it has allocated almost nothing for a whole period while its heap has
// grown well past what it held after the last release, it collects and
// returns the free pages at once (debug.FreeOSMemory). Under load it does
// nothing, so it costs no CPU where CPU matters; while idle it costs one
// collection per burst (or per quarter of the live heap, at least
// idleMinWaste, of garbage from a trickle). See docs/operations.md.
const (
	// idleAllocPerSecond is the allocation rate below which the process
	// counts as quiet. An idle three-node cluster's follower allocates
	// ~0.1 MB/s and its leader ~0.5 MB/s (mostly the leader's empty
	// AppendEntries every CommitTimeout; 0.4-0.55 MB/s per follower while
	// memberlist's transport took 64 KiB per gossip packet, 0.8-1.1 MB/s,
	// at the threshold, while gossip was also compressed); a node taking a
	// thousand registrations a second allocates several MB/s.
	idleAllocPerSecond = 1 << 20
	// idleMinWaste is the least growth of the heap held since the last
	// release that is worth a collection; idleWasteShare of the live heap
	// is the other threshold, so a big catalog is not collected for a
	// little garbage.
	idleMinWaste   = 4 << 20
	idleWasteShare = 4 // a quarter of the live heap
)

// memSample is what the idle releaser reads of the runtime.
type memSample struct {
	allocs uint64 // bytes allocated since the process started
	live   uint64 // the heap the last collection found live
	held   uint64 // heap pages the process holds: objects, unused and free spans not yet returned
}

var memSampleNames = []string{
	"/gc/heap/allocs:bytes",
	"/gc/heap/live:bytes",
	"/memory/classes/heap/objects:bytes",
	"/memory/classes/heap/unused:bytes",
	"/memory/classes/heap/free:bytes",
}

func readMemSample() memSample {
	s := make([]metrics.Sample, len(memSampleNames))
	for i, n := range memSampleNames {
		s[i].Name = n
	}
	metrics.Read(s)
	v := func(i int) uint64 {
		if s[i].Value.Kind() != metrics.KindUint64 {
			return 0
		}
		return s[i].Value.Uint64()
	}
	return memSample{allocs: v(0), live: v(1), held: v(2) + v(3) + v(4)}
}

// idlePolicy decides, from two samples a period apart, whether to release.
type idlePolicy struct {
	period     time.Duration
	quietBytes uint64 // allocation within a period below which it is quiet
	minWaste   uint64
}

func newIdlePolicy(period time.Duration) idlePolicy {
	return idlePolicy{
		period:     period,
		quietBytes: uint64(float64(idleAllocPerSecond) * period.Seconds()),
		minWaste:   idleMinWaste,
	}
}

// due reports whether the process was quiet between prev and cur and its
// heap has grown enough since floor, what it held just after the last
// release (0 before the first), to be worth a collection. The live heap
// does not serve as the base: the last collection's figure counts what was
// allocated while it ran, so right after a burst it can sit near the heap
// held although most of that is already garbage; and a collection cannot
// return the spans that live objects keep part-used, which the floor
// includes, so measuring from the live heap would collect again at every
// quiet tick for nothing. The live heap sets the threshold: a quarter of
// it, at least idleMinWaste.
func (p idlePolicy) due(prev, cur memSample, floor uint64) bool {
	if cur.allocs-prev.allocs > p.quietBytes {
		return false
	}
	if cur.held <= floor {
		return false
	}
	return cur.held-floor >= max(p.minWaste, cur.live/idleWasteShare)
}

// idleReleaser is the process's one idle releaser: agents in one process
// (tests, an embedding program) share it; the first to start it sets its
// period and the last to stop it ends it.
type idleReleaser struct {
	policy   idlePolicy
	logger   hclog.Logger
	stop     chan struct{}
	done     chan struct{}
	users    int
	releases atomic.Uint64
	released atomic.Uint64 // bytes returned, as the held heap fell
}

var (
	idleMu  sync.Mutex
	idleRel *idleReleaser
)

// idleHandle is an agent's use of the process's idle releaser.
type idleHandle struct{ r *idleReleaser }

// startIdleRelease starts (or joins) the process's idle releaser with the
// given quiet period; 0 or less starts nothing and returns nil.
func startIdleRelease(period time.Duration, logger hclog.Logger) *idleHandle {
	if period <= 0 {
		return nil
	}
	idleMu.Lock()
	defer idleMu.Unlock()
	if idleRel == nil {
		idleRel = &idleReleaser{policy: newIdlePolicy(period), logger: logger,
			stop: make(chan struct{}), done: make(chan struct{})}
		go idleRel.run()
	}
	idleRel.users++
	return &idleHandle{r: idleRel}
}

// close leaves the releaser, stopping it when this was its last user.
func (h *idleHandle) close() {
	if h == nil || h.r == nil {
		return
	}
	idleMu.Lock()
	r := h.r
	h.r = nil
	r.users--
	last := r.users == 0
	if last && idleRel == r {
		idleRel = nil
	}
	idleMu.Unlock()
	if last {
		close(r.stop)
		<-r.done
	}
}

func (r *idleReleaser) run() {
	defer close(r.done)
	t := time.NewTicker(r.policy.period)
	defer t.Stop()
	prev := readMemSample()
	var floor uint64 // held just after the last release, following it down
	for {
		select {
		case <-r.stop:
			return
		case <-t.C:
		}
		cur := readMemSample()
		floor = min(floor, cur.held)
		if r.policy.due(prev, cur, floor) {
			start := time.Now()
			debug.FreeOSMemory()
			after := readMemSample()
			var freed uint64
			if cur.held > after.held {
				freed = cur.held - after.held
			}
			r.releases.Add(1)
			r.released.Add(freed)
			r.logger.Debug("idle: heap returned to the OS", "held_bytes", cur.held, "live_bytes", after.live,
				"returned_bytes", freed, "took", time.Since(start))
			cur, floor = after, after.held
		}
		prev = cur
	}
}

// collectors returns the releaser's counters, for an agent's registry
// (none for a nil handle: the releaser is off).
func (h *idleHandle) collectors() []prometheus.Collector {
	if h == nil || h.r == nil {
		return nil
	}
	r := h.r
	return []prometheus.Collector{
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "beacon_memory_idle_releases_total",
			Help: "Times the process, quiet with its heap grown well past what it held after the last release, collected and returned its free heap to the OS (--memory-idle-release; shared by the agents of one process).",
		}, func() float64 { return float64(r.releases.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "beacon_memory_idle_released_bytes_total",
			Help: "Heap bytes the idle releases returned to the OS (the held heap's fall across each release).",
		}, func() float64 { return float64(r.released.Load()) }),
	}
}
