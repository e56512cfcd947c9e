package lb

import (
	"slices"
	"sync/atomic"
	"time"
)

// instanceState is what the balancer learns about an instance from the
// traffic it sends there. It outlives routing tables: a service's follower
// keeps one per instance ID while the instance is registered, and every
// table built meanwhile points at it. All fields are atomics, so the request
// path updates them without locks.
type instanceState struct {
	inflight atomic.Int64
	requests atomic.Uint64
	failures atomic.Uint64
	// consecutive counts failures since the last success.
	consecutive atomic.Int64
	// ejectedUntil is when the current ejection ends (unix nanoseconds; in
	// the past when not ejected).
	ejectedUntil atomic.Int64
	// level is how many ejections in a row the instance has had; each
	// doubles the ejection time. It decays once the instance has behaved
	// for EjectMax after its last ejection.
	level    atomic.Int64
	ejection atomic.Uint64 // ejections in total
	// series are the instance's attempt series (metrics.attempt).
	series atomic.Pointer[instSeries]
}

// outlierStatus reports whether a response status counts as a failure for
// outlier ejection: any 5xx (Envoy's consecutive_5xx) unless EjectOn5xx is
// off, and then the RetryStatuses (gateway failures). Retries stay limited
// to the RetryStatuses: a 500 may have changed something.
func (c *Config) outlierStatus(code int) bool {
	return (c.EjectOn5xx && code >= 500 && code <= 599) || slices.Contains(c.RetryStatuses, code)
}

// ejected reports whether the instance is ejected at now (unix nanoseconds).
func (s *instanceState) ejected(now int64) bool { return s.ejectedUntil.Load() > now }

// succeed records a good response.
func (s *instanceState) succeed(now int64, cfg *Config) {
	// Loads before stores keep the hot path free of writes to shared
	// cache lines when nothing changes.
	if s.consecutive.Load() != 0 {
		s.consecutive.Store(0)
	}
	if lvl := s.level.Load(); lvl > 0 && now > s.ejectedUntil.Load()+int64(cfg.EjectMax) {
		s.level.CompareAndSwap(lvl, 0)
	}
}

// fail records a failure and ejects the instance when it has failed
// EjectAfter times in a row and canEject allows one more ejection. It
// returns the ejection's duration when it ejected the instance.
func (s *instanceState) fail(now int64, cfg *Config, canEject func() bool) time.Duration {
	s.failures.Add(1)
	n := s.consecutive.Add(1)
	if cfg.EjectAfter <= 0 || n < int64(cfg.EjectAfter) {
		return 0
	}
	until := s.ejectedUntil.Load()
	if until > now || !canEject() {
		return 0
	}
	lvl := s.level.Load()
	d := ejectionTime(cfg, lvl)
	// One of the requests failing at once wins the ejection.
	if !s.ejectedUntil.CompareAndSwap(until, now+int64(d)) {
		return 0
	}
	s.level.Store(lvl + 1)
	s.consecutive.Store(0)
	s.ejection.Add(1)
	return d
}

// ejectionTime is EjectBase doubled per earlier ejection, capped at EjectMax.
func ejectionTime(cfg *Config, level int64) time.Duration {
	d := cfg.EjectBase
	for i := int64(0); i < level && d < cfg.EjectMax; i++ {
		d *= 2
	}
	return min(d, cfg.EjectMax)
}

// retryBudget bounds the retries of one service: each request deposits
// RetryBudgetRatio of a token, time deposits RetryBudgetMinPerSecond tokens a
// second, and each retry withdraws one. Tokens are kept in thousandths in an
// atomic, so the request path takes no lock.
type retryBudget struct {
	ratio  int64 // thousandths of a token per request
	perSec float64
	cap    int64
	tokens atomic.Int64
	last   atomic.Int64 // unix nanoseconds of the last time deposit
}

func newRetryBudget(cfg *Config, now time.Time) *retryBudget {
	capTokens := int64(max(cfg.RetryBudgetMinPerSecond*10, 10) * 1000)
	b := &retryBudget{ratio: int64(cfg.RetryBudgetRatio * 1000), perSec: cfg.RetryBudgetMinPerSecond, cap: capTokens}
	b.tokens.Store(capTokens)
	b.last.Store(now.UnixNano())
	return b
}

// deposit credits one request.
func (b *retryBudget) deposit() {
	if b.ratio == 0 || b.tokens.Load() >= b.cap {
		return
	}
	if b.tokens.Add(b.ratio) > b.cap {
		b.tokens.Store(b.cap)
	}
}

// withdraw takes one retry's token, reporting whether there was one.
func (b *retryBudget) withdraw(now int64) bool {
	if last := b.last.Load(); now > last && b.perSec > 0 {
		if b.last.CompareAndSwap(last, now) {
			add := int64(float64(now-last) / float64(time.Second) * b.perSec * 1000)
			if b.tokens.Add(add) > b.cap {
				b.tokens.Store(b.cap)
			}
		}
	}
	for {
		t := b.tokens.Load()
		if t < 1000 {
			return false
		}
		if b.tokens.CompareAndSwap(t, t-1000) {
			return true
		}
	}
}
