package lb

import (
	"fmt"
	"math/rand/v2"
	"sort"
	"strconv"
	"sync/atomic"
)

// Strategy names a balancing strategy. Each service uses one
// (Config.Strategies, default round-robin).
type Strategy string

// The strategies.
const (
	// RoundRobin cycles through the candidates in order, ignoring weights.
	RoundRobin Strategy = "round-robin"
	// Weighted is smooth weighted round-robin (nginx's algorithm) over the
	// candidates' effective weights.
	Weighted Strategy = "weighted"
	// LeastRequests prefers candidates with fewer requests in flight:
	// Envoy's least-request (two random choices when the weights are equal,
	// a draw by weight over load otherwise).
	LeastRequests Strategy = "least-requests"
	// Random draws one candidate at random, weighted.
	Random Strategy = "random"
	// Hash maps a request key (header, cookie or client IP) onto a ring of
	// virtual nodes, so a key keeps its instance and only ~1/N of the keys
	// move when one of N instances leaves.
	Hash Strategy = "hash"
)

// Strategies lists every strategy, for validation and help texts.
var Strategies = []Strategy{RoundRobin, Weighted, LeastRequests, Random, Hash}

// ParseStrategy checks a strategy name.
func ParseStrategy(s string) (Strategy, error) {
	for _, k := range Strategies {
		if string(k) == s {
			return k, nil
		}
	}
	return "", fmt.Errorf("lb: unknown strategy %q (want one of %v)", s, Strategies)
}

// Candidate is what a strategy knows of one instance it may pick.
type Candidate struct {
	ID string
	// Weight is the effective weight (> 0). Hash uses it for the number of
	// virtual nodes, so the table passes the registered weight there.
	Weight float64
	// InFlight counts the requests in flight to the instance; nil counts as
	// zero. Only LeastRequests reads it.
	InFlight *atomic.Int64
}

// Key is a request's hash key for the Hash strategy.
type Key struct {
	Hash  uint64
	Valid bool
}

// KeyOf hashes a request key (a header value, a cookie, a client IP).
func KeyOf(s string) Key { return Key{Hash: hash64(s), Valid: true} }

// Picker chooses one of a fixed list of candidates for each request. Pick
// returns the index of the chosen candidate, or -1 when skip (which may be
// nil) rejects every candidate. Pick does no I/O, takes no locks and is safe
// for concurrent use.
type Picker interface {
	Pick(key Key, skip func(int) bool) int
}

// NewPicker builds strategy s over cands. seq, when not nil, is the counter
// that round-robin and weighted pickers advance; passing the same counter to
// successive pickers of a service keeps the rotation going across table
// rebuilds.
func NewPicker(s Strategy, cands []Candidate, seq *atomic.Uint64) Picker {
	if seq == nil {
		seq = new(atomic.Uint64)
	}
	switch s {
	case Weighted:
		return newWeighted(cands, seq)
	case LeastRequests:
		return newLeastRequests(cands)
	case Random:
		return &randomPicker{w: newWeightedDraw(cands)}
	case Hash:
		return newHashRing(cands)
	default:
		return &roundRobin{n: len(cands), seq: seq}
	}
}

// roundRobin cycles through n candidates.
type roundRobin struct {
	n   int
	seq *atomic.Uint64
}

func (p *roundRobin) Pick(_ Key, skip func(int) bool) int {
	if p.n == 0 {
		return -1
	}
	return nextTurn(p.seq, uint64(p.n), nil, skip)
}

// nextTurn takes the next turn of a rotation of period slots walked with
// the counter seq: counter value k is slot k mod period, which belongs to
// candidate schedule[slot], or to candidate slot itself when schedule is
// nil. It returns -1 when skip rejects every slot's candidate.
//
// A slot whose candidate skip rejects (ejected, already tried, ...) is
// passed over, not handed to a neighbour: the counter moves past it with
// the pick that lands on it, so the candidates left keep their own turns and
// nothing more, as if the skipped ones had left the rotation. For one caller
// picking in turn the shares are exact; concurrent callers claim disjoint
// slots, except in the rare race noted below.
func nextTurn(seq *atomic.Uint64, period uint64, schedule []int32, skip func(int) bool) int {
	owner := func(k uint64) int {
		if schedule == nil {
			return int(k % period)
		}
		return int(schedule[k%period])
	}
	if i := owner(seq.Add(1) - 1); skip == nil || !skip(i) {
		return i
	}
	// The slot taken is a skipped candidate's: claim the slots from the
	// counter on, up to and including the next one whose candidate is not
	// skipped. The counter is moved with a compare-and-swap, so a skipped
	// run is passed over once and its next slot is not picked twice.
	for try := 0; ; try++ {
		from := seq.Load()
		j, i := uint64(0), -1
		for ; j < period; j++ {
			if i = owner(from + j); !skip(i) {
				break
			}
		}
		if j == period {
			return -1
		}
		// After a few lost races under heavy contention, take the slot
		// anyway rather than spin.
		if seq.CompareAndSwap(from, from+j+1) || try == 3 {
			return i
		}
	}
}

