package api

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-memdb"
)

// Response headers of every read.
const (
	HeaderIndex       = "X-Beacon-Index"
	HeaderKnownLeader = "X-Beacon-Known-Leader"
	HeaderLastContact = "X-Beacon-Last-Contact"
)

// queryOptions are the consistency and blocking parameters of a read.
type queryOptions struct {
	consistent bool
	maxStale   time.Duration // 0: not set
	minIndex   uint64        // 0: not blocking
	wait       time.Duration
}

func (s *Server) parseQuery(q url.Values) (queryOptions, error) {
	var o queryOptions
	var err error
	if o.consistent, err = boolParam(q, "consistent"); err != nil {
		return o, err
	}
	if v := q.Get("max_stale"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return o, invalid("max_stale", "must be a positive duration such as 5s")
		}
		o.maxStale = d
	}
	if o.consistent && o.maxStale > 0 {
		return o, invalid("max_stale", "cannot be combined with consistent")
	}
	if v := q.Get("index"); v != "" {
		idx, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return o, invalid("index", "must be a non-negative integer")
		}
		o.minIndex = idx
	}
	o.wait = s.cfg.DefaultWait
	if v := q.Get("wait"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			return o, invalid("wait", "must be a duration such as 30s")
		}
		if d > 0 {
			o.wait = min(d, s.cfg.MaxWait)
		}
	}
	return o, nil
}

// aRead is one read: its query and its answer (runQuery).
type aRead interface {
	// query runs the read on this node's store, keeps its result and
	// returns its index; it must add to ws (nil for a read that does not
	// block) every channel that closes when its result may change.
	query(ws memdb.WatchSet) (uint64, error)
	// answer writes the result of the last query.
	answer(w http.ResponseWriter)
}

// memoRead is a read whose results compare: a blocked query that woke to a
// new index keeps waiting while its result is still the one the client has
// (the result at the client's index), so a change to records the read
// filters out wakes nobody.
type memoRead interface {
	aRead
	// keep remembers the latest result as the one the client has.
	keep()
	// same reports whether the latest result equals the kept one.
	same() bool
}

// resultMemo is keep and same as closures (runQueryFuncs).
type resultMemo struct {
	keep func()
	same func() bool
}

// funcRead is a read made of closures, for the routes read less often than
// discovery (their closures and what they capture are allocated on every
// request: a parked query keeps them).
type funcRead struct {
	q func(ws memdb.WatchSet) (uint64, error)
	a func(w http.ResponseWriter)
}

func (f *funcRead) query(ws memdb.WatchSet) (uint64, error) { return f.q(ws) }
func (f *funcRead) answer(w http.ResponseWriter)            { f.a(w) }

type memoFuncRead struct {
	funcRead
	memo *resultMemo
}

func (f *memoFuncRead) keep()      { f.memo.keep() }
func (f *memoFuncRead) same() bool { return f.memo.same() }

// runQueryFuncs is runQuery for a read made of closures; memo may be nil.
func (s *Server) runQueryFuncs(w http.ResponseWriter, r *http.Request, q url.Values, query func(ws memdb.WatchSet) (uint64, error), memo *resultMemo, answer func(w http.ResponseWriter)) {
	if memo != nil {
		s.runQuery(w, r, q, &memoFuncRead{funcRead{query, answer}, memo})
		return
	}
	s.runQuery(w, r, q, &funcRead{query, answer})
}

// BlockingStats counts this node's blocking queries.
type BlockingStats struct {
	// Active is how many blocking queries are waiting now.
	Active int64
	// Parked is how many of them wait out of net/http (Block): the rest
	// wait in their handlers (HTTP/1.0, Connection: close, Handler).
	Parked int64
	// Wakeups counts watch sets that fired: each is one re-run of a blocked
	// query, whether or not its result had changed.
	Wakeups uint64
	// Rejected counts blocking queries refused (429) because MaxBlockingQueries
	// were already waiting.
	Rejected uint64
}

