package lb

import (
	"context"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
)

// backwardsGrace is how long a follower refuses an index lower than the one
// it has (a registry node that is behind, reached after a fail-over) before
// accepting it as a snapshot restore.
const backwardsGrace = 2 * time.Second

// registryState is a follower's view of its connection to the registry.
type registryState struct {
	Connected bool
	Source    Source
	// LastSuccess is when a read last succeeded; LastError and ErrorSince
	// describe the failures since then.
	LastSuccess time.Time
	LastError   string
	ErrorSince  time.Time
	Failures    int
}

// readLoop runs blocking reads until ctx ends: read(index) returns the new
// index and applies the answer. It backs off between failures, refuses
// indexes that go backwards for backwardsGrace, and records its
// connectivity in state: connected from the moment a read answers. After a
// failure it reads without waiting (index 0), so that state says connected
// as soon as a registry node answers again, not once a change or the end
// of a wait lets a blocking read return.
func readLoop(ctx context.Context, cfg *Config, logger hclog.Logger, state *atomic.Pointer[registryState],
	read func(ctx context.Context, index uint64) (uint64, Source, func(), error)) {
	var index uint64
	backoff := cfg.RegistryBackoffMin
	var backwardsSince time.Time
	failed := false
	for ctx.Err() == nil {
		at := index
		if failed {
			at = 0
		}
		next, src, apply, err := read(ctx, at)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			failed = true
			old := state.Load()
			st := *old
			if st.Connected || st.Failures == 0 {
				st.ErrorSince = time.Now()
				logger.Warn("registry read failed; serving the last table", "error", err)
			}
			st.Connected, st.LastError = false, err.Error()
			st.Failures++
			state.Store(&st)
			sleep(ctx, backoff/2+rand.N(backoff/2+1))
			backoff = min(backoff*2, cfg.RegistryBackoffMax)
			continue
		}
		backoff, failed = cfg.RegistryBackoffMin, false
		if next == 0 {
			next = 1 // an index of 0 would make the next read return at once
		}
		old := state.Load()
		if !old.Connected && old.Failures > 0 {
			logger.Info("registry reachable again", "source", src.Node)
		}
		state.Store(&registryState{Connected: true, Source: src, LastSuccess: time.Now()})
		if next < index {
			if backwardsSince.IsZero() {
				backwardsSince = time.Now()
			}
			if time.Since(backwardsSince) < backwardsGrace {
				// A node behind the one we read before: wait for it to catch up.
				sleep(ctx, 50*time.Millisecond)
				continue
			}
			logger.Warn("registry index went backwards; accepting it", "from", index, "to", next)
		}
		backwardsSince = time.Time{}
		if next != index {
			apply()
		}
		index = next
	}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// service is one followed service: its current table, the state it keeps
// about its instances across tables, and the follower goroutine that keeps
// the table current.
type service struct {
	name   string
	b      *Balancer
	table  atomic.Pointer[Table]
	seq    atomic.Uint64
	budget *retryBudget
	reg    atomic.Pointer[registryState]
	// no-instance answers, retries and the like, for metrics.
	unavailable atomic.Uint64
	retries     atomic.Uint64
	budgetOut   atomic.Uint64
	panicking   atomic.Bool

	cancel context.CancelFunc
	done   chan struct{}

	mu      sync.Mutex // guards what follows; the builder's, never the request path's
	last    *InstanceList
	states  map[string]*instanceState
	timer   *time.Timer
	stopped bool
}

func newService(b *Balancer, name string) *service {
	s := &service{name: name, b: b, budget: newRetryBudget(&b.cfg, time.Now()), states: map[string]*instanceState{}, done: make(chan struct{})}
	s.reg.Store(&registryState{})
	return s
}

// run follows the service until ctx ends.
func (s *service) run(ctx context.Context) {
	defer close(s.done)
	logger := s.b.logger.With("service", s.name)
	readLoop(ctx, &s.b.cfg, logger, &s.reg, func(ctx context.Context, index uint64) (uint64, Source, func(), error) {
		list, err := s.b.catalog.Instances(ctx, s.name, index)
		if err != nil {
			return 0, Source{}, nil, err
		}
		return list.Index, list.Source, func() { s.update(list) }, nil
	})
	s.mu.Lock()
	s.stopped = true
	if s.timer != nil {
		s.timer.Stop()
	}
	s.mu.Unlock()
}

// update installs a new instance list.
func (s *service) update(list *InstanceList) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.last = list
	// Forget the state of instances that left.
	keep := make(map[string]bool, len(list.Backends))
	for _, b := range list.Backends {
		keep[b.ID] = true
	}
	for id := range s.states {
		if !keep[id] {
			delete(s.states, id)
		}
	}
	s.rebuildLocked()
}

// rebuildLocked builds and swaps in a table from the last list, and arms
// the slow start timer when a ramp is in progress.
func (s *service) rebuildLocked() {
	if s.stopped || s.last == nil {
		return
	}
	now := time.Now()
	t := buildTable(s.name, s.last, &s.b.cfg, s.stateLocked, &s.seq, now)
	old := s.table.Swap(t)
	if s.timer != nil {
		s.timer.Stop()
		s.timer = nil
	}
	if !t.rebuildAt.IsZero() {
		s.timer = time.AfterFunc(t.rebuildAt.Sub(now), func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			s.rebuildLocked()
		})
	}
	s.b.logger.Debug("routing table updated", "service", s.name, "index", t.index, "mode", t.mode,
		"routed", len(t.routed), "registered", len(t.entries), "source", t.source.Node)
	wasPanic := s.panicking.Swap(t.mode == ModePanic)
	switch {
	case t.mode == ModePanic && !wasPanic:
		s.b.logger.Warn("panic mode: too few instances passing, routing to all", "service", s.name, "passing", t.passing, "available", t.available)
	case t.mode != ModePanic && wasPanic:
		s.b.logger.Info("panic mode over", "service", s.name, "passing", t.passing, "available", t.available)
	}
	if old == nil || !samePrefixes(old.prefixes, t.prefixes) {
		s.b.rebuildRoutes()
	}
	s.b.notify()
}

// stateLocked returns the shared state of instance id, creating it.
func (s *service) stateLocked(id string) *instanceState {
	st := s.states[id]
	if st == nil {
		st = &instanceState{}
		s.states[id] = st
	}
	return st
}

func samePrefixes(a, b []routePrefix) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