// weighted is smooth weighted round-robin. The sequence the algorithm
// produces is computed when the table is built and walked with an atomic
// counter, so picking takes no lock.
type weighted struct {
	schedule []int32
	n        int
	seq      *atomic.Uint64
}

// maxScheduleWork bounds the cost of building a schedule (its length times
// the number of candidates); weights are rounded more coarsely for very
// large services to stay within it.
const maxScheduleWork = 1 << 22

func newWeighted(cands []Candidate, seq *atomic.Uint64) *weighted {
	n := len(cands)
	p := &weighted{n: n, seq: seq}
	if n == 0 {
		return p
	}
	ints := intWeights(cands, max(1, min(1000, maxScheduleWork/(n*n))))
	total := 0
	for _, w := range ints {
		total += w
	}
	// nginx's smooth weighted round-robin: every step each current weight
	// grows by its weight, the largest is picked and loses the total.
	cur := make([]int, n)
	p.schedule = make([]int32, total)
	for s := 0; s < total; s++ {
		best := 0
		for i := range cur {
			cur[i] += ints[i]
			if cur[i] > cur[best] {
				best = i
			}
		}
		cur[best] -= total
		p.schedule[s] = int32(best)
	}
	return p
}

// intWeights scales weights so the largest becomes scale, keeps every one at
// least 1 and divides them by their greatest common divisor.
func intWeights(cands []Candidate, scale int) []int {
	maxW := 0.0
	for _, c := range cands {
		maxW = max(maxW, c.Weight)
	}
	out := make([]int, len(cands))
	g := 0
	for i, c := range cands {
		w := 1
		if maxW > 0 {
			w = max(1, int(c.Weight/maxW*float64(scale)+0.5))
		}
		out[i] = w
		g = gcd(g, w)
	}
	if g > 1 {
		for i := range out {
			out[i] /= g
		}
	}
	return out
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

func (p *weighted) Pick(_ Key, skip func(int) bool) int {
	if p.n == 0 {
		return -1
	}
	// A skipped candidate's slots are passed over (nextTurn): the others
	// keep their smooth interleaving and their shares of each cycle.
	return nextTurn(p.seq, uint64(len(p.schedule)), p.schedule, skip)
}

// weightedDraw draws an index with probability proportional to its weight.
type weightedDraw struct {
	cum   []float64
	total float64
}

func newWeightedDraw(cands []Candidate) weightedDraw {
	d := weightedDraw{cum: make([]float64, len(cands))}
	for i, c := range cands {
		d.total += max(c.Weight, 0)
		d.cum[i] = d.total
	}
	return d
}

func (d *weightedDraw) draw() int {
	if d.total <= 0 {
		return rand.N(len(d.cum))
	}
	x := rand.Float64() * d.total
	i := sort.SearchFloat64s(d.cum, x)
	// SearchFloat64s finds the first cum >= x; a zero-weight entry has the
	// same cum as its predecessor and is never the first.
	return min(i, len(d.cum)-1)
}

// pickDrawn draws until it finds an index skip accepts, then falls back to
// a scan so that a mostly-skipped set still terminates.
func (d *weightedDraw) pickDrawn(skip func(int) bool) int {
	n := len(d.cum)
	if n == 0 {
		return -1
	}
	for try := 0; try < 2*n+2; try++ {
		if i := d.draw(); skip == nil || !skip(i) {
			return i
		}
	}
	start := rand.N(n)
	for j := 0; j < n; j++ {
		if i := (start + j) % n; !skip(i) {
			return i
		}
	}
	return -1
}

type randomPicker struct{ w weightedDraw }

func (p *randomPicker) Pick(_ Key, skip func(int) bool) int { return p.w.pickDrawn(skip) }

// leastRequests is Envoy's least-request balancing. When every candidate has
// the same weight it is the power of two random choices: draw two, take the
// one with fewer requests in flight. When weights differ it draws one
// candidate with probability proportional to its weight divided by its load,
//
//	effective_i = weight_i / (1 + in_flight_i / (weight_i / mean weight))
//
// (Envoy schedules the same kind of effective weight with an EDF queue; a
// random draw needs no lock). Idle candidates are drawn exactly by weight;
// under load the in-flight count is measured against each candidate's share,
// so candidates that answer equally fast keep the weighted split at any
// concurrency, while a slow one, whose requests pile up, loses traffic.
// Drawing by weight and then comparing load per weight would count the
// weight twice: at light load the heaviest candidate would win nearly every
// comparison.
type leastRequests struct {
	cands []Candidate
	w     weightedDraw
	// share[i] is cands[i]'s weight over the mean weight; nil when every
	// weight is equal (the two-choices path).
	share []float64
}

func newLeastRequests(cands []Candidate) *leastRequests {
	p := &leastRequests{cands: cands, w: newWeightedDraw(cands)}
	sum, equal := 0.0, true
	for _, c := range cands {
		sum += weightOf(c)
		equal = equal && weightOf(c) == weightOf(cands[0])
	}
	if !equal {
		mean := sum / float64(len(cands))
		p.share = make([]float64, len(cands))
		for i, c := range cands {
			p.share[i] = weightOf(c) / mean
		}
	}
	return p
}

func weightOf(c Candidate) float64 {
	if c.Weight <= 0 {
		return 1
	}
	return c.Weight
}

func (p *leastRequests) inflight(i int) int64 {
	if f := p.cands[i].InFlight; f != nil {
		return f.Load()
	}
	return 0
}

func (p *leastRequests) Pick(_ Key, skip func(int) bool) int {
	if p.share != nil {
		return p.pickWeighted(skip)
	}
	a := p.w.pickDrawn(skip)
	if a < 0 || len(p.cands) == 1 {
		return a
	}
	b := -1
	for try := 0; try < 4 && b < 0; try++ {
		if i := p.w.pickDrawn(skip); i != a {
			b = i
		}
	}
	if b < 0 {
		// The draws keep landing on a (everything else skipped, or bad
		// luck): compare with its neighbour that is not skipped.
		for j := 1; j < len(p.cands); j++ {
			if i := (a + j) % len(p.cands); skip == nil || !skip(i) {
				b = i
				break
			}
		}
		if b < 0 {
			return a
		}
	}
	if p.inflight(b) < p.inflight(a) {
		return b
	}
	return a
}

// pickWeighted draws by effective weight. It reads every candidate's
// in-flight count once, so its cost grows with the number of candidates.
func (p *leastRequests) pickWeighted(skip func(int) bool) int {
	var stack [64]float64
	eff := stack[:0]
	total := 0.0
	for i, c := range p.cands {
		e := 0.0
		if skip == nil || !skip(i) {
			e = weightOf(c) / (1 + float64(p.inflight(i))/p.share[i])
		}
		eff = append(eff, e)
		total += e
	}
	if total <= 0 {
		return -1
	}
	x := rand.Float64() * total
	last := -1
	for i, e := range eff {
		if e <= 0 {
			continue
		}
		if x -= e; x < 0 {
			return i
		}
		last = i
	}
	return last // rounding left x at or just above zero
}

// hashRing is consistent hashing with virtual nodes.
type hashRing struct {
	points []uint64
	owner  []int32
	n      int
}

// Virtual nodes per unit of weight, and the largest weight the ring
// represents (so one heavy instance cannot blow up the ring).
const (
	vnodesPerWeight = 100
	maxHashWeight   = 32
)

func newHashRing(cands []Candidate) *hashRing {
	type point struct {
		h     uint64
		owner int32
	}
	var pts []point
	for i, c := range cands {
		w := min(max(int(c.Weight+0.5), 1), maxHashWeight)
		for v := 0; v < w*vnodesPerWeight; v++ {
			pts = append(pts, point{hash64(c.ID + "#" + strconv.Itoa(v)), int32(i)})
		}
	}
	sort.Slice(pts, func(a, b int) bool {
		if pts[a].h != pts[b].h {
			return pts[a].h < pts[b].h
		}
		return cands[pts[a].owner].ID < cands[pts[b].owner].ID
	})
	r := &hashRing{points: make([]uint64, len(pts)), owner: make([]int32, len(pts)), n: len(cands)}
	for i, p := range pts {
		r.points[i], r.owner[i] = p.h, p.owner
	}
	return r
}

func (r *hashRing) Pick(key Key, skip func(int) bool) int {
	if r.n == 0 {
		return -1
	}
	if !key.Valid {
		// No key in the request: any instance will do.
		start := rand.N(r.n)
		for j := 0; j < r.n; j++ {
			if i := (start + j) % r.n; skip == nil || !skip(i) {
				return i
			}
		}
		return -1
	}
	at := sort.Search(len(r.points), func(i int) bool { return r.points[i] >= key.Hash })
	for j := 0; j < len(r.points); j++ {
		i := int(r.owner[(at+j)%len(r.points)])
		if skip == nil || !skip(i) {
			return i
		}
	}
	return -1
}

// hash64 is FNV-1a followed by a 64-bit finaliser (splitmix64), so that
// similar strings spread over the whole ring. It is stable across processes:
// every balancer maps a key to the same instance.
func hash64(s string) uint64 {
	x := uint64(14695981039346656037) // FNV-1a offset basis
	for i := 0; i < len(s); i++ {
		x ^= uint64(s[i])
		x *= 1099511628211
	}
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
