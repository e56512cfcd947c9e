package api

import (
	"math"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// maxRateClients bounds the clients the write limiter remembers. Beyond
// it, clients idle long enough to have a full bucket again are forgotten
// first (forgetting them changes nothing), then arbitrary ones.
const maxRateClients = 1 << 16

// writeLimiter is a token bucket per client for writes. A client is a
// remote IP; IPv6 addresses count per /64, the block one host usually has.
type writeLimiter struct {
	limit rate.Limit
	burst int
	// refill is how long an idle client takes to have a full bucket.
	refill time.Duration

	mu      sync.Mutex
	clients map[netip.Addr]*clientBucket
}

type clientBucket struct {
	lim  *rate.Limiter
	last time.Time
}

// newWriteLimiter returns a limiter of perSecond writes with bursts of
// burst, or nil when perSecond <= 0 (no limit).
func newWriteLimiter(perSecond float64, burst int) *writeLimiter {
	if perSecond <= 0 {
		return nil
	}
	if burst < 1 {
		burst = max(1, int(math.Ceil(perSecond)))
	}
	return &writeLimiter{
		limit: rate.Limit(perSecond), burst: burst,
		refill:  time.Duration(float64(burst) / perSecond * float64(time.Second)),
		clients: map[netip.Addr]*clientBucket{},
	}
}

// clientKey maps a remote IP to the key its bucket is kept under.
func clientKey(ip string) netip.Addr {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return netip.Addr{}
	}
	a = a.Unmap()
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.Addr()
	}
	return a
}

// allow takes one write from ip's bucket. When the bucket is empty it
// returns false and how long until a write would be allowed.
func (l *writeLimiter) allow(ip string, now time.Time) (bool, time.Duration) {
	key := clientKey(ip)
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.clients[key]
	if b == nil {
		if len(l.clients) >= maxRateClients {
			l.evict(now)
		}
		b = &clientBucket{lim: rate.NewLimiter(l.limit, l.burst)}
		l.clients[key] = b
	}
	b.last = now
	res := b.lim.ReserveN(now, 1)
	if d := res.DelayFrom(now); d > 0 {
		res.CancelAt(now)
		return false, d
	}
	return true, 0
}

// evict forgets clients whose buckets have refilled, or else some client.
func (l *writeLimiter) evict(now time.Time) {
	for k, b := range l.clients {
		if now.Sub(b.last) > l.refill {
			delete(l.clients, k)
		}
	}
	for k := range l.clients {
		if len(l.clients) < maxRateClients {
			break
		}
		delete(l.clients, k)
	}
}

// retryAfter formats a wait as the whole seconds of a Retry-After header.
func retryAfter(d time.Duration) string {
	return strconv.Itoa(max(1, int(math.Ceil(d.Seconds()))))
}