// parkedNow is how many queries wait in the parking lot.
func (s *Server) parkedNow() int64 {
	if l := s.lot.Load(); l != nil {
		return int64(l.count())
	}
	return 0
}

// blockingCounters are the live counters behind BlockingStats.
type blockingCounters struct {
	active   atomic.Int64
	wakeups  atomic.Uint64
	rejected atomic.Uint64
}

// BlockingStats returns the current blocking-query counters. It is safe for
// concurrent use.
func (s *Server) BlockingStats() BlockingStats {
	return BlockingStats{
		Active:   s.blocking.active.Load(),
		Parked:   s.parkedNow(),
		Wakeups:  s.blocking.wakeups.Load(),
		Rejected: s.blocking.rejected.Load(),
	}
}

func (s *Server) errTooManyBlocking() error {
	return &statusError{http.StatusTooManyRequests, "too_many_blocking_queries",
		fmt.Sprintf("this node already holds %d blocking queries (its limit); retry later or on another node", s.cfg.MaxBlockingQueries)}
}

// runQuery runs the read rd under its consistency mode and, when the
// request carries ?index=N, blocks until the result's index passes N or the
// wait ends; then it sets the read headers and calls rd.answer to write
// the result (or writes the error). A read that is a memoRead keeps
// waiting while its result is the client's.
//
// A query that has to wait is parked (Block): the handler returns at once
// and rd runs later in another goroutine, with another ResponseWriter. rd
// must hold what it needs, not the handler's w or r's context.
//
// A blocked query returns early when the store is replaced by a snapshot
// restore. A client index above the result's answers at once, unless this
// node has that index in its Raft log without having applied it yet: then
// the query waits for the node to catch up (and for a change past it).
func (s *Server) runQuery(w http.ResponseWriter, r *http.Request, q url.Values, rd aRead) {
	o, ok := s.readOptions(w, r, q)
	if !ok {
		return
	}
	if o.minIndex == 0 {
		idx, err := rd.query(nil)
		s.finishQuery(w, idx, err, rd)
		return
	}
	s.blockingQuery(w, r, o, rd)
}

// readOptions parses a read's parameters and, for a consistent read (or
// one too stale for its max_stale), waits for this node to have applied
// the leader's read index. It writes the error and returns false if it
// cannot.
func (s *Server) readOptions(w http.ResponseWriter, r *http.Request, q url.Values) (queryOptions, bool) {
	o, err := s.parseQuery(q)
	if err != nil {
		writeError(w, err)
		return o, false
	}
	if o.consistent || (o.maxStale > 0 && s.cluster.LastContact() > o.maxStale) {
		// Asked to be linearizable, or too stale: obtain a read index from
		// the leader (a quorum round trip) and wait to have applied it.
		if _, err := s.cluster.ConsistentIndex(r.Context()); err != nil {
			writeError(w, err)
			return o, false
		}
	}
	return o, true
}

// blockingQuery is runQuery's read with ?index=N (o.minIndex > 0).
func (s *Server) blockingQuery(w http.ResponseWriter, r *http.Request, o queryOptions, rd aRead) {
	if s.blocking.active.Add(1) > int64(s.cfg.MaxBlockingQueries) {
		s.blocking.active.Add(-1)
		s.blocking.rejected.Add(1)
		writeError(w, s.errTooManyBlocking())
		return
	}
	b := &blockedQuery{s: s, o: o, rd: rd, generation: s.store.AbandonCh()}
	b.memo, _ = rd.(memoRead)
	ws, idx, err, ready := b.step()
	if ready {
		s.blocking.active.Add(-1)
		s.finishQuery(w, idx, err, rd)
		return
	}
	Block(w, r, time.Now().Add(o.wait+rand.N(o.wait/16+1)), ws, func(w http.ResponseWriter, err error) memdb.WatchSet {
		switch {
		case err == nil:
			// A watch fired: run the query again.
			s.blocking.wakeups.Add(1)
			var ready bool
			var next memdb.WatchSet
			if next, idx, err, ready = b.step(); !ready {
				return next
			}
			s.finishQuery(w, idx, err, rd)
		case s.base.Err() != nil:
			writeError(w, errShuttingDown)
		case errors.Is(err, context.DeadlineExceeded):
			// The wait ended: answer with the result as it is.
			s.finishQuery(w, idx, nil, rd)
		default:
			writeError(w, err) // the client went away
		}
		s.blocking.active.Add(-1)
		return nil
	})
}

// finishQuery answers a read: its headers, then its result or err.
func (s *Server) finishQuery(w http.ResponseWriter, idx uint64, err error, rd aRead) {
	s.setReadHeaders(w, max(idx, 1))
	if err != nil {
		// A read that found nothing (404) still says how fresh that is.
		writeError(w, err)
		return
	}
	rd.answer(w)
}

// blockedQuery is a read with ?index=N between its runs.
type blockedQuery struct {
	s          *Server
	o          queryOptions
	rd         aRead
	memo       memoRead // rd, if its results compare
	kept       bool
	generation <-chan struct{}
}

// step runs the query once. ready says the result (or err) is the answer;
// otherwise the query waits on ws, and idx is the answer if the wait ends
// first.
func (b *blockedQuery) step() (ws memdb.WatchSet, idx uint64, err error, ready bool) {
	s, o := b.s, b.o
	ws = memdb.NewWatchSet()
	idx, err = b.rd.query(ws)
	if err != nil {
		return nil, idx, err, true
	}
	idx = max(idx, 1)
	if b.memo != nil && idx == o.minIndex && !b.kept {
		// This is what the client has: the same records at its index.
		b.memo.keep()
		b.kept = true
	}
	changed := idx > o.minIndex && (!b.kept || !b.memo.same())
	// A result behind the client's index: if this node has not applied
	// that index yet but has it in its log, it is lagging and catches up
	// in a moment: wait for it, so the client never goes back in time.
	// Otherwise the index went back (a restore) or is not one this node
	// knows (another cluster, a made-up value): answer now.
	catchingUp := false
	if idx < o.minIndex {
		applied := s.store.AppliedIndex()
		catchingUp = applied < o.minIndex && o.minIndex <= s.cluster.LastIndex()
		if catchingUp {
			ws.Add(s.store.AppliedCh())
		}
	}
	ready = changed || (idx < o.minIndex && !catchingUp) || isClosed(b.generation)
	return ws, idx, nil, ready
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

var (
	headerIndex       = http.CanonicalHeaderKey(HeaderIndex)
	headerKnownLeader = http.CanonicalHeaderKey(HeaderKnownLeader)
	headerLastContact = http.CanonicalHeaderKey(HeaderLastContact)
	valTrue           = []string{"true"}
	valFalse          = []string{"false"}
)

func (s *Server) setReadHeaders(w http.ResponseWriter, idx uint64) {
	h := w.Header()
	h[headerIndex] = []string{strconv.FormatUint(idx, 10)}
	// The shared slices are never modified: net/http only reads them.
	if s.cluster.KnownLeader() {
		h[headerKnownLeader] = valTrue
	} else {
		h[headerKnownLeader] = valFalse
	}
	lc := s.cluster.LastContact()
	ms := lc.Milliseconds()
	if lc == time.Duration(1<<63-1) {
		ms = -1
	}
	h[headerLastContact] = msValue(ms)
}

// smallMs are the header values of 0 to 1023 ms, shared (header values are
// only read): a follower in touch with its leader reports a few, and a
// value per read allocated twice.
var smallMs = func() (t [1024][]string) {
	for i := range t {
		t[i] = []string{strconv.Itoa(i)}
	}
	return t
}()

func msValue(ms int64) []string {
	if ms >= 0 && ms < int64(len(smallMs)) {
		return smallMs[ms]
	}
	return []string{strconv.FormatInt(ms, 10)}
}
